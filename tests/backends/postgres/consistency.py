"""Structural checks of a PostgreSQL store: what must hold between a job's columns whatever
happened to the processes that wrote them."""

from __future__ import annotations

import psycopg

from conveyor.backends.postgres._url import parse_url

# (what is wrong, a query counting the rows it is wrong for); {s} is the quoted schema.
CHECKS = (
    (
        "active jobs without a lease",
        "SELECT count(*) FROM {s}.conveyor_job WHERE state = 'active' AND "
        "(lease_token IS NULL OR lease_expires_at IS NULL OR worker_id IS NULL)",
    ),
    (
        "jobs that are not active but hold a lease deadline or a worker",
        "SELECT count(*) FROM {s}.conveyor_job WHERE state <> 'active' AND "
        "(lease_expires_at IS NOT NULL OR worker_id IS NOT NULL)",
    ),
    (
        "finished jobs without a finish time",
        "SELECT count(*) FROM {s}.conveyor_job WHERE "
        "state IN ('completed', 'failed', 'cancelled') AND finished_at IS NULL",
    ),
    (
        "jobs sharing a sequence number",
        "SELECT count(*) FROM (SELECT seq FROM {s}.conveyor_job GROUP BY seq "
        "HAVING count(*) > 1) d",
    ),
    (
        "jobs of a queue that is not registered",
        "SELECT count(*) FROM {s}.conveyor_job j WHERE NOT EXISTS "
        "(SELECT 1 FROM {s}.conveyor_queue q WHERE q.name = j.queue)",
    ),
)


def problems(url: str) -> list[str]:
    parsed = parse_url(url)
    found: list[str] = []
    with psycopg.connect(parsed.conninfo, autocommit=True) as conn:
        for what, query in CHECKS:
            row = conn.execute(query.format(s=parsed.quoted_schema).encode()).fetchone()
            count = 0 if row is None else int(row[0])
            if count:
                found.append(f"{count} {what}")
    return found
