"""Payload and result encoding. JSON only, validated by the definition's pydantic model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from conveyor._errors import PayloadTooLarge, PayloadValidationError
from conveyor.core.secrets import reveal_secrets

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

M = TypeVar("M", bound=BaseModel)


def encode_payload(name: str, model: type[BaseModel], payload: BaseModel, limit: int) -> bytes:
    """Validate ``payload`` as ``model`` and encode it; refuse it over ``limit`` bytes.

    The JSON uses field aliases, as the model's own JSON does, and is validated exactly as
    :func:`decode_payload` will validate it in the worker: what is stored is known to decode.
    """
    if not isinstance(payload, model):
        raise PayloadValidationError(
            name, f"expected an instance of {model.__name__}, got {type(payload).__name__}"
        )
    try:
        data = reveal_secrets(payload, payload.model_dump_json(by_alias=True).encode())
    except PydanticSerializationError as exc:
        raise PayloadValidationError(name, f"payload cannot be encoded as JSON: {exc}") from exc
    # Re-validate: a model built with model_construct() or mutated after creation skipped checks.
    decode_payload(name, model, data)
    return check_size(name, data, limit)


def encode_untyped_payload(
    name: str, payload: Mapping[str, Any] | str | bytes, limit: int
) -> bytes:
    """Encode a payload for ``enqueue_by_name``: a mapping, or a JSON object as text/bytes."""
    if isinstance(payload, str | bytes):
        try:
            # NaN/Infinity are not JSON: refuse them here as json.dumps does for a mapping below.
            decoded = json.loads(payload, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise PayloadValidationError(name, f"payload is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise PayloadValidationError(name, "payload must be a JSON object")
        data = payload.encode() if isinstance(payload, str) else payload
    else:
        try:
            data = json.dumps(dict(payload), separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise PayloadValidationError(name, f"payload is not JSON-serializable: {exc}") from exc
    return check_size(name, data, limit)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_size(name: str, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise PayloadTooLarge(name, len(data), limit)
    return data


def decode_payload(name: str, model: type[M], data: bytes) -> M:
    """Parse and validate stored payload bytes (by alias, as encoded); raise
    :class:`PayloadValidationError`."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise PayloadValidationError(name, _describe(exc)) from exc


# Longer texts (a ``Retry("...")`` message holding a whole response body) keep their head and
# tail: the start says what failed, the end where.
MAX_TEXT_CHARS = 16_000


def writable_text(text: str) -> str:
    """``text`` as every backend can store it: valid UTF-8 without NUL characters, at most
    about :data:`MAX_TEXT_CHARS` characters.

    A lone surrogate (what ``os.fsdecode`` gives for a file name that is not UTF-8) becomes its
    ``\\udcXX`` escape and a NUL becomes ``\\x00``, so an error message quoting such a name
    stays readable and can always be written."""
    if len(text) > MAX_TEXT_CHARS:
        half = MAX_TEXT_CHARS // 2
        text = (
            f"{text[:half]}\n... ({len(text) - 2 * half} characters left out) ...\n{text[-half:]}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _describe(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "<payload>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
