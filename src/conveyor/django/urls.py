"""Conveyor URLs of Django databases, and whether a queue lives in one."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.db import connections


def database_url(using: str, *, schema: str | None = None) -> str:
    """The Conveyor URL of Django's database ``using`` (its current settings, so a test
    database counts): SQLite files and PostgreSQL."""
    settings: dict[str, Any] = connections[using].settings_dict
    vendor = connections[using].vendor
    name = str(settings.get("NAME") or "")
    if vendor == "sqlite":
        if not name or name == ":memory:" or name.startswith("file:") or "mode=memory" in name:
            raise ImproperlyConfigured(
                f"the Django database {using!r} is in memory, where Conveyor cannot keep jobs: "
                "give it a file, or give the TASKS backend OPTIONS 'url'"
            )
        return f"sqlite:///{os.path.abspath(name)}"
    if vendor == "postgresql":
        user = quote(str(settings.get("USER") or ""), safe="")
        password = quote(str(settings.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(settings.get("HOST") or "localhost")
        port = str(settings.get("PORT") or "5432")
        url = f"postgresql://{auth}{host}:{port}/{quote(name, safe='')}"
        return f"{url}?schema={schema}" if schema else url
    raise ImproperlyConfigured(
        f"the Django database {using!r} is {vendor}; Conveyor keeps jobs in SQLite or "
        "PostgreSQL: give the TASKS backend OPTIONS 'url'"
    )


def shares_database(url: str, using: str) -> bool:
    """Whether a queue on ``url`` lives in Django's database ``using``, so that Django's
    connection can write its jobs inside the ORM's transaction."""
    connection = connections[using]
    vendor = connection.vendor
    scheme = url.partition("://")[0].lower()
    try:
        own = database_url(using)
    except ImproperlyConfigured:
        return False
    if vendor == "sqlite" and scheme == "sqlite":
        from conveyor.backends.sqlite._url import path_from_url

        theirs = os.path.realpath(path_from_url(url))
        return theirs == os.path.realpath(path_from_url(own))
    if vendor == "postgresql" and scheme in ("postgresql", "postgres"):
        a, b = urlsplit(url), urlsplit(own)
        return (_host(a.hostname), a.port or 5432, a.path) == (
            _host(b.hostname),
            b.port or 5432,
            b.path,
        ) and "host" not in parse_qs(a.query)
    return False


def _host(host: str | None) -> str:
    return "localhost" if host in (None, "", "127.0.0.1", "::1") else host
