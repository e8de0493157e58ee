"""Payload versions: a job remembers which version of its definition enqueued it.

During a rolling deploy, producers and workers of two versions of a definition share a queue.
A definition declares ``version=N`` when its payload changes shape in a way the model cannot
absorb by itself (an optional field or an alias needs no version), and an ``upgrade`` function
that turns a payload of an older version into the current shape. The producer's version
travels with the job in the ``conveyor-version`` header, written only above 1, so a job of a
definition that never changed stores nothing extra, and a job without the header (enqueued
before versions existed, or by name) is of version 1.

The worker reads the version before it validates the payload: an older payload is upgraded
first; a newer one (an old worker met a job of a newer producer) is handed back for a worker
that has the newer definition, as a job of an unknown name is (:mod:`conveyor.core.unknown`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast

from pydantic import BaseModel

from conveyor._errors import InvalidArgument, PayloadValidationError
from conveyor.core.serialization import decode_payload

VERSION_HEADER: Final = "conveyor-version"
# Versions count deploys that changed a payload's shape: a cap keeps a typo (a timestamp, a
# build number) from passing as one.
MAX_VERSION: Final = 10_000

M = TypeVar("M", bound=BaseModel)

# ``upgrade(from_version, data)``: the payload enqueued by ``from_version`` as a JSON object,
# returned in the current version's shape.
Upgrade = Callable[[int, dict[str, Any]], dict[str, Any]]


class PayloadUpgradeError(PayloadValidationError):
    """A definition's ``upgrade`` function raised, or did not return a JSON object."""


def check_version(
    version: object, what: str, *, error: type[InvalidArgument] = InvalidArgument
) -> int:
    """``version`` if it is a whole number from 1 to :data:`MAX_VERSION` (not a bool)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise error(f"{what} must be a whole number from 1 to {MAX_VERSION}, got {version!r}")
    return version


def version_header(version: int) -> dict[str, str]:
    """The header recording ``version`` on a job (empty for version 1, the default)."""
    return {} if version == 1 else {VERSION_HEADER: str(version)}


def stored_version(headers: Mapping[str, str]) -> int | None:
    """The version of the definition that enqueued a job with ``headers`` (1 without the
    header), or None if the header holds something else than a version (a hand-edited store)."""
    text = headers.get(VERSION_HEADER)
    if text is None:
        return 1
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_VERSION)):
        return None
    version = int(text)
    return version if 1 <= version <= MAX_VERSION else None


def decode_versioned(
    name: str,
    model: type[M],
    data: bytes,
    *,
    stored: int,
    current: int,
    upgrade: Upgrade | None,
) -> M:
    """The payload ``data``, enqueued by version ``stored`` of the definition, as the current
    version's ``model``: upgraded first when ``stored`` is older and there is an ``upgrade``.

    Raises :class:`PayloadValidationError` (:class:`PayloadUpgradeError` when the upgrade
    function fails), whose message names the job and both versions."""
    if stored >= current or upgrade is None:
        return decode_payload(name, model, data)
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise PayloadValidationError(name, f"the stored payload is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PayloadValidationError(name, "the stored payload is not a JSON object")
    where = f"upgrading a payload of version {stored} to version {current}"
    try:
        upgraded = cast(object, upgrade(stored, cast(dict[str, Any], value)))
    except Exception as exc:
        raise PayloadUpgradeError(
            name, f"its upgrade function raised {type(exc).__name__}: {exc} ({where})"
        ) from exc
    if not isinstance(upgraded, dict):
        _discard(upgraded)
        raise PayloadUpgradeError(
            name,
            f"its upgrade function returned {type(upgraded).__name__}, not a dict ({where})",
        )
    try:
        # Back to JSON, so the upgraded payload is validated exactly as a stored one is.
        text = json.dumps(upgraded, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise PayloadUpgradeError(
            name, f"its upgrade function returned a dict that is not JSON: {exc} ({where})"
        ) from exc
    try:
        return decode_payload(name, model, text)
    except PayloadValidationError as exc:
        raise PayloadValidationError(name, f"{exc.detail} (after {where})") from exc


def _discard(value: object) -> None:
    """Close a coroutine an upgrade returned (nobody will await it), so Python does not warn."""
    close = getattr(value, "close", None)
    if inspect.iscoroutine(value) and callable(close):
        close()
