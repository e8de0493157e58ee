"""Secret payload fields: stored whole for the handler, shown redacted everywhere else.

Pydantic writes a ``SecretStr`` as ``"**********"`` in JSON, so a payload encoded the ordinary
way would reach its handler without the secret. :func:`reveal_secrets` puts the real values
back into the payload's JSON; :func:`secret_paths` names where they are, which travels with the
job in the ``conveyor-secrets`` header so that every reader (the dashboard, ``conveyor jobs
show``, the logs) can hide them without importing the job's definition.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from pydantic import BaseModel, SecretBytes, SecretStr

from conveyor.core.headers import SECRETS_HEADER

REDACTED: Final = "**********"
ANY: Final = "*"  # a path step that matches every item of a list or every value of a mapping

# A step is a JSON key (with the attribute name it comes from) or ANY.
_Step = tuple[str, str] | str
_Path = tuple[_Step, ...]

_MAX_DEPTH = 8  # nested models deeper than this are not searched (and self-references end)


@functools.cache
def _paths(model: type[BaseModel]) -> tuple[_Path, ...]:
    found: list[_Path] = []
    _search(model, (), found, 0)
    return tuple(dict.fromkeys(found))  # a union of two secret types names its path once


def _search(model: type[BaseModel], prefix: _Path, found: list[_Path], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    for attr, info in model.model_fields.items():
        key = info.serialization_alias or info.alias or attr
        _search_type(info.annotation, (*prefix, (key, attr)), found, depth)


def _search_type(tp: Any, path: _Path, found: list[_Path], depth: int) -> None:
    if tp in (SecretStr, SecretBytes):
        found.append(path)
        return
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        _search(tp, path, found, depth + 1)
        return
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        _search_type(args[0], path, found, depth)
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            _search_type(arg, path, found, depth)
    elif origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, list | tuple | set | frozenset)
    ):
        for arg in args:
            if arg is not Ellipsis:
                _search_type(arg, (*path, ANY), found, depth)
    elif len(args) == 2 and (
        origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping))
    ):
        _search_type(args[1], (*path, ANY), found, depth)


def secret_paths(model: type[BaseModel]) -> list[list[str]]:
    """Where ``model``'s JSON holds secret values, as lists of keys (``"*"``: any item)."""
    return [[s if isinstance(s, str) else s[0] for s in path] for path in _paths(model)]


def secrets_header(model: type[BaseModel]) -> dict[str, str]:
    """The ``conveyor-secrets`` header for a job of ``model`` (empty when it has no secret)."""
    text = _secrets_text(model)
    return {} if text is None else {SECRETS_HEADER: text}


@functools.cache
def _secrets_text(model: type[BaseModel]) -> str | None:
    # Once per model: every enqueue of it carries the same header.
    paths = secret_paths(model)
    return json.dumps(paths, separators=(",", ":")) if paths else None


def reveal_secrets(payload: BaseModel, data: bytes) -> bytes:
    """``data`` (``payload``'s ordinary JSON, secrets masked) with the real secret values put
    back; ``data`` unchanged when the model has no secret field."""
    paths = _paths(type(payload))
    if not paths:
        return data
    document = json.loads(data)
    for path in paths:
        _put(payload, document, path)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _put(source: Any, target: Any, path: _Path) -> None:
    if source is None or target is None:
        return
    step, rest = path[0], path[1:]
    if isinstance(step, str):  # ANY
        pairs: list[tuple[Any, str | int]]
        if isinstance(source, Mapping) and isinstance(target, dict):
            items = cast(Mapping[str, Any], source)
            doc = cast(dict[str, Any], target)
            pairs = [(items[k], k) for k in items if k in doc]
        elif isinstance(source, list | tuple) and isinstance(target, list):
            seq = cast(Sequence[Any], source)
            doc_items: list[Any] = target  # pyright: ignore[reportUnknownVariableType]
            pairs = [(seq[i], i) for i in range(min(len(seq), len(doc_items)))]
        else:
            return  # a set's order is not its JSON's: its secrets stay masked
        for item, where in pairs:
            _put_at(item, target, where, rest)
        return
    key, attr = step
    if isinstance(target, dict) and key in target:
        _put_at(getattr(source, attr, None), target, key, rest)


def _put_at(value: Any, target: Any, where: Any, rest: _Path) -> None:
    if rest:
        _put(value, target[where], rest)
    elif isinstance(value, SecretStr):
        target[where] = value.get_secret_value()
    elif isinstance(value, SecretBytes):
        target[where] = value.get_secret_value().decode("utf-8", "surrogateescape")


def redact(document: Any, headers: Mapping[str, str]) -> Any:
    """A copy of the decoded payload ``document`` with the values its ``conveyor-secrets``
    header names replaced by ``**********``; never raises."""
    paths = _header_paths(headers.get(SECRETS_HEADER))
    if not paths:
        return document
    copy = json.loads(json.dumps(document))
    for path in paths:
        _mask(copy, path)
    return copy


def redacted_payload(payload: bytes, headers: Mapping[str, str]) -> str:
    """The payload ``payload`` as indented JSON text, its secrets redacted (see :func:`redact`);
    a payload that is not JSON comes back as text, as it is."""
    try:
        document = json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")
    return json.dumps(redact(document, headers), indent=2, ensure_ascii=False)


def _header_paths(text: str | None) -> list[list[str]]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [
        [str(s) for s in p]  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        for p in value  # pyright: ignore[reportUnknownVariableType]
        if isinstance(p, list) and p
    ]


def _mask(node: Any, path: list[str]) -> None:
    step, rest = path[0], path[1:]
    if isinstance(node, dict):
        doc = cast(dict[str, Any], node)
        for key in list(doc) if step == ANY else [step] if step in doc else []:
            if rest:
                _mask(doc[key], rest)
            elif doc[key] is not None:
                doc[key] = REDACTED
    elif isinstance(node, list) and step == ANY:
        items: list[Any] = node  # pyright: ignore[reportUnknownVariableType]
        for i, item in enumerate(items):
            if rest:
                _mask(item, rest)
            elif item is not None:
                items[i] = REDACTED
