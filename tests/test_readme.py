"""The README's tour runs as written: its files are written out into a folder of their own and
its commands run there, in real processes, exactly as a reader would run them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import drop_test_schema, postgres_test_url, redis_test_url

README = Path(__file__).resolve().parents[1] / "README.md"
FILE_BLOCK = re.compile(r"```python\n# (app/\w+\.py)\n(.*?)```", re.S)
BIN = Path(sys.executable).parent


def tour_commands(text: str) -> list[str]:
    """The commands of the tour's "Run it" section (its first shell block)."""
    section = text[text.index("### 4. Run it") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block[1].splitlines() if line.strip()]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def app_dir(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, dict[str, str]]:
    files = FILE_BLOCK.findall(README.read_text())
    assert {name for name, _ in files} >= {
        "app/__init__.py",
        "app/jobs.py",
        "app/services.py",
        "app/api.py",
        "app/views.py",
        "app/worker.py",
    }
    (tmp_path / "app").mkdir()
    for name, code in files:
        (tmp_path / name).write_text(code)
    if request.param == "redis":
        url = redis_test_url(request.getfixturevalue("redis_base_url"))
    elif request.param == "postgres":
        url = postgres_test_url(request.getfixturevalue("postgres_base_url"))
        request.addfinalizer(lambda: drop_test_schema(url))
    else:
        url = f"sqlite:///{tmp_path / 'tour.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["CONVEYOR_URL"] = url
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(tmp_path)
    return tmp_path, env


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = shlex.split(command)
    if args[0] == "python":
        args[0] = sys.executable
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_tour_runs_as_written(app_dir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = app_dir
    enqueue, work, listing = tour_commands(README.read_text())
    job_id = run(enqueue, cwd, env).stdout.strip()
    assert job_id.startswith("invite-email:")
    worked = run(work, cwd, env)
    assert "sent an invitation to ada@example.com" in worked.stdout
    assert f"job completed job_name=email.send_invite job_id={job_id} queue=emails" in (
        worked.stderr
    )
    listed = run(listing, cwd, env).stdout
    [line] = [line for line in listed.splitlines() if job_id in line]
    assert "completed" in line and "emails" in line
    run("conveyor check app.worker:worker", cwd, env)


def test_the_tours_other_doors_run_too(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The sync view, the delayed reminder, a duplicate id, a throttled resend and a missing
    invitation."""
    cwd, env = app_dir
    script = """
import asyncio, dataclasses, uuid
from app import api, services, views, worker
from app.jobs import SendInvite, send_invite

view_id = views.invite_view("sync@example.com")
assert views.sync_queue.get(view_id) is not None

async def main():
    job_id = await api.invite("ada@example.com")
    again = await api.queue.enqueue(
        send_invite,
        SendInvite(invitation_id=uuid.UUID(job_id.split(":", 1)[1]), to_email="ada@example.com"),
        job_id=job_id,
    )
    assert again.duplicate
    missing = await api.queue.enqueue(
        send_invite, SendInvite(invitation_id=uuid.uuid4(), to_email="nobody@example.com")
    )
    reminder = uuid.uuid4()
    await api.remind(reminder, "ada@example.com")
    clicked = uuid.uuid4()
    services.repo.create(clicked, "bob@example.com")
    assert [await api.resend(clicked, "bob@example.com") for _ in range(3)] == [True, False, False]
    info = await api.queue.get(f"invite-reminder:{reminder}")
    assert info is not None and info.state.value == "scheduled"
    worker.worker.config = dataclasses.replace(worker.worker.config, burst=True)
    await worker.worker.run()
    failed = await missing.info()
    assert failed.state.value == "failed" and "invitation not found" in (failed.error or "")
    assert (await api.queue.get(job_id)).state.value == "completed"
    assert (await api.queue.get(view_id)).state.value == "completed"
    await api.queue.close()
    await worker.worker.queue.close()

asyncio.run(main())
print("ok")
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.count("sent an invitation to") == 3
    assert done.stdout.count("sent an invitation to bob@example.com") == 1  # clicked 3 times
    assert done.stdout.strip().endswith("ok")


def test_progress_and_retention(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The reports snippet: progress is stored and shown, each job gets its own expiry, and
    ``jobs show`` prints both."""
    cwd, env = app_dir
    script = """
import asyncio, dataclasses
from app import reports

async def main():
    job_id = await reports.export_later(3)
    reports.worker.config = dataclasses.replace(reports.worker.config, burst=True)
    await reports.worker.run()
    info = await reports.queue.get(job_id)
    assert info is not None and info.state.value == "completed", info
    assert (info.progress, info.progress_message) == (1.0, "3 of 3 rows"), info
    assert (info.expires_at - info.finished_at).total_seconds() == 3600
    assert await reports.queue.handle(reports.export, job_id).result() == "exported 3 rows"
    others = [j for j in await reports.queue.list_jobs(queue="reports") if j.id != job_id]
    assert all(j.expires_at is None or j.expires_at == j.finished_at for j in others), others
    await reports.queue.close()
    print(job_id)

asyncio.run(main())
"""
    job_id = run(f"python -c {shlex.quote(script)}", cwd, env).stdout.strip()
    shown = run(f"conveyor jobs show {job_id}", cwd, env).stdout
    assert "progress: 100% 3 of 3 rows (at " in shown
    assert "expires_at: " in shown


@pytest.mark.parametrize("app_dir", ["sqlite"], indirect=True)  # data and queue: one file
def test_enqueue_inside_your_transaction(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The SQLite snippet: the invitation and its job commit together (and the tour's worker,
    on the same file, sends it); an error inside the transaction leaves neither."""
    cwd, env = app_dir
    env["CONVEYOR_URL"] = "sqlite:///app.db"  # the tour's worker serves the snippet's queue
    script = """
import asyncio, sqlite3
from contextlib import closing
from app import services, signup
from app.jobs import SendInvite, send_invite

async def main():
    invitation_id = await signup.sign_up("ada@example.com")
    info = await signup.queue.get(f"invite-email:{invitation_id}")
    assert info is not None and info.state.value == "queued"
    try:
        with closing(sqlite3.connect(signup.DATABASE)) as conn, conn:
            conn.execute("INSERT INTO invitation VALUES ('doomed', 'x@example.com')")
            await signup.queue.enqueue(
                send_invite,
                SendInvite(invitation_id=invitation_id, to_email="x@example.com"),
                job_id="invite-email:doomed",
                connection=conn,
            )
            raise RuntimeError("the signup failed")
    except RuntimeError:
        pass
    assert await signup.queue.get("invite-email:doomed") is None
    assert await services.repo.get("doomed") is None
    await signup.queue.close()
    print(invitation_id)

asyncio.run(main())
"""
    invitation_id = run(f"python -c {shlex.quote(script)}", cwd, env).stdout.strip()
    worked = run("conveyor worker app.worker:worker --burst", cwd, env)
    assert worked.stdout.count("sent an invitation to") == 1
    assert f"job completed job_name=email.send_invite job_id=invite-email:{invitation_id}" in (
        worked.stderr
    )


@pytest.mark.parametrize("app_dir", ["sqlite"], indirect=True)
def test_the_sqlite_durability_settings(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The SQLite section's two queues: both enqueue into the same file, and the connection of
    the second really flushes every commit (PRAGMA synchronous 2 = FULL, 1 = NORMAL)."""
    cwd, env = app_dir
    script = """
import asyncio, sqlite3, uuid
from app.durable import durable, queue
from app.jobs import SendInvite, send_invite

async def main():
    for q in (queue, durable):
        async with q:
            await q.enqueue(send_invite, SendInvite(invitation_id=uuid.uuid4(), to_email="a@b.c"))
            modes = await q.driver.driver._db.run(
                lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
            )
            print(modes)
    with sqlite3.connect("app.db") as conn:
        print(conn.execute("SELECT count(*) FROM conveyor_job").fetchone()[0])

asyncio.run(main())
"""
    out = run(f"python -c {shlex.quote(script)}", cwd, env).stdout.split()
    assert out == ["1", "2", "2"]


@pytest.fixture
def app_database(postgres_base_url: str) -> Iterator[str]:
    """A database of its own for the PostgreSQL snippets (they keep the queue in schema public
    of the app's database, beside the app's ``invitation`` table), dropped afterwards."""
    import psycopg

    name = f"readme_{uuid.uuid4().hex[:12]}"
    base = postgres_base_url.partition("?")[0].rpartition("/")[0]
    with psycopg.connect(postgres_base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    url = f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(b"CREATE TABLE invitation (id uuid PRIMARY KEY, email text)")
    yield url
    with psycopg.connect(postgres_base_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


@pytest.mark.parametrize("module", ["signup_pg", "signup_orm"])
def test_enqueue_inside_your_postgresql_transaction(
    tmp_path: Path, app_database: str, module: str
) -> None:
    """The psycopg and SQLAlchemy snippets: the invitation and its job commit together, a
    worker of the same database runs it, and an error inside the transaction leaves neither."""
    files = FILE_BLOCK.findall(README.read_text())
    (tmp_path / "app").mkdir()
    for name, code in files:
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_URL", "REDIS_URL")}
    env["DATABASE_URL"] = app_database
    env["CONVEYOR_URL"] = app_database
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(tmp_path)
    script = f"""
import asyncio, uuid
import psycopg
from app import {module} as signup
from app.signup_pg import queue

async def main():
    invitation_id = await signup.sign_up("ada@example.com")
    info = await queue.get(f"invite-email:{{invitation_id}}")
    assert info is not None and info.state.value == "queued", info
    doomed = uuid.uuid4()
    try:
        async with await psycopg.AsyncConnection.connect(signup.os.environ["DATABASE_URL"]) as conn:
            async with conn.transaction():
                await conn.execute("INSERT INTO invitation VALUES (%s, 'x@example.com')", (doomed,))
                await queue.enqueue(
                    signup.send_invite,
                    signup.SendInvite(invitation_id=doomed, to_email="x@example.com"),
                    job_id=f"invite-email:{{doomed}}",
                    connection=conn,
                )
                raise RuntimeError("the signup failed")
    except RuntimeError:
        pass
    assert await queue.get(f"invite-email:{{doomed}}") is None
    assert len(await queue.list_jobs()) == 1
    await queue.close()
    print(invitation_id)

asyncio.run(main())
"""
    invitation_id = run(f"python -c {shlex.quote(script)}", tmp_path, env).stdout.strip()
    # The tour's worker looks invitations up in its own stand-in store, which this one is not
    # in: it runs the job and fails it as "not found", which is enough to show it ran.
    worked = run("conveyor worker app.worker:worker --burst", tmp_path, env)
    assert f"job_id=invite-email:{invitation_id}" in worked.stderr


def test_the_schedules_run_as_written(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The schedules snippet: its worker, on a fake clock set just before a tick of both
    schedules (01:30 London on the autumn change is 00:30 UTC, a multiple of five minutes),
    runs each tick's job once; then `conveyor cron ls` lists both, as written."""
    cwd, env = app_dir
    section = README.read_text()[README.read_text().index("## Cron and repeat schedules") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    start_worker, listing = (line.split("#")[0].strip() for line in block[1].splitlines())
    assert start_worker == "conveyor worker app.schedules:worker"
    run("conveyor check app.schedules:worker", cwd, env)
    script = """
import asyncio, dataclasses
from datetime import UTC, datetime
from conveyor import FakeClock
from app.schedules import worker

tick = int(datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp())
clock = FakeClock(tick - 1)
worker.config = dataclasses.replace(worker.config, clock=clock, poll_interval=0.05)

async def main():
    queue = worker.queue
    task = asyncio.create_task(worker.run())
    while len(await queue.schedules()) < 2:
        await asyncio.sleep(0.05)
    clock.set(tick + 1)
    for job_id in (f"cron:sessions.cleanup:{tick}", f"cron:inventory.sync:{tick}"):
        for _ in range(400):
            info = await queue.get(job_id)
            if info is not None and info.state.value == "completed":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{job_id} did not complete: {info}")
    worker.stop()
    await task
    await queue.close()

asyncio.run(main())
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.count("deleting sessions older than 30 days") == 1
    assert done.stdout.count("syncing the north warehouse") == 1
    listed = run(listing, cwd, env).stdout
    [cleanup] = [line for line in listed.splitlines() if line.startswith("sessions.cleanup")]
    assert "30 1 * * * (Europe/London)" in cleanup and "(fired)" in cleanup
    [sync] = [line for line in listed.splitlines() if line.startswith("inventory.sync")]
    assert "every 5m" in sync and "skip" in sync


def test_rate_limits(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The rate-limit snippet: the upstream turns the first call away, its queue pauses for a
    second without spending an attempt, then every lookup completes."""
    cwd, env = app_dir
    script = """
import asyncio, dataclasses, time
from app import geocode

async def main():
    queue = geocode.worker.queue
    handles = [
        await queue.enqueue(geocode.geocode, geocode.Geocode(address=f"{n} Unter den Linden"))
        for n in range(3)
    ]
    geocode.worker.config = dataclasses.replace(geocode.worker.config, burst=True)
    started = time.monotonic()
    await geocode.worker.run()
    assert time.monotonic() - started >= 1.0  # the queue waited out retry_after
    for handle in handles:
        info = await handle.info()
        assert info.state.value == "completed" and info.attempt == 1, info
    assert geocode.api.calls == 4
    await queue.close()

asyncio.run(main())
print("ok")
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.strip().endswith("ok")
    assert "job rate limited (HTTP 429: retry after 1.0s): its queue is paused for 1s" in (
        done.stderr
    )


def test_groups(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The groups snippet: one account's deliveries run one at a time in order beside another
    account's, and a RateLimited of one account pauses only that account for a second."""
    cwd, env = app_dir
    script = """
import asyncio, dataclasses, time
from app import webhooks as w

async def main():
    queue = w.worker.queue
    handles = [
        await queue.enqueue(w.deliver, w.Delivery(account_id=f"acct-{n % 2}",
                                                  endpoint_host="hooks.example", event=f"e{n}"))
        for n in range(6)
    ]
    busy = await queue.enqueue(w.deliver, w.Delivery(account_id="acct-9",
                                                     endpoint_host="busy.example", event="x"))
    w.worker.config = dataclasses.replace(w.worker.config, burst=True)
    run = asyncio.create_task(w.worker.run())
    for handle in handles:
        await handle.result(timeout=30)
    info = await queue.get(handles[0].id)
    assert info.group == "webhook.deliver:acct-0", info.group
    # Each account's events ran in enqueue order, one at a time.
    for account in ("acct-0", "acct-1"):
        events = [e for a, e in w.delivered if a == account]
        assert events == sorted(events), events
    # The busy account is paused, not failed: it waits, its attempt given back.
    busy_info = await queue.get(busy.id)
    assert busy_info.attempt == 0 and busy_info.state.value == "queued", busy_info
    await queue.cancel([busy.id])
    await run
    await queue.close()

asyncio.run(main())
print("ok")
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.strip().endswith("ok")
    assert "its group 'webhook.deliver:acct-9' is paused for 1s" in done.stderr


def test_the_dashboard_mounts_as_written(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The dashboard snippet: mounted under /jobs, a ?token= login, then the queue is shown."""
    cwd, env = app_dir
    env = {**env, "DASHBOARD_TOKEN": "readme-dashboard-token"}
    script = """
import asyncio, threading, time
import httpx, uvicorn
from app import api
from app.dashboard import app

asyncio.run(api.invite("ada@example.com"))
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
thread = threading.Thread(target=server.run)
thread.start()
deadline = time.monotonic() + 30
while not server.started:
    assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
    time.sleep(0.01)
port = server.servers[0].sockets[0].getsockname()[1]
try:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/jobs/").status_code == 401
        login = client.get("/jobs/?token=readme-dashboard-token")
        assert login.status_code == 303 and login.headers["location"] == "/jobs/"
        page = client.get("/jobs/")
        assert page.status_code == 200 and 'data-queue="emails"' in page.text, page.text
        jobs = client.get("/jobs/queues/emails")
        assert 'data-testid="job-row"' in jobs.text
finally:
    server.should_exit = True
    thread.join(30)
print("ok")
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.strip().endswith("ok")


def test_several_worker_processes(app_dir: tuple[Path, dict[str, str]]) -> None:
    """``--processes 2 --burst``: two burst workers under a supervisor drain the queue, and
    the supervisor exits 0 once both have."""
    cwd, env = app_dir
    section = README.read_text()[README.read_text().index("**Several processes from one") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    [command] = block[1].splitlines()
    enqueue, _, listing = tour_commands(README.read_text())
    job_id = run(enqueue, cwd, env).stdout.strip()
    worked = run(command, cwd, env)
    assert "sent an invitation to ada@example.com" in worked.stdout
    assert worked.stderr.count("worker process") >= 4, worked.stderr  # 2 started, 2 exited
    [line] = [line for line in run(listing, cwd, env).stdout.splitlines() if job_id in line]
    assert "completed" in line


def test_hooks_middleware_and_secrets(app_dir: tuple[Path, dict[str, str]]) -> None:
    """The hooks snippet: a wrong password fails for good, the dead hook gets the payload
    with the password redacted, and the stored payload keeps it for the handler."""
    cwd, env = app_dir
    script = """
import asyncio, dataclasses
from pydantic import SecretStr
from app import alerts as a

async def main():
    queue = a.worker.queue
    login = a.check_login
    good = await queue.enqueue(login, a.Login(user="ann", password=SecretStr("open sesame")))
    bad = await queue.enqueue(login, a.Login(user="bob", password=SecretStr("guess")))
    a.worker.config = dataclasses.replace(a.worker.config, burst=True)
    await a.worker.run()
    assert (await queue.get(good.id)).state.value == "completed"
    info = await queue.get(bad.id)
    assert info.state.value == "failed" and info.attempt == 1, info
    assert info.redacted_payload == {"user": "bob", "password": "**********"}
    assert a.pages == [{"job": "auth.check_login", "id": bad.id,
                        "payload": {"user": "bob", "password": "**********"}}], a.pages
    await queue.close()

asyncio.run(main())
print("ok")
"""
    done = run(f"python -c {shlex.quote(script)}", cwd, env)
    assert done.stdout.strip().endswith("ok")
