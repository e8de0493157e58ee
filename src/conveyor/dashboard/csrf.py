"""CSRF protection of the dashboard's actions.

Each session (see :mod:`conveyor.dashboard.auth`) has a token, an HMAC of its session id: the
pages put it in every form (field ``csrf``) and in the ``X-CSRF-Token`` header htmx sends. A
POST without the token of the session its cookie names is refused with 403 before the action
reads anything else, so another site cannot act through a logged-in browser (the cookie is
``SameSite=Strict`` besides).
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

from conveyor.dashboard.auth import Identity, Role

FIELD = "csrf"
HEADER = "x-csrf-token"
MAX_FIELD = 1024  # characters of a form field (a job id is at most 255)
MAX_FIELDS = 16


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def checked_form(request: Request) -> FormData:
    """The form of an action's POST, once the login may act and the CSRF token matches."""
    identity: Identity = request.state.identity
    if identity.role is not Role.FULL:
        raise Refused(403, "403: this login may only read")
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    given = form.get(FIELD) or request.headers.get(HEADER)
    if not isinstance(given, str) or not request.app.state.auth.check_csrf(identity.session, given):
        raise Refused(403, "403: missing or wrong CSRF token; reload the page and try again")
    for key, value in form.multi_items():
        if not isinstance(value, str) or len(value) > MAX_FIELD:
            raise Refused(400, f"400: form field {key!r} is too long")
    return form
