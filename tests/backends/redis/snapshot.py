"""Everything a test prefix holds in Redis, to prove that a call wrote nothing."""

from __future__ import annotations

from typing import Any

import redis


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key of ``prefix`` (queue keys ``{prefix:<queue>}:...`` and shared ones
    ``{prefix}:...``) with its type and full contents."""
    found: dict[bytes, Any] = {}
    for key in client.scan_iter(match="{" + prefix + "[:}]*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            value: Any = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        else:
            value = client.get(key)
        found[key] = (kind, value)
    return found
