"""Counting, timing and reporting what clients do: metrics, statistics, instrumentation."""
