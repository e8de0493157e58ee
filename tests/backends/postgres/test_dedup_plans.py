"""The plans of the PostgreSQL dedup statements: with many keys, reading a key's holder costs
an index lookup, and deleting a job finds its record by index (the cascade of its foreign key),
so neither grows with the number of keys or jobs."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from conveyor.backends.postgres import PostgresDriver
from conveyor.backends.postgres._url import parse_url
from conveyor.drivers.records import Dedup, DedupMode, NewJob
from tests.conftest import drop_test_schema, postgres_test_url


@pytest.fixture
def pg_url(postgres_base_url: str) -> Iterator[str]:
    url = postgres_test_url(postgres_base_url)
    yield url
    drop_test_schema(url)


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresDriver]:
    driver = PostgresDriver(pg_url)
    await driver.open()
    try:
        yield driver
    finally:
        await driver.close()


def explain(url: str, sql: bytes, args: dict[str, Any]) -> str:
    with psycopg.connect(url.partition("?")[0]) as conn:
        return "\n".join(row[0] for row in conn.execute(b"EXPLAIN " + sql, args).fetchall())


async def test_dedup_statements_read_indexes(pg: PostgresDriver, pg_url: str) -> None:
    for start in range(0, 3000, 1000):
        await pg.job_insert_many(
            [
                dataclasses.replace(
                    NewJob(f"j{n}", "default", "n", b"{}"),
                    dedup=Dedup(DedupMode.UNTIL_FINISHED, f"key{n}"),
                )
                for n in range(start, start + 1000)
            ]
        )
    schema = parse_url(pg_url).quoted_schema
    with psycopg.connect(pg_url.partition("?")[0], autocommit=True) as conn:
        conn.execute(f"ANALYZE {schema}.conveyor_dedup".encode())
        conn.execute(f"ANALYZE {schema}.conveyor_job".encode())
    queries = pg._q  # pyright: ignore[reportPrivateUsage]
    holder = explain(
        pg_url,
        queries["job_insert_many__dedup_holder"],
        {"queue": "default", "key": "key7", "now": None},
    )
    assert "conveyor_dedup_pkey" in holder and "Seq Scan" not in holder, holder
    # What the foreign key's cascade runs for each deleted job.
    cascade = explain(
        pg_url, f"DELETE FROM {schema}.conveyor_dedup WHERE job_id = %(id)s".encode(), {"id": "j7"}
    )
    assert "conveyor_dedup_job_idx" in cascade and "Seq Scan" not in cascade, cascade
