"""The job ids Conveyor makes: 96 random bits each, in 16 URL-safe characters.

Short, because a store keeps every id in more than one place (a backlog of a million jobs pays
for each byte twice over), and random enough that ids never collide in practice (a collision
would make a new job look like a duplicate of an old one). The bits come from the OS's random
source, as :mod:`secrets` reads it, so an id cannot be guessed from others.

A single enqueue needs one id, and reading that source for it (a system call, and the
encoding of 12 bytes) cost ~1.3 µs of a coalesced enqueue's ~34 µs of CPU. So one read serves
:data:`POOL_IDS` ids, kept as text and handed out in order; a bulk enqueue of more reads its
own. A forked child forgets the pool it inherited (its parent hands out the same ids), and
every id is taken under a lock, so two threads never get the same one.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
from typing import Final

ID_CHARS: Final = 16  # 12 random bytes in URL-safe base64
POOL_IDS: Final = 256


def _encoded(count: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(12 * count)).decode()


def _no_leading_dash(job_id: str) -> str:
    # On a command line (``conveyor jobs show <id>``) an id that begins with "-" reads as an
    # option; "_" instead leaves ~95.98 random bits.
    return "_" + job_id[1:] if job_id.startswith("-") else job_id


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._text = ""
        self._at = 0

    def take(self, count: int) -> str:
        """The text of ``count`` ids (``count * ID_CHARS`` characters), never handed out before."""
        if count > POOL_IDS:
            return _encoded(count)
        wanted = count * ID_CHARS
        with self._lock:
            if self._at + wanted > len(self._text):
                self._text, self._at = _encoded(POOL_IDS), 0
            text = self._text[self._at : self._at + wanted]
            self._at += wanted
            return text

    def forget(self) -> None:
        """In a forked child: drop what the parent will hand out too (and a lock that a thread
        of the parent may have held at the fork)."""
        self._lock = threading.Lock()
        self._text, self._at = "", 0


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.forget)


def new_job_ids(count: int) -> list[str]:
    """``count`` random job ids, none beginning with ``-``."""
    text = _POOL.take(count)
    return [_no_leading_dash(text[i : i + ID_CHARS]) for i in range(0, ID_CHARS * count, ID_CHARS)]
