"""Helpers for testing code that uses eventstream: an embedded cluster and pytest fixtures."""

from eventstream.testing.embedded import EmbeddedCluster
from eventstream.testing.recorder import EventRecorder

__all__ = ["EmbeddedCluster", "EventRecorder"]
