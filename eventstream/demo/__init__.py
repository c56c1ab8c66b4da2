"""The ``eventstream demo`` command: cache invalidation across service instances."""
