"""Helpers for testing code that uses eventstream: an embedded cluster and pytest fixtures."""

from eventstream.testing.embedded import EmbeddedCluster

__all__ = ["EmbeddedCluster"]
