"""Request and response bodies of the API."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field

EMAIL = r"^[^@\s]+@[^@\s]+$"


class NewUser(BaseModel):
    email: str = Field(pattern=EMAIL)


class CreatedUser(BaseModel):
    id: int


class NewLoginSession(BaseModel):
    email: str = Field(pattern=EMAIL)
    ttl_seconds: int  # negative: already expired (the example uses it to feed the clean-up)


class CreatedLoginSession(BaseModel):
    token: str


class NewInvitation(BaseModel):
    email: str = Field(pattern=EMAIL)
    inviter: str = Field(min_length=1, max_length=100)


class CreatedInvitation(BaseModel):
    id: UUID
    job_id: str


class NewPasswordReset(BaseModel):
    email: str = Field(pattern=EMAIL)


class CreatedPasswordReset(BaseModel):
    id: UUID
    job_id: str


class NewOrder(BaseModel):
    email: str = Field(pattern=EMAIL)
    total_cents: int = Field(ge=0)


class CreatedOrder(BaseModel):
    id: int
    job_ids: list[str]


class NewWebhookEndpoint(BaseModel):
    url: str = Field(pattern=r"^https?://")


class CreatedWebhookEndpoint(BaseModel):
    id: int
    secret: str  # shown once: the receiver verifies signatures with it


class AuditRow(BaseModel):
    actor: str
    action: str
    subject: str
