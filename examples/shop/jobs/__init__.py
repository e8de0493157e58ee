"""The shop's job definitions: payload models, names, queues and retry policies.

The API imports this package to enqueue and the worker to run; it imports no handler code, so
the API never loads what the worker needs (an SMTP client, an HTTP client). Payloads carry ids,
not data: a handler reads the row when it runs, so it sends what is true then.
"""

from examples.shop.jobs.audit import WriteAudit, write_audit
from examples.shop.jobs.emails import (
    SendInvite,
    SendOrderConfirmation,
    SendPasswordReset,
    send_invite,
    send_order_confirmation,
    send_password_reset,
)
from examples.shop.jobs.sessions import CleanExpiredSessions, clean_expired_sessions
from examples.shop.jobs.webhooks import DeliverWebhook, EndpointGone, deliver_webhook

__all__ = [
    "CleanExpiredSessions",
    "DeliverWebhook",
    "EndpointGone",
    "SendInvite",
    "SendOrderConfirmation",
    "SendPasswordReset",
    "WriteAudit",
    "clean_expired_sessions",
    "deliver_webhook",
    "send_invite",
    "send_order_confirmation",
    "send_password_reset",
    "write_audit",
]
