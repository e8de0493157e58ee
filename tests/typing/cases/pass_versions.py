"""A definition with a version and an upgrade for payloads of older versions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from conveyor import JobDef, Queue, SyncQueue, job


class Contact(BaseModel):
    first_name: str
    last_name: str


def split_name(from_version: int, data: dict[str, Any]) -> dict[str, Any]:
    first, _, last = str(data.pop("name")).partition(" ")
    return {**data, "first_name": first, "last_name": last}


def from_mapping(from_version: int, data: Mapping[str, Any]) -> dict[str, str]:
    return {"first_name": str(data["name"]), "last_name": ""}


contact = job("crm.contact", Contact, result=str, version=2, upgrade=split_name)
also: JobDef[Contact, None] = job("crm.other", Contact, version=3, upgrade=from_mapping)
inline = job("crm.inline", Contact, version=2, upgrade=lambda v, d: {**d, "last_name": ""})
unchanged = job("crm.plain", Contact, version=4)

version: int = contact.version


async def enqueue(queue: Queue, sync: SyncQueue) -> None:
    await queue.enqueue_by_name("crm.contact", {"first_name": "A", "last_name": "B"}, version=2)
    sync.enqueue_by_name("crm.contact", {"name": "A B"}, version=1)
