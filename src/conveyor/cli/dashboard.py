"""``conveyor dashboard``: serve the web dashboard (needs ``conveyor[dashboard]``)."""

from __future__ import annotations

import ipaddress
import os

import click

from conveyor._logging import configure_logging
from conveyor._queue import Queue
from conveyor.drivers.protocol import Capability

USERS_ENV = "CONVEYOR_DASHBOARD_USERS"
READ_USERS_ENV = "CONVEYOR_DASHBOARD_READ_USERS"
SECRET_ENV = "CONVEYOR_DASHBOARD_SECRET"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8484, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    help="Bearer token of the full role (default: $CONVEYOR_DASHBOARD_TOKEN); open "
    "/?token=... once in a browser to log in.",
)
@click.option(
    "--read-token",
    envvar="CONVEYOR_DASHBOARD_READ_TOKEN",
    help="Bearer token of the read-only role (default: $CONVEYOR_DASHBOARD_READ_TOKEN).",
)
@click.option("--title", default="Conveyor", show_default=True, help="Shown on every page.")
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True
)
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def dashboard(
    ctx: click.Context,
    host: str,
    port: int,
    token: str | None,
    read_token: str | None,
    title: str,
    log_format: str,
    log_level: str,
) -> None:
    """Serve the web dashboard of the queues at --url.

    Basic-auth users come from $CONVEYOR_DASHBOARD_USERS (full role) and
    $CONVEYOR_DASHBOARD_READ_USERS (read-only), as "name:password,name:password".
    $CONVEYOR_DASHBOARD_SECRET signs session cookies (default: random, so logins end when the
    dashboard restarts). Without any credentials it only binds a loopback address and only
    serves loopback clients.
    """
    try:
        import uvicorn

        from conveyor.dashboard import DashboardAuth, conveyor_dashboard
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra: pip install 'conveyor[dashboard]' ({exc})"
        ) from exc
    secret = os.environ.get(SECRET_ENV)
    auth = DashboardAuth(
        token=token or None,
        read_token=read_token or None,
        users=_users(USERS_ENV),
        read_users=_users(READ_USERS_ENV),
        secret=secret.encode() if secret else None,
    )
    if not auth.configured and not loopback_host(host):
        raise click.UsageError(
            f"refusing to serve the dashboard on {host} without credentials: anyone who can "
            "reach that address could retry, cancel and delete jobs. Give --token (or "
            f"$CONVEYOR_DASHBOARD_TOKEN), --read-token or ${USERS_ENV}, or bind 127.0.0.1."
        )
    configure_logging(log_level, log_format)
    url: str | None = ctx.obj.get("url") if ctx.obj else None
    queue = Queue.from_url(url, create=False)
    queue.driver.require(Capability.SHARED_ACROSS_PROCESSES, "by the dashboard")
    app = conveyor_dashboard(queue, auth=auth, title=title)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"dashboard of {queue.url.split('://')[0]}:// on http://{shown}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), server_header=False)


def loopback_host(host: str) -> bool:
    """Whether ``host`` (what --host names) is a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _users(variable: str) -> dict[str, str]:
    text = os.environ.get(variable, "").strip()
    users: dict[str, str] = {}
    for number, entry in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        name, sep, password = entry.partition(":")
        if not sep or not name or not password:
            # The entry itself is not shown: it may be a password.
            raise click.UsageError(f"${variable}: entry {number} is not name:password")
        users[name] = password
    return users
