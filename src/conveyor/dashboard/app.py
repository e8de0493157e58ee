"""``conveyor_dashboard(queue, auth=...)``: the dashboard as an ASGI app.

Mount it in your own app (``app.mount("/jobs", conveyor_dashboard(queue, auth=...))``) or run
``conveyor dashboard``. Every request goes through :class:`Guard` first: it decides who is
asking (see :mod:`conveyor.dashboard.auth`), refuses those who may not, sets the session cookie
and adds the security headers to every response, errors included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Message, Receive, Scope, Send

from conveyor._queue import Queue
from conveyor.dashboard import actions, pages
from conveyor.dashboard.auth import (
    COOKIE,
    SESSION_SECONDS,
    Authenticator,
    DashboardAuth,
    Identity,
    Role,
    is_loopback,
    new_session,
)
from conveyor.dashboard.cache import OverviewCache
from conveyor.dashboard.render import HERE, environment

log = logging.getLogger("conveyor.dashboard")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
DEFAULT_RETRY_CAP = 1000


def conveyor_dashboard(
    queue: Queue,
    *,
    auth: DashboardAuth | None = None,
    title: str = "Conveyor",
    refresh_seconds: float = 3.0,
    retry_cap: int = DEFAULT_RETRY_CAP,
    page_size: int = 50,
) -> Guard:
    """The dashboard of ``queue`` (every queue of its backend) as an ASGI app.

    Without ``auth`` it serves only clients on a loopback address (anyone else gets 401).
    ``refresh_seconds``: how often the overview's counts are read in the background (no
    request counts jobs itself). ``retry_cap``: at most this many failed jobs are retried per
    click of "retry all failed". ``page_size``: jobs per page of a queue's list.
    """
    if not 1 <= retry_cap <= 100_000:
        raise ValueError(f"retry_cap must be 1-100000, got {retry_cap!r}")
    if not 1 <= page_size <= 500:
        raise ValueError(f"page_size must be 1-500, got {page_size!r}")
    cache = OverviewCache(queue, interval=refresh_seconds)
    authenticator = Authenticator(auth)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncGenerator[None]:
        # Only when served on its own: a mounted app gets no lifespan events, and its task
        # ends with the server's event loop.
        yield
        await cache.close()

    app = Starlette(
        routes=[
            Route("/", pages.overview, name="overview"),
            Route("/queues/{name}", pages.queue_page, name="queue"),
            Route("/jobs/{job_id:path}", pages.job_page, name="job"),
            Route("/workers", pages.workers_page, name="workers"),
            Route("/schedules", pages.schedules_page, name="schedules"),
            Route("/actions/retry", actions.retry, methods=["POST"], name="retry"),
            Route("/actions/cancel", actions.cancel, methods=["POST"], name="cancel"),
            Route("/actions/delete", actions.delete, methods=["POST"], name="delete"),
            Route(
                "/actions/retry-failed",
                actions.retry_failed,
                methods=["POST"],
                name="retry_failed",
            ),
            Route("/actions/pause", actions.pause, methods=["POST"], name="pause"),
            Route("/actions/resume", actions.resume, methods=["POST"], name="resume"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.queue = queue
    app.state.cache = cache
    app.state.auth = authenticator
    app.state.title = title
    app.state.retry_cap = retry_cap
    app.state.page_size = page_size
    app.state.templates = Jinja2Templates(env=environment())
    # Outside Starlette's own error handling, so its 500 answers get the headers too.
    return Guard(app, authenticator=authenticator, cache=cache)


# Headers a reverse proxy adds to what it forwards.
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class Guard:
    """Authenticates every request, refuses what its role may not do, keeps the session cookie
    and adds the security headers (pure ASGI, so streamed and error responses get them too)."""

    def __init__(self, app: Starlette, *, authenticator: Authenticator, cache: OverviewCache):
        self.app = app
        self.auth = authenticator
        self.cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the dashboard has no websockets
            await send({"type": "websocket.close", "code": 1008})
            return
        self.cache.start()  # a mounted app's only chance to start its background task
        request = Request(scope)
        set_cookie: str | None = None
        outcome = self.identify(request)
        if isinstance(outcome, Response):
            await _secured(outcome, None)(scope, receive, send)
            return
        identity, fresh = outcome
        if fresh:
            set_cookie = self.cookie_header(scope, identity)
        token = request.query_params.get("token")
        if token is not None and request.method in ("GET", "HEAD"):
            # Logged in by ?token=: go on to the same page without the token in the address
            # (it would stay in the history and in logs).
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            query = urlencode(kept)
            target = scope["path"] + (f"?{query}" if query else "")
            await _secured(RedirectResponse(target, 303), set_cookie)(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD") and identity.role is not Role.FULL:
            refused = PlainTextResponse("403: this login may only read", 403)
            await _secured(refused, set_cookie)(scope, receive, send)
            return
        scope.setdefault("state", {})["identity"] = identity
        started = time.perf_counter()

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                _add_security(headers, scope)
                # How long the page took to make, for the browser's tools and the benchmark.
                took = (time.perf_counter() - started) * 1000
                headers["server-timing"] = f"app;dur={took:.1f}"
                if set_cookie is not None:
                    headers.append("set-cookie", set_cookie)
            await send(message)

        await self.app(scope, receive, secured_send)

    def identify(self, request: Request) -> tuple[Identity, bool] | Response:
        """The identity of the request and whether it needs a new cookie, or the refusal."""
        auth = self.auth
        cookie = auth.read_cookie(request.cookies.get(COOKIE))
        claimed: tuple[str, Role] | None = None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = request.query_params.get("token")
        if not auth.auth.configured:
            # Decided by the address alone: not even a session cookie serves anyone else.
            client = request.client.host if request.client else None
            if not is_loopback(client):
                return self.refuse(
                    request,
                    "this dashboard has no credentials configured, so it serves loopback "
                    "clients only",
                )
            if any(name in request.headers for name in _PROXY_HEADERS):
                # A reverse proxy on the same host makes every client look local: a request
                # it forwarded is not known to come from this machine.
                return self.refuse(
                    request,
                    "this dashboard has no credentials configured, and a request forwarded by "
                    "a proxy is not known to come from this machine: configure credentials",
                )
            claimed = ("local", Role.FULL)
        elif header:
            if scheme.lower() == "basic" and auth.uses_basic:
                claimed = auth.basic(value.strip())
            elif scheme.lower() == "bearer":
                claimed = auth.bearer(value.strip())
            if claimed is None:
                return self.refuse(request, "the credentials are not valid")
        elif token is not None:
            claimed = auth.bearer(token)
            if claimed is None:
                return self.refuse(request, "the token is not valid")
        elif cookie is not None:
            return cookie, False
        else:
            return self.refuse(request, "log in first")
        who, role = claimed
        if cookie is not None and (cookie.who, cookie.role) == (who, role):
            return cookie, False
        return Identity(who, role, new_session()), True

    def refuse(self, request: Request, why: str) -> Response:
        headers: dict[str, str] = {}
        if self.auth.uses_basic:
            headers["www-authenticate"] = 'Basic realm="Conveyor dashboard", charset="UTF-8"'
        how = (
            "Open this page with ?token=<token> once, send 'Authorization: Bearer <token>', or "
            "log in with the user name and password you were given."
            if self.auth.auth.configured
            else "Open it from the machine it runs on, or start it with credentials."
        )
        return PlainTextResponse(f"401 Unauthorized: {why}.\n{how}\n", 401, headers=headers)

    def cookie_header(self, scope: Scope, identity: Identity) -> str:
        path = scope.get("root_path") or "/"
        value = self.auth.cookie_for(identity.who, identity.role, identity.session)
        parts = [
            f"{COOKIE}={value}",
            f"Path={path}",
            f"Max-Age={SESSION_SECONDS}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if scope.get("scheme") == "https":
            parts.append("Secure")
        return "; ".join(parts)


def _add_security(headers: MutableHeaders, scope: Scope) -> None:
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    path = str(scope.get("path", ""))[len(str(scope.get("root_path", ""))) :]
    if not path.startswith("/static/"):
        headers["cache-control"] = "no-store"


def _secured(response: Response, set_cookie: str | None) -> Any:
    """``response`` with the security headers (and the cookie) of every answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers["cache-control"] = "no-store"
    if set_cookie is not None:
        response.headers.append("set-cookie", set_cookie)
    return response
