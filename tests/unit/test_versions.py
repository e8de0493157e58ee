"""Payload versions: the definition's checks, the version header, the upgrade before validation,
and the core's decision about a job enqueued by a newer version than the worker's."""

from __future__ import annotations

import json
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pydantic import BaseModel, SecretStr

from conveyor import (
    InvalidArgument,
    InvalidJobDefinition,
    JobContext,
    PayloadValidationError,
    Queue,
    job,
)
from conveyor.core.backoff import DEFAULT_BACKOFF
from conveyor.core.headers import SECRETS_HEADER, encode_headers
from conveyor.core.outcome import Errored, Fail, NewerVersion, SnoozeFor, Succeeded, decide
from conveyor.core.unknown import UNKNOWN_GRACE, decide_newer
from conveyor.core.versions import (
    MAX_VERSION,
    VERSION_HEADER,
    PayloadUpgradeError,
    decode_versioned,
    stored_version,
    version_header,
)
from conveyor.drivers.records import AttemptError, JobRecord
from conveyor.runtime.executor import execute
from conveyor.runtime.registry import HandlerRegistry
from tests.unit.records import active_record

NOW = 1_700_000_000.0


class Contact(BaseModel):  # version 2: the name split in two
    first_name: str
    last_name: str


def split_name(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = data.pop("name").partition(" ")
    return {**data, "first_name": first, "last_name": last}


def active(payload: dict[str, Any], version: int | None = None, **fields: object) -> JobRecord:
    headers = encode_headers({} if version is None else version_header(version))
    return active_record(
        **{
            "name": "crm.contact",
            "payload": json.dumps(payload).encode(),
            "worker_id": "old-worker",
            "headers": headers,
            **fields,
        }
    )


@pytest.mark.parametrize("version", [0, -1, MAX_VERSION + 1, True, 2.0, "2", None])
def test_a_version_that_is_not_a_whole_number_in_range_is_refused(version: Any) -> None:
    with pytest.raises(InvalidJobDefinition, match=r"job 'crm.contact': version must be"):
        job("crm.contact", Contact, version=version)


def test_an_upgrade_must_be_a_function_and_needs_a_version_above_one() -> None:
    with pytest.raises(InvalidJobDefinition, match="upgrade must be a function"):
        job("crm.contact", Contact, version=2, upgrade="split")  # type: ignore[call-overload]

    async def in_a_coroutine(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(InvalidJobDefinition, match="not `async def`"):
        job("crm.contact", Contact, version=2, upgrade=cast(Any, in_a_coroutine))
    with pytest.raises(InvalidJobDefinition, match="version is 1"):
        job("crm.contact", Contact, upgrade=split_name)
    definition = job("crm.contact", Contact, version=MAX_VERSION, upgrade=split_name)
    assert (definition.version, definition.upgrade) == (MAX_VERSION, split_name)
    assert job("crm.contact", Contact).version == 1


def test_only_a_version_above_one_is_written_with_the_job() -> None:
    class WithSecret(BaseModel):
        token: SecretStr

    assert dict(job("a", Contact).headers) == {}
    assert dict(job("a", Contact, version=3).headers) == {VERSION_HEADER: "3"}
    both = job("a", WithSecret, version=2).headers
    assert both[VERSION_HEADER] == "2" and both[SECRETS_HEADER] == '[["token"]]'


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 1),
        ({VERSION_HEADER: "1"}, 1),
        ({VERSION_HEADER: "42"}, 42),
        ({VERSION_HEADER: str(MAX_VERSION)}, MAX_VERSION),
        ({VERSION_HEADER: "0"}, None),
        ({VERSION_HEADER: "-2"}, None),
        ({VERSION_HEADER: "two"}, None),
        ({VERSION_HEADER: "٣"}, None),  # a digit, but not an ASCII one
        ({VERSION_HEADER: "9" * 400}, None),
    ],
)
def test_the_stored_version_is_read_from_its_header(
    headers: dict[str, str], expected: int | None
) -> None:
    assert stored_version(headers) == expected


