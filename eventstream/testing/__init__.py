"""Helpers for testing code that uses eventstream: an embedded cluster, a recording handler, and
the types of the pytest fixtures (the plugin itself is ``eventstream.testing.pytest_plugin``,
loaded by pytest through its entry point; importing this package does not need pytest).

::

    from eventstream.testing import EventRecorder, TopicFactory

    def test_it(eventstream_topic: TopicFactory, eventstream_recorder: EventRecorder[Ev]) -> None:
        ...
"""

from eventstream.testing.embedded import EmbeddedCluster
from eventstream.testing.factory import TopicFactory
from eventstream.testing.recorder import EventRecorder

__all__ = ["EmbeddedCluster", "EventRecorder", "TopicFactory"]
