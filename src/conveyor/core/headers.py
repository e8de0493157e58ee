"""Job headers: small text metadata that travels with a job from producer to handler.

Stored as one JSON object of text to text (``NewJob.headers``), which drivers keep verbatim.
Conveyor's own keys start with ``conveyor-``; the W3C trace context keys (``traceparent``,
``tracestate``, ``baggage``) carry a producer's span to the worker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, cast

from conveyor._errors import InvalidArgument

# Headers are metadata, not a second payload: a cap keeps every read of a job small.
MAX_HEADERS_BYTES: Final = 8192

# The JSON list of dotted payload paths whose values are secrets (``SecretStr``/``SecretBytes``
# fields): what the dashboard, ``conveyor jobs show`` and the logs show redacted.
SECRETS_HEADER: Final = "conveyor-secrets"


def encode_headers(headers: Mapping[str, str]) -> str | None:
    """``headers`` as stored (None when empty): compact JSON, keys sorted, so the same headers
    give the same text. Raises :class:`InvalidArgument` naming the header that is not text,
    or when the whole is over :data:`MAX_HEADERS_BYTES`."""
    if not headers:
        return None
    for key, value in cast(Mapping[object, object], headers).items():
        if not isinstance(key, str) or not key or "\x00" in key:
            raise InvalidArgument(f"a job header name must be non-empty text, got {key!r}")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidArgument(f"job header {key!r} must be text without NUL, got {value!r}")
    text = json.dumps(dict(headers), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_HEADERS_BYTES:
        raise InvalidArgument(
            f"job headers take {size} bytes, over the limit of {MAX_HEADERS_BYTES}: "
            f"keep them to small metadata (names: {', '.join(sorted(headers))})"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"job headers must be valid UTF-8 text: {exc}") from exc
    return text


def decode_headers(text: str | None) -> dict[str, str]:
    """The headers stored as ``text``; never raises: what is not a JSON object of text to text
    (a store edited by hand) reads as no headers, or without its odd entries."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}  # pyright: ignore[reportUnknownVariableType]


def merged(base: str | None, extra: Mapping[str, str]) -> str | None:
    """``base`` (stored headers) with ``extra`` set over it."""
    if not extra:
        return base
    return encode_headers({**decode_headers(base), **extra})
