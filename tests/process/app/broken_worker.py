"""A worker module that fails as it is imported: every process started on it dies at once."""

from __future__ import annotations

raise RuntimeError("this module is broken on purpose")
