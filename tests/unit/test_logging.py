"""The two renderings of lifecycle records: key=value text for people, JSON lines for machines."""

from __future__ import annotations

import json
import logging

import pytest

from conveyor._logging import HumanFormatter, JsonFormatter, configure_logging


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "conveyor.worker", logging.WARNING, __file__, 1, "job retrying", (), None
    )
    rec.__dict__.update(fields)
    return rec


FIELDS = {
    "event": "retrying",
    "job_name": "email.send",
    "job_id": "invite:42",
    "queue": "default",
    "attempt": 2,
    "max_attempts": 3,
    "duration": 0.01234,
    "error": "ConnectionError: 503\nTraceback (most recent call last):\n  ...",
}


def test_human_lines_carry_the_fields_and_only_the_errors_first_line() -> None:
    line = HumanFormatter().format(record(**FIELDS))
    assert "WARNING" in line and "job retrying" in line
    for part in (
        "job_name=email.send",
        "job_id=invite:42",
        "attempt=2",
        "max_attempts=3",
        "duration=0.012s",
        "error=ConnectionError: 503",
    ):
        assert part in line
    assert "Traceback" not in line
    assert "event=" not in line  # the message already says it


def test_json_lines_are_one_object_with_every_field() -> None:
    body = json.loads(JsonFormatter().format(record(**FIELDS)))
    assert body["message"] == "job retrying"
    assert body["level"] == "warning"
    assert body["logger"] == "conveyor.worker"
    assert {k: body[k] for k in FIELDS} == FIELDS  # the full error, traceback included


def test_a_record_without_job_fields_still_renders() -> None:
    plain = logging.LogRecord("conveyor", logging.INFO, __file__, 1, "worker started", (), None)
    assert HumanFormatter().format(plain).endswith("worker started")
    assert json.loads(JsonFormatter().format(plain))["message"] == "worker started"


@pytest.mark.parametrize(("fmt", "formatter"), [("human", HumanFormatter), ("json", JsonFormatter)])
def test_configure_logging_installs_one_handler(fmt: str, formatter: type) -> None:
    logger = logging.getLogger("conveyor")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        configure_logging("debug", fmt)
        configure_logging("debug", fmt)  # idempotent: no duplicate lines
        assert len(logger.handlers) == 1
        assert isinstance(logger.handlers[0].formatter, formatter)
        assert logger.level == logging.DEBUG
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
