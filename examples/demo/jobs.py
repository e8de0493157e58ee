"""Job definitions of the demo shop: imported by the producer (API side) and by the worker.

Nothing here imports handler code, so a web process can enqueue without loading the worker.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field, HttpUrl

from conveyor import Exponential, Fixed, job


class SendInvite(BaseModel):
    invitation_id: UUID
    to_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    inviter: str


class PasswordReset(BaseModel):
    user_id: int
    to_email: str


class OrderConfirmation(BaseModel):
    order_id: int
    to_email: str
    total_cents: int = Field(ge=0)


class WebhookDelivery(BaseModel):
    endpoint: HttpUrl
    event: str
    body: dict[str, str]
    # The fake endpoint answers 503 this many times before it accepts the delivery.
    flaky_times: int = 0


class AuditLogWrite(BaseModel):
    actor: str
    action: str
    subject: str


fast_backoff = Exponential(base=0.1, cap=0.5, jitter=True)

send_invite = job("email.send_invite", SendInvite, result=str, backoff=fast_backoff)
password_reset = job("email.password_reset", PasswordReset, result=str, backoff=fast_backoff)
order_confirmation = job(
    "email.order_confirmation", OrderConfirmation, result=str, priority=-5, backoff=fast_backoff
)
deliver_webhook = job(
    "webhook.deliver",
    WebhookDelivery,
    result=int,
    queue="webhooks",
    attempts=4,
    backoff=fast_backoff,
    timeout=5,
)
write_audit_log = job("audit.write", AuditLogWrite, queue="audit", backoff=Fixed(0.05))
