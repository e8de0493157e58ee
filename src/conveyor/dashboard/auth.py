"""Who may use the dashboard, and as what.

Two roles: ``full`` (every page and action) and ``read`` (pages only; a POST is 403). A request
proves its role with, in this order: HTTP basic auth (``users`` / ``read_users``), a bearer token
(``Authorization: Bearer`` or ``?token=``, which also logs the browser in), or the session
cookie a login set. Without any credentials configured the dashboard serves loopback clients
only, as ``full`` (whoever can reach 127.0.0.1 can run the CLI anyway), and not a request a
proxy forwarded (see :class:`conveyor.dashboard.app.Guard`).

The session cookie is ``<who>|<role>|<session id>|<expiry>|<mac>``: an HMAC-SHA256 of the rest
under a key derived from the app's secret *and* every configured credential, so changing a
token or a password ends the sessions it opened. It is HttpOnly and SameSite=Strict, so other
sites can neither read it nor make the browser send it with their requests. Every secret is
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from conveyor._errors import InvalidArgument

COOKIE = "conveyor_dashboard"
SESSION_SECONDS = 12 * 3600
_MAX_COOKIE = 1024  # a longer cookie is not one of ours: not even parsed


class Role(enum.StrEnum):
    FULL = "full"
    READ = "read"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: a basic-auth user name, ``token`` / ``read-token``, or ``local``."""

    who: str
    role: Role
    session: str  # the session id the CSRF token is bound to


def _no_users() -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class DashboardAuth:
    """The dashboard's credentials.

    ``token`` / ``read_token``: bearer tokens of the full and the read-only role (open
    ``/?token=...`` once in a browser: it sets a session cookie). ``users`` / ``read_users``:
    HTTP basic-auth user names and passwords of each role. ``secret`` signs session cookies
    (default: random per process, so sessions end when it restarts; give one to keep them
    across restarts or share them between processes).
    """

    token: str | None = None
    read_token: str | None = None
    users: Mapping[str, str] = field(default_factory=_no_users)
    read_users: Mapping[str, str] = field(default_factory=_no_users)
    secret: bytes | None = None

    def __post_init__(self) -> None:
        for what, value in (("token", self.token), ("read_token", self.read_token)):
            if value is not None and len(value) < 8:
                raise InvalidArgument(f"the dashboard's {what} must be at least 8 characters")
        if self.token is not None and self.token == self.read_token:
            raise InvalidArgument("the dashboard's token and read_token must differ")
        for what, users in (("users", self.users), ("read_users", self.read_users)):
            for name, password in users.items():
                if not name or ":" in name or not password:
                    raise InvalidArgument(
                        f"dashboard {what}: {name!r} needs a non-empty name without ':' and a "
                        "non-empty password"
                    )
        both = set(self.users) & set(self.read_users)
        if both:
            raise InvalidArgument(f"dashboard user {sorted(both)[0]!r} is in users and read_users")
        if self.secret is not None and len(self.secret) < 16:
            raise InvalidArgument("the dashboard's secret must be at least 16 bytes")

    @property
    def configured(self) -> bool:
        return bool(self.token or self.read_token or self.users or self.read_users)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Authenticator:
    """Checks credentials and signs and reads session cookies for one dashboard app."""

    def __init__(self, auth: DashboardAuth | None) -> None:
        self.auth = auth or DashboardAuth()
        material = hashlib.sha256()
        for part in (
            self.auth.token or "",
            self.auth.read_token or "",
            *sorted(f"{u}:{p}" for u, p in self.auth.users.items()),
            "|read|",
            *sorted(f"{u}:{p}" for u, p in self.auth.read_users.items()),
        ):
            material.update(part.encode() + b"\x00")
        secret = self.auth.secret or secrets.token_bytes(32)
        self._key = hmac.new(secret, material.digest(), hashlib.sha256).digest()

    @property
    def uses_basic(self) -> bool:
        return bool(self.auth.users or self.auth.read_users)

    def basic(self, header: str) -> tuple[str, Role] | None:
        """The user and role of an ``Authorization: Basic`` value, None when it is wrong."""
        try:
            text = base64.b64decode(header, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = text.partition(":")
        if not sep:
            return None
        found: tuple[str, Role] | None = None
        # Every configured password is compared, so timing says nothing about which exist.
        for users, role in ((self.auth.users, Role.FULL), (self.auth.read_users, Role.READ)):
            for user, expected in users.items():
                if _same(name, user) & _same(password, expected):
                    found = (user, role)
        return found

    def bearer(self, token: str) -> tuple[str, Role] | None:
        found: tuple[str, Role] | None = None
        if self.auth.token is not None and _same(token, self.auth.token):
            found = ("token", Role.FULL)
        if self.auth.read_token is not None and _same(token, self.auth.read_token):
            found = ("read-token", Role.READ)
        return found

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, who: str, role: Role, session: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{_quote(who)}|{role.value}|{session}|{expires}"
        return f"{body}|{self._mac(body)}"

    def read_cookie(self, value: str | None, *, now: float | None = None) -> Identity | None:
        if not value or len(value) > _MAX_COOKIE:
            return None
        body, sep, mac = value.rpartition("|")
        if not sep or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            return None
        parts = body.split("|")
        if len(parts) != 4:
            return None
        who, role, session, expires = parts
        try:
            if int(expires) < (time.time() if now is None else now):
                return None
            return Identity(_unquote(who), Role(role), session)
        except ValueError:
            return None

    def csrf_token(self, session: str) -> str:
        """The CSRF token of a session: forms carry it, every POST must send it back."""
        return self._mac(f"csrf|{session}")

    def check_csrf(self, session: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(
            (given or "").encode(), self.csrf_token(session).encode()
        )


def new_session() -> str:
    return secrets.token_urlsafe(18)


def _quote(text: str) -> str:
    # A user name may hold '|': the cookie's separator is kept out of its fields.
    return base64.urlsafe_b64encode(text.encode()).decode()


def _unquote(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text.encode()).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("bad user name") from exc
