"""Who may use the dashboard: loopback clients when it has no credentials, else bearer tokens,
a ``?token=`` login that sets a session cookie, and HTTP basic auth, each with its role."""

from __future__ import annotations

import base64

import httpx
import pytest

from conveyor._errors import InvalidArgument
from conveyor.dashboard import DashboardAuth
from conveyor.dashboard.app import CSP
from conveyor.dashboard.auth import COOKIE, Authenticator, Role, is_loopback
from tests.dashboard.conftest import ServeFn, non_loopback_address


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_without_credentials_only_loopback_clients_are_served(
    serve: ServeFn, sqlite_url: str
) -> None:
    """The server is bound to a non-loopback address of this machine, and the test connects to
    that address: the app sees a client that is not loopback, as a remote one would be."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to bind")
    dash = serve(sqlite_url, host=address)
    for path in ("/", "/queues/emails", "/static/htmx.min.js"):
        refused = dash.client.get(path)
        assert refused.status_code == 401, path
        assert "loopback" in refused.text
        assert refused.headers["content-security-policy"] == CSP
        assert "set-cookie" not in refused.headers
    assert dash.client.post("/actions/pause", data={"queue": "emails"}).status_code == 401
    # The same app on loopback serves its pages.
    local = serve(sqlite_url)
    assert local.client.get("/").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        {"x-forwarded-for": "203.0.113.7"},
        {"forwarded": "for=203.0.113.7"},
        {"x-real-ip": "203.0.113.7"},
    ],
)
def test_without_credentials_a_request_through_a_proxy_is_refused(
    serve: ServeFn, sqlite_url: str, header: dict[str, str]
) -> None:
    """A reverse proxy on the same host connects from loopback for every client it forwards.
    (uvicorn itself reads X-Forwarded-For from a loopback peer: the client it then reports is
    not loopback, and refused for that; the other headers reach the app's own check.)"""
    local = serve(sqlite_url)
    refused = local.client.get("/", headers=header)
    assert refused.status_code == 401
    assert local.client.get("/").status_code == 200


def test_with_credentials_a_remote_client_logs_in(serve: ServeFn, sqlite_url: str) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to bind")
    dash = serve(sqlite_url, host=address, auth=DashboardAuth(token="remote-token-1"))
    assert dash.client.get("/").status_code == 401
    assert dash.client.get("/", headers={"authorization": "Bearer remote-token-1"}).status_code == (
        200
    )


def test_credentials_are_needed_even_on_loopback_once_configured(
    serve: ServeFn, sqlite_url: str
) -> None:
    dash = serve(sqlite_url, auth=DashboardAuth(token="a-full-token"))
    refused = dash.client.get("/")
    assert refused.status_code == 401 and "log in" in refused.text
    assert "www-authenticate" not in refused.headers  # no basic users: no browser prompt
    assert dash.client.get("/", headers={"authorization": "Bearer wrong-token"}).status_code == 401
    assert dash.client.get("/?token=wrong-token").status_code == 401


def test_a_token_in_the_address_logs_in_with_a_strict_cookie(
    serve: ServeFn, sqlite_url: str
) -> None:
    dash = serve(sqlite_url, auth=DashboardAuth(token="a-full-token"))
    login = dash.client.get("/queues/emails?token=a-full-token&state=failed")
    assert login.status_code == 303
    # Sent on without the token, so it stays out of the history and the logs.
    assert login.headers["location"] == "/queues/emails?state=failed"
    cookie = login.headers["set-cookie"]
    for part in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert part in cookie
    assert "a-full-token" not in cookie
    page = dash.client.get("/queues/emails?state=failed")  # the client keeps the cookie
    assert page.status_code == 200 and 'data-testid="who">token<' in page.text
    # A cookie altered by hand is no login.
    value = dash.client.cookies[COOKIE]
    forged = value.replace("|full|", "|read|")
    with httpx.Client(base_url=dash.base) as other:
        other.cookies.set(COOKIE, forged)
        assert other.get("/").status_code == 401
        other.cookies.set(COOKIE, value)
        assert other.get("/").status_code == 200


def test_basic_auth_users_of_both_roles(serve: ServeFn, sqlite_url: str) -> None:
    auth = DashboardAuth(users={"ada": "lovelace-pw"}, read_users={"bob": "builder-pw"})
    dash = serve(sqlite_url, auth=auth)
    refused = dash.client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="Conveyor dashboard"')
    assert dash.client.get("/", headers={"authorization": basic("ada", "nope")}).status_code == (
        401
    )
    ada = dash.client.get("/", headers={"authorization": basic("ada", "lovelace-pw")})
    assert ada.status_code == 200 and 'data-testid="who">ada<' in ada.text
    assert 'id="retry-all-failed"' in ada.text
    bob = dash.client.get("/", headers={"authorization": basic("bob", "builder-pw")})
    assert bob.status_code == 200 and "bob (read-only)" in bob.text
    assert 'id="retry-all-failed"' not in bob.text


def test_credentials_are_checked_when_made() -> None:
    for bad in (
        {"token": "short"},
        {"token": "same-token-1", "read_token": "same-token-1"},
        {"users": {"ada": ""}},
        {"users": {"a:b": "pw"}},
        {"users": {"ada": "pw"}, "read_users": {"ada": "pw2"}},
        {"secret": b"short"},
    ):
        with pytest.raises(InvalidArgument):
            DashboardAuth(**bad)  # type: ignore[arg-type]


def test_cookies_end_when_the_credentials_change() -> None:
    first = Authenticator(DashboardAuth(token="token-one-1", secret=b"s" * 32))
    same = Authenticator(DashboardAuth(token="token-one-1", secret=b"s" * 32))
    changed = Authenticator(DashboardAuth(token="token-two-2", secret=b"s" * 32))
    cookie = first.cookie_for("token", Role.FULL, "session-1")
    assert same.read_cookie(cookie) is not None
    assert changed.read_cookie(cookie) is None
    assert first.read_cookie(cookie, now=10**12) is None  # expired
    assert first.check_csrf("session-1", first.csrf_token("session-1"))
    assert not first.check_csrf("session-2", first.csrf_token("session-1"))


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not is_loopback("192.0.2.2") and not is_loopback("testclient")
    assert not is_loopback(None) and not is_loopback("")
