"""The shop's tables, shared by the API (which writes rows) and the worker (which reads them
fresh when a job runs, and marks what it did). Times are naive UTC."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, ForeignKey, String, Uuid
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from examples.shop.settings import sqlalchemy_target


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "shop_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)


class LoginSession(Base):
    __tablename__ = "shop_login_session"
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("shop_user.id"))
    expires_at: Mapped[datetime]


class Invitation(Base):
    __tablename__ = "shop_invitation"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # one invitation per address
    inviter: Mapped[str]
    email_sent_at: Mapped[datetime | None]  # the idempotency flag of its email job


class PasswordReset(Base):
    __tablename__ = "shop_password_reset"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("shop_user.id"))
    token: Mapped[str] = mapped_column(String(64))
    email_sent_at: Mapped[datetime | None]


class Order(Base):
    __tablename__ = "shop_order"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    total_cents: Mapped[int]
    confirmation_sent_at: Mapped[datetime | None]


class WebhookEndpoint(Base):
    __tablename__ = "shop_webhook_endpoint"
    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    secret: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(default=True)  # false once it answered 410 Gone


class WebhookDelivery(Base):
    __tablename__ = "shop_webhook_delivery"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("shop_webhook_endpoint.id"))
    event: Mapped[str]
    body: Mapped[dict[str, object]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(default="pending")  # pending, delivered, gone
    delivered_at: Mapped[datetime | None]


class AuditEntry(Base):
    __tablename__ = "shop_audit_entry"
    # The id the API chose when it enqueued the write: a retried job finds its row written.
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    actor: Mapped[str]
    action: Mapped[str]
    subject: Mapped[str]
    at: Mapped[datetime]


class Database:
    """An async engine on the shop's database and the sessions made from it."""

    def __init__(self, database_url: str) -> None:
        target = sqlalchemy_target(database_url)
        self.engine: AsyncEngine = create_async_engine(target.url, connect_args=target.connect_args)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_tables(self) -> None:
        """Stands in for the migrations (Alembic) a real service runs before it starts."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