def test_an_older_payload_is_upgraded_before_it_is_validated() -> None:
    calls: list[tuple[int, dict[str, Any]]] = []

    def upgrade(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        calls.append((from_version, dict(data)))
        return split_name(from_version, data)

    old = b'{"name": "Ada Lovelace"}'
    read = decode_versioned("crm.contact", Contact, old, stored=1, current=2, upgrade=upgrade)
    assert read == Contact(first_name="Ada", last_name="Lovelace")
    assert calls == [(1, {"name": "Ada Lovelace"})]
    current = b'{"first_name": "Alan", "last_name": "Turing"}'
    read = decode_versioned("crm.contact", Contact, current, stored=2, current=2, upgrade=upgrade)
    assert read.first_name == "Alan" and len(calls) == 1  # the current shape is not upgraded
    # Without an upgrade function, an older payload is validated as it is.
    with pytest.raises(PayloadValidationError, match="first_name"):
        decode_versioned("crm.contact", Contact, old, stored=1, current=2, upgrade=None)


def test_an_upgrade_that_fails_names_the_job_and_both_versions() -> None:
    def broken(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("surname")

    def not_a_dict(from_version: int, data: dict[str, Any]) -> Any:
        return [data]

    def not_json(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"first_name": object()}

    old = b'{"name": "Ada"}'
    read = {"stored": 1, "current": 3}
    with pytest.raises(PayloadUpgradeError) as raised:
        decode_versioned("crm.contact", Contact, old, **read, upgrade=broken)
    text = str(raised.value)
    assert "'crm.contact'" in text and "raised KeyError" in text
    assert "version 1 to version 3" in text
    with pytest.raises(PayloadUpgradeError, match="returned list, not a dict"):
        decode_versioned("crm.contact", Contact, old, **read, upgrade=not_a_dict)
    with pytest.raises(PayloadUpgradeError, match="not JSON"):
        decode_versioned("crm.contact", Contact, old, **read, upgrade=not_json)
    with pytest.raises(PayloadValidationError, match=r"last_name.*after upgrading"):
        decode_versioned(
            "crm.contact", Contact, old, **read, upgrade=lambda v, d: {"first_name": "Ada"}
        )


def test_a_job_of_a_newer_version_is_handed_back_with_a_growing_delay() -> None:
    first = decide(NewerVersion(3, 2), active({}), backoff=DEFAULT_BACKOFF, rng=random.Random(1))
    assert isinstance(first, SnoozeFor) and first.delay == 10
    assert first.error is not None and first.error.startswith("NewerJobVersion: ")
    assert "version 3" in first.error and "has version 2" in first.error
    history = (AttemptError(1, NOW, first.error),)
    second = decide_newer(active({}, errors=history, started_at=NOW + 10), 3, 2)
    assert isinstance(second, SnoozeFor) and second.delay == 20


def test_a_job_of_a_newer_version_fails_only_after_the_grace_period() -> None:
    history = tuple(AttemptError(1, NOW + n, "NewerJobVersion: x") for n in range(3))
    still = decide_newer(active({}, errors=history, started_at=NOW + UNKNOWN_GRACE - 1), 2, 1)
    assert isinstance(still, SnoozeFor)
    failed = decide_newer(active({}, errors=history, started_at=NOW + UNKNOWN_GRACE), 2, 1)
    assert isinstance(failed, Fail) and failed.error.startswith("NewerJobVersion: ")
    assert "Deploy workers with version 2 or later" in failed.error
    # One streak with the hand-backs for an unknown name: since the first of them, no worker
    # that fetched the job could run it.
    mixed = (AttemptError(1, NOW, "UnknownJob: x"), AttemptError(1, NOW + 1, "NewerJobVersion: x"))
    assert isinstance(
        decide_newer(active({}, errors=mixed, started_at=NOW + UNKNOWN_GRACE), 2, 1), Fail
    )
    # An entry of an earlier attempt does not count.
    older = (AttemptError(0, NOW, "NewerJobVersion: x"),)
    assert isinstance(
        decide_newer(active({}, errors=older, started_at=NOW + UNKNOWN_GRACE), 2, 1), SnoozeFor
    )


async def _run(record: JobRecord, definition: Any) -> Any:
    registry = HandlerRegistry()
    seen: list[Any] = []

    async def handler(payload: Any, ctx: JobContext) -> None:
        seen.append(payload)

    registry.add(definition, handler)
    ctx = JobContext(
        job_id=record.id,
        job_name=record.name,
        queue=record.queue,
        attempt=record.attempt,
        max_attempts=record.max_attempts,
        enqueued_at=datetime.fromtimestamp(NOW, UTC),
        worker_id="w",
        logger=logging.LoggerAdapter(logging.getLogger("test")),
    )
    outcome = await execute(record, registry, ctx, lambda: None, max_result_bytes=1000)
    return outcome, seen


async def test_the_executor_upgrades_older_payloads_and_hands_newer_ones_back() -> None:
    v2 = job("crm.contact", Contact, version=2, upgrade=split_name)
    outcome, seen = await _run(active({"name": "Ada Lovelace"}), v2)
    assert isinstance(outcome, Succeeded)
    assert seen == [Contact(first_name="Ada", last_name="Lovelace")]
    outcome, seen = await _run(active({"first_name": "A", "last_name": "B"}, 2), v2)
    assert isinstance(outcome, Succeeded) and seen == [Contact(first_name="A", last_name="B")]
    outcome, seen = await _run(active({"first_name": "A", "last_name": "B", "x": 1}, 3), v2)
    assert outcome == NewerVersion(3, 2) and seen == []
    garbled = active({"name": "Ada"}, headers='{"conveyor-version":"soon"}')
    outcome, seen = await _run(garbled, v2)
    assert isinstance(outcome, Errored) and outcome.permanent and "'soon'" in outcome.error


async def test_an_upgrade_that_fails_fails_only_its_job_for_good() -> None:
    def broken(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no name")

    v2 = job("crm.contact", Contact, version=2, upgrade=broken)
    outcome, seen = await _run(active({"name": "Ada"}), v2)
    assert isinstance(outcome, Errored) and outcome.permanent and seen == []
    assert outcome.error.startswith("PayloadValidationError: invalid payload for job 'crm.contact'")
    assert "ValueError: no name" in outcome.error and "version 1 to version 2" in outcome.error
    transition = decide(outcome, active({}), backoff=DEFAULT_BACKOFF, rng=random.Random(1))
    assert isinstance(transition, Fail)


def test_a_cron_fire_records_the_version_that_encoded_its_payload() -> None:
    """A schedule's payload is encoded once by the worker's definition: its jobs carry that
    version, so a later worker with a newer definition upgrades them, and this one does not."""
    from conveyor.core.schedule import Timetable
    from conveyor.runtime.scheduler import declare

    v2 = job("crm.contact", Contact, version=2, upgrade=split_name)
    schedule = declare(
        Timetable.every(60),
        v2,
        Contact(first_name="Ada", last_name="Lovelace"),
        name=None,
        catch_up="skip",
        overlap="allow",
        max_payload_bytes=1000,
        taken=(),
    )
    fired = schedule.fire(NOW_TICK).job
    assert fired.headers == encode_headers({VERSION_HEADER: "2"})
    plain = declare(
        Timetable.every(60),
        job("crm.plain", Contact),
        Contact(first_name="A", last_name="B"),
        name=None,
        catch_up="skip",
        overlap="allow",
        max_payload_bytes=1000,
        taken=(),
    )
    assert plain.fire(NOW_TICK).job.headers is None  # version 1, no secret: nothing stored


NOW_TICK = int(NOW)


@pytest.mark.parametrize("version", [0, True, "2", MAX_VERSION + 1])
async def test_enqueue_by_name_refuses_a_version_out_of_range(version: Any) -> None:
    queue = Queue.from_url(f"memory://{uuid.uuid4().hex}")
    try:
        with pytest.raises(InvalidArgument, match="version must be a whole number"):
            await queue.enqueue_by_name("crm.contact", {}, queue="default", version=version)
        assert sum((await queue.counts()).values()) == 0
    finally:
        await queue.close()


async def test_enqueue_by_name_records_the_version_it_is_given() -> None:
    queue = Queue.from_url(f"memory://{uuid.uuid4().hex}")
    try:
        plain = await queue.enqueue_by_name("crm.contact", {"name": "A"}, queue="default")
        newer = await queue.enqueue_by_name("crm.contact", {}, queue="default", version=3)
        plain_info, newer_info = await queue.get(plain.id), await queue.get(newer.id)
        assert plain_info is not None and VERSION_HEADER not in plain_info.headers
        assert newer_info is not None and newer_info.headers[VERSION_HEADER] == "3"
    finally:
        await queue.close()
