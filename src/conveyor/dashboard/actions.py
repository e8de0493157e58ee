"""The dashboard's actions (POST): retry, cancel and delete a job, retry a queue's failed jobs
(at most ``retry_cap`` per click), pause and resume a queue.

Every action checks, in order: the role may act (403), the session's CSRF token came back with
the form or in ``X-CSRF-Token`` (403), and it was confirmed: htmx asks with ``hx-confirm``
before it sends; a plain form post (no JavaScript) gets a confirmation page first. Each one
done writes one ``dashboard_action`` line to the ``conveyor.dashboard`` logger, with who did it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from conveyor._definition import check_queue_name
from conveyor._errors import ConveyorError, InvalidArgument
from conveyor.dashboard.auth import Identity
from conveyor.dashboard.cache import OverviewCache
from conveyor.dashboard.csrf import Refused, checked_form
from conveyor.dashboard.pages import path_for, queue_of, render
from conveyor.drivers.records import ChangeResult, ChangeStatus, JobState

log = logging.getLogger("conveyor.dashboard")

LIST_PAGE = 500  # failed jobs read per list call of "retry all failed"


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _confirmed(request: Request, form: FormData) -> bool:
    return request.headers.get("hx-request") == "true" or form.get("confirmed") == "yes"


def _confirm_page(request: Request, form: FormData, question: str) -> Response:
    fields = [(k, v) for k, v in form.multi_items() if k not in ("csrf", "confirmed")]
    return render(
        request,
        "confirm.html",
        {"question": question, "fields": fields, "action": request.url.path},
    )


def _log(request: Request, action: str, summary: str, **fields: object) -> None:
    identity: Identity = request.state.identity
    client = request.client.host if request.client else None
    log.info(
        "dashboard %s by %s: %s",
        action,
        identity.who,
        summary,
        extra={
            "event": "dashboard_action",
            "action": action,
            "user": identity.who,
            "client": client,
            **fields,
        },
    )


def _done(
    request: Request,
    message: str,
    back: str,
    *,
    ok: bool = True,
    fragment: str = "_notice.html",
    **context: object,
) -> Response:
    """The outcome: a notice fragment for htmx (swapped into the page), else a page."""
    template = fragment if request.headers.get("hx-request") == "true" else "done.html"
    return render(request, template, {"message": message, "ok": ok, "back": back, **context})


async def _job_action(request: Request, action: str) -> Response:
    try:
        form = await checked_form(request)
    except Refused as exc:
        return PlainTextResponse(str(exc), exc.status)
    job_id = _field(form, "job_id")
    if not job_id:
        return PlainTextResponse("400: job_id is missing", 400)
    back = path_for(request, "job", job_id=quote(job_id, safe="/"))
    if not _confirmed(request, form):
        return _confirm_page(request, form, f"{action.capitalize()} job {job_id}?")
    queue = queue_of(request)
    try:
        if action == "retry":
            results = await queue.retry([job_id])
        elif action == "cancel":
            results = await queue.cancel([job_id])
        else:
            results = await queue.delete([job_id])
            back = path_for(request, "overview")
    except ConveyorError as exc:
        _log(request, action, f"job {job_id} failed: {exc}", job_id=job_id, error=str(exc))
        return _done(request, f"{action} of job {job_id} failed: {exc}", back, ok=False)
    message = _change_message(action, results)
    _log(request, action, message, job_id=job_id, outcome=results[0].status.value)
    _refresh(request)
    changed = results[0].status in (ChangeStatus.OK, ChangeStatus.CANCEL_REQUESTED)
    return _done(request, message, back, ok=changed)


def _change_message(action: str, results: Sequence[ChangeResult]) -> str:
    (r,) = results
    if r.status is ChangeStatus.OK:
        return {
            "retry": f"job {r.job_id} is queued again",
            "cancel": f"job {r.job_id} is cancelled",
            "delete": f"job {r.job_id} is deleted",
        }[action]
    if r.status is ChangeStatus.CANCEL_REQUESTED:
        return f"job {r.job_id} is running: its worker was told to stop it"
    if r.status is ChangeStatus.NOT_FOUND:
        return f"job {r.job_id} does not exist (any more)"
    state = r.state.value if r.state else "unknown"
    return f"job {r.job_id} was not changed: it is {state}"


async def retry(request: Request) -> Response:
    return await _job_action(request, "retry")


async def cancel(request: Request) -> Response:
    return await _job_action(request, "cancel")


async def delete(request: Request) -> Response:
    return await _job_action(request, "delete")


async def retry_failed(request: Request) -> Response:
    """Retry the newest ``retry_cap`` failed jobs of a queue (or every queue), of one job name
    if given: a bounded amount of work per click, whatever the backlog."""
    try:
        form = await checked_form(request)
        name = _field(form, "queue")
        queue_name = check_queue_name(name, error=InvalidArgument) if name else None
    except Refused as exc:
        return PlainTextResponse(str(exc), exc.status)
    except InvalidArgument as exc:
        return PlainTextResponse(f"400: {exc}", 400)
    job_name = _field(form, "name") or None
    cap: int = request.app.state.retry_cap
    back = (
        path_for(request, "queue", name=queue_name) if queue_name else path_for(request, "overview")
    )
    what = (
        f"failed jobs{f' named {job_name}' if job_name else ''}"
        f" of {f'queue {queue_name}' if queue_name else 'every queue'}"
    )
    if not _confirmed(request, form):
        return _confirm_page(request, form, f"Retry up to {cap} {what}?")
    queue = queue_of(request)
    ids: list[str] = []
    try:
        async for page in queue.list_pages(
            queue=queue_name, state=JobState.FAILED, name=job_name, page_size=LIST_PAGE, limit=cap
        ):
            ids += [job.id for job in page]
        retried = 0
        for start in range(0, len(ids), LIST_PAGE):
            results = await queue.retry(ids[start : start + LIST_PAGE])
            retried += sum(r.status is ChangeStatus.OK for r in results)
    except ConveyorError as exc:
        _log(request, "retry_failed", f"{what} failed: {exc}", queue=queue_name, error=str(exc))
        return _done(request, f"retrying {what} failed: {exc}", back, ok=False)
    message = f"retried {retried} {what}"
    if len(ids) >= cap:
        message += f" (at most {cap} per click: click again for more)"
    _log(request, "retry_failed", message, queue=queue_name, job_name=job_name, moved=retried)
    _refresh(request)
    return _done(request, message, back)


async def _queue_action(request: Request, action: str) -> Response:
    try:
        form = await checked_form(request)
        name = check_queue_name(_field(form, "queue"), error=InvalidArgument)
    except Refused as exc:
        return PlainTextResponse(str(exc), exc.status)
    except InvalidArgument as exc:
        return PlainTextResponse(f"400: {exc}", 400)
    back = path_for(request, "queue", name=name)
    if not _confirmed(request, form):
        return _confirm_page(request, form, f"{action.capitalize()} queue {name}?")
    queue = queue_of(request)
    try:
        await (queue.pause(name) if action == "pause" else queue.resume(name))
    except ConveyorError as exc:
        _log(request, action, f"queue {name} failed: {exc}", queue=name, error=str(exc))
        return _done(request, f"{action} of queue {name} failed: {exc}", back, ok=False)
    message = f"queue {name} is {'paused' if action == 'pause' else 'running'}"
    _log(request, action, message, queue=name)
    _refresh(request)
    # With the notice, htmx swaps in the queue's new status and button (out of band): the
    # page's counts catch up with the next background read.
    paused = action == "pause"
    return _done(request, message, back, fragment="_queue_done.html", name=name, paused=paused)


async def pause(request: Request) -> Response:
    return await _queue_action(request, "pause")


async def resume(request: Request) -> Response:
    return await _queue_action(request, "resume")


def _refresh(request: Request) -> None:
    cache: OverviewCache = request.app.state.cache
    cache.refresh_soon()
