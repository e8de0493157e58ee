"""An outbox in the application's own database (PostgreSQL or SQLite) for jobs that run on Redis.

``Queue.from_url("redis://...", outbox="postgresql://...")`` writes ``enqueue(...,
connection=conn)`` jobs into the ``conveyor_outbox`` table through ``conn``, inside the
application's transaction; a :class:`Relay` (``conveyor relay``, or ``conveyor worker
--relay-from``) moves the committed ones to Redis under their job ids and deletes them. A job
reaches Redis if and only if the transaction that wrote it commits, once, whenever the relay is
killed.
"""

from conveyor.outbox._outbox import (
    Outbox,
    PostgresOutbox,
    SQLiteOutbox,
    outbox_for_url,
)
from conveyor.outbox._sources import Status
from conveyor.outbox.relay import BatchReport, Relay, RelayStats

__all__ = [
    "BatchReport",
    "Outbox",
    "PostgresOutbox",
    "Relay",
    "RelayStats",
    "SQLiteOutbox",
    "Status",
    "outbox_for_url",
]
