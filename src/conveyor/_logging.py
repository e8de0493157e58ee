"""Structured lifecycle logs: one line per event, with the job's name, id, attempt and timing.

Fields travel in ``LogRecord`` attributes so any stdlib handler can use them; the two formatters
here render them as ``key=value`` text for people or as one JSON object per line for machines.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS = (
    "event",
    "job_name",
    "job_id",
    "queue",
    "attempt",
    "max_attempts",
    "duration",
    "outcome",
    "run_at",
    "error",
    "worker_id",
    "progress",
    # the outbox relay's batches
    "moved",
    "duplicates",
    "set_aside",
    "lag_ms",
    # the dashboard's actions
    "action",
    "user",
    "client",
    # the --processes supervisor's worker processes
    "child",
    "pid",
    "exit_status",
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        parts = [f"{stamp} {record.levelname:<7} {record.getMessage()}"]
        for key, value in _fields(record).items():
            if key == "event":
                continue
            if key == "duration" and isinstance(value, float):
                value = f"{value:.3f}s"
            if key == "error" and isinstance(value, str):
                value = value.splitlines()[0] if value else value
            parts.append(f"{key}={value}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(_fields(record))
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str = "INFO", fmt: str = "human") -> None:
    """Install one stderr handler on the ``conveyor`` logger (used by the CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    logger = logging.getLogger("conveyor")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
