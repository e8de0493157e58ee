"""Running a script with and without its early path, for tests that compare the two.

Some scripts answer their most frequent call in a block included first (``insert_one.lua``,
``fetch_early.lua``), before they define their helpers; the general code below handles every
call. A comparison runs the same calls through each source, each on an empty database after
the same set-up, and requires the same replies and the same stored keys, hash fields in their
stored order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import redis

from conveyor.backends.redis import _lua

Setup = Callable[[redis.Redis], object]
Call = tuple[Sequence[str], Sequence[Any]]  # KEYS, ARGV
# What a raised error names that depends on the script's source: its hash and line.
_WHERE = re.compile(r" script: [0-9a-f]{40}, on @user_script:\d+\.$")


def without(script: _lua.Script, include: str) -> str:
    """``script``'s source without the early block ``include``: its general code alone."""
    source = script.source.replace(_lua._splice(f"--!include {include}\n"), "", 1)
    assert len(source) < len(script.source), f"{script.name} does not include {include}"
    return source


def only(script: _lua.Script, include: str) -> str:
    """``script``'s source up to its early block ``include``, then a return of 'general':
    what the block answers, and the reply 'general' where it leaves the call to the rest."""
    text = (_lua.LUA_DIR / f"{script.name}.lua").read_text()
    line = f"--!include {include}\n"
    head = text[: text.index(line) + len(line)]
    return _lua._splice(head) + "\nreturn 'general'\n"


def state(client: redis.Redis) -> list[tuple[bytes, bytes, Any]]:
    """Every key with its type and contents, hash fields in their stored order."""
    out: list[tuple[bytes, bytes, Any]] = []
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        if kind == b"hash":
            value: Any = list(client.hgetall(key).items())
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        out.append((key, kind, value))
    return out


def run(client: redis.Redis, source: str, calls: Sequence[Call], setup: Setup) -> Any:
    """The replies to ``calls`` of ``source`` (an error as ('error', its text without where
    in the script it was raised)) on an empty database after ``setup``, and the state left."""
    client.flushdb()
    setup(client)
    replies: list[Any] = []
    for keys, args in calls:
        try:
            replies.append(client.eval(source, len(keys), *keys, *args))
        except redis.ResponseError as error:
            replies.append(("error", _WHERE.sub("", str(error))))
    return replies, state(client)
