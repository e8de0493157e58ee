"""Versions and upgrade functions of the wrong shape."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from conveyor import Queue, job


class Contact(BaseModel):
    first_name: str


def data_only(data: dict[str, Any]) -> dict[str, Any]:
    return data


def returns_nothing(from_version: int, data: dict[str, Any]) -> None:
    data.clear()


def returns_a_list(from_version: int, data: dict[str, Any]) -> list[Any]:
    return [data]


def version_as_text(from_version: str, data: dict[str, Any]) -> dict[str, Any]:
    return data


# expect: mypy=arg-type pyright=reportArgumentType
one_argument = job("crm.a", Contact, version=2, upgrade=data_only)
# expect: mypy=arg-type pyright=reportArgumentType
no_result = job("crm.b", Contact, version=2, upgrade=returns_nothing)
# expect: mypy=arg-type pyright=reportArgumentType
a_list = job("crm.c", Contact, version=2, upgrade=returns_a_list)
# expect: mypy=arg-type pyright=reportArgumentType
text_version = job("crm.d", Contact, version=2, upgrade=version_as_text)
# expect: mypy=call-overload pyright=reportArgumentType
version_text = job("crm.e", Contact, version="2")


async def enqueue(queue: Queue) -> None:
    # expect: mypy=arg-type pyright=reportArgumentType
    await queue.enqueue_by_name("crm.a", {"first_name": "A"}, version="2")
