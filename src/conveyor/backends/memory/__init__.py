"""The in-memory reference driver."""

from conveyor.backends.memory.driver import MemoryDriver, MemoryStore

__all__ = ["MemoryDriver", "MemoryStore"]
