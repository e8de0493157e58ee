"""Webhooks: one job per delivery of one event to one registered endpoint."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel

from conveyor import Exponential, job


class DeliverWebhook(BaseModel):
    delivery_id: UUID


class EndpointGone(Exception):
    """The endpoint answered 410 Gone: its owner removed it, so retrying is pointless."""


deliver_webhook = job(
    "shop.webhook.deliver",
    DeliverWebhook,
    result=int,  # the HTTP status the endpoint answered
    queue="webhooks",
    attempts=6,
    backoff=Exponential(base=1.0, cap=3600, jitter=True),
    timeout=15,
    permanent=(EndpointGone,),  # failed at once, no retry: the dead-letter set shows it
)
