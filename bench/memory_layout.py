"""Where a queued job's Redis memory goes: the job layout and variants of it, written directly.

On a private redis-server (tests/servers/redis_server.py, never 6379), writes ``--n`` copies of
the benchmark's small job (the fields job_insert_many stores for it: name, payload, state, max
attempts, run time, seq) in each layout below and prints (used_memory after - before) / n:

* the current one: a hash per job under ``{conveyor:<queue>}:j:<16-character id>`` and its
  ready-list entry; then the hash alone, and the hash with fewer bytes in its name or fields,
  down to a hash holding only the name and the seq (the floor of any layout with a key per job);
* for comparison, layouts without a key per queued job: 256 jobs per hash (id -> a packed
  record; listpack-encoded while a record is at most 64 bytes) plus the ready entry, and the
  whole job in the list entry (as huey stores one).

    .venv/bin/python bench/memory_layout.py [--n 100000]
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.servers.redis_server import RedisServer

TAG = "{conveyor:bench}"
FIELDS = {
    "n": "bench.noop", "d": '{"ts":0.0}', "s": "queued", "m": "3",
    "r": "1796443453481401", "q": "1796443453481598",
}  # fmt: skip
PACKED = "bench.noop|" + FIELDS["d"] + "|3|" + FIELDS["r"] + "|" + FIELDS["q"]


def ids(n: int, length: int) -> list[str]:
    text = base64.urlsafe_b64encode(secrets.token_bytes(n * length)).decode()
    return [text[i * length : (i + 1) * length] for i in range(n)]


def ready(r: redis.Redis, entries: list[str]) -> None:
    for k in range(0, len(entries), 1000):
        r.rpush(TAG + ":ready", *entries[k : k + 1000])


def hashes(
    prefix: str, id_length: int, fields: dict[str, str], with_ready: bool
) -> Callable[[redis.Redis, int], None]:
    def write(r: redis.Redis, n: int) -> None:
        every = ids(n, id_length)
        pipe = r.pipeline(transaction=False)
        for k, job_id in enumerate(every, 1):
            pipe.hset(prefix + job_id, mapping=fields)
            if k % 1000 == 0:
                pipe.execute()
        pipe.execute()
        if with_ready:
            ready(r, every)

    return write


def buckets(r: redis.Redis, n: int) -> None:
    every = ids(n, 16)
    pipe = r.pipeline(transaction=False)
    for k in range(0, n, 256):
        pipe.hset(f"{TAG}:b:{k // 256}", mapping=dict.fromkeys(every[k : k + 256], PACKED))
    pipe.execute()
    ready(r, every)


def in_list(r: redis.Redis, n: int) -> None:
    ready(r, ["x" * 16 + "|" + PACKED] * n)


def without(*names: str) -> dict[str, str]:
    return {k: v for k, v in FIELDS.items() if k not in names}


ONLY_N_Q = without("d", "s", "m", "r")
LAYOUTS: list[tuple[str, Callable[[redis.Redis, int], None]]] = [
    ("current: hash {tag}:j:<id16> + ready-list entry", hashes(TAG + ":j:", 16, FIELDS, True)),
    ("  the hash alone", hashes(TAG + ":j:", 16, FIELDS, False)),
    ("  key {tag}:<id16> (33 characters, not 35)", hashes(TAG + ":", 16, FIELDS, False)),
    ("  key of 28 characters ({tag}:<id11>)", hashes(TAG + ":", 11, FIELDS, False)),
    ("  without s=queued", hashes(TAG + ":j:", 16, without("s"), False)),
    ("  without s and m", hashes(TAG + ":j:", 16, without("s", "m"), False)),
    ("  only n and q: the floor of a key per job", hashes(TAG + ":j:", 16, ONLY_N_Q, False)),
    ("no key per job: 256 jobs a hash + ready-list entry", buckets),
    ("no key per job: the whole job in the list entry", in_list),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        print(f"redis {r.info('server')['redis_version']}, {args.n:,} jobs per layout")
        for label, write in LAYOUTS:
            r.flushdb()
            before = r.info("memory")["used_memory"]
            write(r, args.n)
            after = r.info("memory")["used_memory"]
            print(f"  {label:55} {(after - before) / args.n:6.1f} bytes/job")


if __name__ == "__main__":
    main()
