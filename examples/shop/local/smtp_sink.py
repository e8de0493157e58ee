"""A real SMTP server (aiosmtpd) that keeps every message it receives, for the example to show
and the tests to check. Production points the worker at a real mail relay instead."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True, slots=True)
class ReceivedEmail:
    to: str
    subject: str
    message_id: str


class _Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.emails: list[ReceivedEmail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.original_content or envelope.content or b""
        message = message_from_bytes(bytes(content), policy=default)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.emails.append(
                    ReceivedEmail(rcpt, str(message["Subject"]), str(message["Message-ID"]))
                )
        return "250 Message accepted for delivery"


class SmtpSink:
    """``with SmtpSink() as sink:`` serves SMTP on 127.0.0.1:``sink.port`` in a thread."""

    def __init__(self, port: int = 0) -> None:
        self._collector = _Collector()
        # aiosmtpd checks its server by connecting to the port it was given, so not 0.
        self.port = port or _free_port()
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def emails(self) -> list[ReceivedEmail]:
        with self._collector.lock:
            return list(self._collector.emails)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
