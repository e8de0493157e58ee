"""The plugin's fixtures for these tests: a conftest below the top level cannot name plugins
in ``pytest_plugins``, so it imports them (which pytest also supports)."""

from conveyor.testing import conveyor_clock, conveyor_queue, conveyor_sync_queue

__all__ = ["conveyor_clock", "conveyor_queue", "conveyor_sync_queue"]
