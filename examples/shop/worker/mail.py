"""Sending email over SMTP (the standard library's client, in a thread)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage


class Mailer:
    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host = host
        self.port = port
        self.sender = sender

    def message(self, *, to: str, subject: str, body: str, message_id: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        # A stable Message-ID: if a send is repeated after a crash, mail clients show it once.
        msg["Message-ID"] = f"<{message_id}@shop.example>"
        msg.set_content(body)
        return msg

    async def send(self, msg: EmailMessage) -> None:
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.send_message(msg)
