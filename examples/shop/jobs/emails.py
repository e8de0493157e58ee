"""Emails: each job sends one message about one row, and the row records that it was sent."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

from conveyor import Exponential, job

# An SMTP server that is down for a while is worth waiting for: 1 s, 2 s, 4 s ... 10 minutes.
EMAIL_BACKOFF = Exponential(base=1.0, cap=600, jitter=True)


class SendInvite(BaseModel):
    invitation_id: UUID


class SendPasswordReset(BaseModel):
    reset_id: UUID


class SendOrderConfirmation(BaseModel):
    order_id: int


send_invite = job(
    "shop.email.invite",
    SendInvite,
    result=str,
    queue="emails",
    attempts=8,
    backoff=EMAIL_BACKOFF,
    timeout=30,
)
send_password_reset = job(
    "shop.email.password_reset",
    SendPasswordReset,
    result=str,
    queue="emails",
    priority=-10,  # someone is waiting at the login page: before invitations
    attempts=8,
    backoff=EMAIL_BACKOFF,
    timeout=30,
)
send_order_confirmation = job(
    "shop.email.order_confirmation",
    SendOrderConfirmation,
    result=str,
    queue="emails",
    attempts=8,
    backoff=EMAIL_BACKOFF,
    timeout=30,
)
