"""A client's Idempotency-Key: sent again with the same request, it is answered with what the
first one made; sent with a different request, it is refused (422, as the IETF draft on the
header says), never taken for the same. A request's fingerprint is kept with its key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from blanket.errors import same_request
from blanket.store.base import Store

if TYPE_CHECKING:
    from blanket.server.intake import Intake


def fingerprint(data: Any, uploads: Sequence[Any] = ()) -> str:
    """A hash of a request as the server read it: its JSON (keys in any order, any spacing)
    and the name and size of each uploaded file (a multipart body's boundary, which differs
    each time it is sent, is not part of it)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    for upload in uploads:
        digest.update(b"\0" + upload.name.encode("utf-8", "surrogatepass") + b"\0"
                      + str(_size(upload.source)).encode())
    return digest.hexdigest()[:32]


def _size(source: BinaryIO | Path) -> int:
    if isinstance(source, Path):
        return source.stat().st_size
    position = source.tell()
    size = source.seek(0, 2)
    source.seek(position)
    return size


def first_use(store: Store, key: str, fingerprint: str | None) -> int | None:
    """The task made by the first request with dedupe key `key`, if there was one; KeyReused
    if that request was not this one. (The store checks again as it stores a task: this is
    the early answer, before anything is checked or staged.)"""
    entry = store.key_entry(key)
    if entry is None:
        return None
    same_request(entry[0], entry[1], fingerprint)
    return entry[0]


def list_keys(intake: Intake, key: str, count: int) -> list[str]:
    """The dedupe keys of the places of a list sent with `key` (its caller's): one a place,
    so the same list sent again is found, the first place's the key itself, as a single
    submission's (the other kind sent with it is another request, refused). A list stored
    before the first place took the bare key has it as `key:0`, and keeps it."""
    first = key if intake.task_for_key(f"{key}:0") is None else f"{key}:0"
    return [first] + [f"{key}:{index}" for index in range(1, count)]
