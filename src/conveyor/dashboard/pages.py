"""The dashboard's pages (GET). ``?partial=1`` answers with just the part a page polls for.

No page counts jobs: counts come from the overview cache, lists are keyset pages of
``Queue.list_jobs``, a job is one ``Queue.get``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from conveyor._definition import check_queue_name
from conveyor._errors import InvalidArgument
from conveyor._jobinfo import JobInfo
from conveyor._queue import Queue
from conveyor.dashboard.auth import Identity, Role
from conveyor.dashboard.cache import OverviewCache, Snapshot
from conveyor.dashboard.render import (
    STATES,
    WAITING,
    payload_of,
    queue_rows,
    result_of,
    serving,
    shown,
    throughput,
)
from conveyor.drivers.records import JobState

SEARCH_MAX = 255
SEARCH_SECONDS = 5.0


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """``template`` with what every page needs: who is looking, the CSRF token of their
    session, the app's title and the overview snapshot's age."""
    state = request.app.state
    identity: Identity = request.state.identity
    full = dict(context)
    full.update(
        identity=identity,
        can_act=identity.role is Role.FULL,
        csrf=state.auth.csrf_token(identity.session),
        title=state.title,
        retry_cap=state.retry_cap,
        u=_paths(request),
        STATES=STATES,
    )
    response: Response = state.templates.TemplateResponse(
        request, template, full, status_code=status_code
    )
    return response


def path_for(request: Request, route: str, /, **params: Any) -> str:
    """The path of a route of this app under where it is mounted. Not ``request.url_for``:
    that asks the outermost app's router, which does not know the dashboard's routes."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return root + str(request.app.router.url_path_for(route, **params))


def _paths(request: Request) -> Callable[..., str]:
    """``u(route, **path_params)`` for templates: :func:`path_for`."""

    def u(route: str, /, **params: Any) -> str:
        return path_for(request, route, **params)

    return u


def partial(request: Request) -> bool:
    return request.query_params.get("partial") == "1"


def queue_of(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


async def snapshot_of(request: Request) -> Snapshot:
    cache: OverviewCache = request.app.state.cache
    return await cache.current()


async def overview(request: Request) -> Response:
    snapshot = await snapshot_of(request)
    rows = queue_rows(snapshot)
    samples = [s for per_queue in snapshot.stats.values() for s in per_queue]
    context = {
        "snapshot": snapshot,
        "rows": rows,
        "hour": throughput(samples),
        "live_workers": len(snapshot.workers),
    }
    if partial(request):
        return render(request, "_overview.html", context)
    return render(request, "overview.html", context)


async def queue_page(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        check_queue_name(name)
    except InvalidArgument as exc:
        return render(request, "error.html", {"message": str(exc)}, 404)
    params = request.query_params
    state_text = params.get("state", "")
    state = next((s for s in STATES if s.value == state_text), None)
    search = params.get("q", "").strip()[:SEARCH_MAX]
    before = _int(params.get("before"))
    size: int = request.app.state.page_size
    queue = queue_of(request)
    found: JobInfo | None = None
    if search and before is None:
        found = await queue.get(search)  # a job id: shown alone, whatever its queue
    jobs: list[JobInfo] = []
    more = False
    slow: str | None = None
    if found is not None:
        jobs = [found]
    else:
        try:
            # A name filter reads past other names' jobs (on Redis, all of a state's index
            # when nothing matches): bounded by time, not by the size of the queue.
            async with asyncio.timeout(SEARCH_SECONDS if search else None):
                # One more than a page, to know whether there is a next one without counting.
                jobs = await queue.list_jobs(
                    queue=name,
                    state=state,
                    name=search or None,
                    before_seq=before,
                    limit=size + 1,
                )
        except TimeoutError:
            slow = (
                f"Searching for job name {search!r} took longer than {SEARCH_SECONDS:.0f} s "
                "and was stopped; pick a state to narrow it."
            )
        more = len(jobs) > size
        jobs = jobs[:size]
    snapshot = await snapshot_of(request)
    info = next((q for q in snapshot.queues if q.name == name), None)
    context = {
        "name": name,
        "info": info,
        "jobs": jobs,
        "state": state,
        "search": search,
        "slow": slow,
        "before": before,
        "next_before": jobs[-1].seq if more and jobs else None,
        "workers": serving(name, snapshot.workers),
        "hour": throughput(snapshot.stats.get(name, ())),
        "snapshot": snapshot,
    }
    if partial(request):
        return render(request, "_jobs.html", context)
    return render(request, "queue.html", context)


async def job_page(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    info = await queue_of(request).get(job_id) if 0 < len(job_id) <= 255 else None
    if info is None:
        return render(request, "error.html", {"message": f"no job with id {job_id!r}"}, 404)
    error = shown(info.error) if info.error else None
    context = {
        "job": info,
        "payload": payload_of(info),
        "result": result_of(info),
        "error": error,
        "errors": [(e, shown(e.error)) for e in info.errors],
        "headers": info.headers,
        "can_retry": info.state in (JobState.FAILED, JobState.CANCELLED),
        "can_cancel": not info.state.is_terminal and not info.cancel_requested,
        "can_remove": info.state.is_terminal,
    }
    if partial(request):
        return render(request, "_job_live.html", context)
    return render(request, "job.html", context)


async def workers_page(request: Request) -> Response:
    live = await queue_of(request).workers()
    snapshot = await snapshot_of(request)
    unserved = [
        (q.name, sum(q.counts.get(s, 0) for s in WAITING))
        for q in snapshot.queues
        if not q.paused
        and sum(q.counts.get(s, 0) for s in WAITING) > 0
        and serving(q.name, live) == 0
    ]
    context = {"workers": sorted(live, key=lambda w: w.id), "unserved": unserved}
    if partial(request):
        return render(request, "_workers.html", context)
    return render(request, "workers.html", context)


async def schedules_page(request: Request) -> Response:
    schedules = await queue_of(request).schedules()
    ordered = sorted(schedules, key=lambda c: c.schedule.name)
    return render(request, "schedules.html", {"schedules": ordered})


def _int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 19:
        return None
    return int(text)
