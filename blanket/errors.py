"""Errors a user can cause, each carrying an HTTP status and a message that says what to fix."""

from __future__ import annotations

import errno
from pathlib import Path

SQLITE_FULL = 13  # sqlite3.Error.sqlite_errorcode of "database or disk is full"

class BlanketError(Exception):
    """An error caused by input; `message` tells the user what to change."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(BlanketError):
    status = 400
    code = "invalid"


class NotFound(BlanketError):
    status = 404
    code = "not_found"


class ItemsRefused(InvalidInput):
    """A request of many items refused whole: `problems` holds (index, what to fix) for every
    item that is wrong (the first MAX_LISTED of them)."""

    MAX_LISTED = 100

    def __init__(self, problems: list[tuple[int, str]], what: str = "task"):
        listed = problems[:self.MAX_LISTED]
        first = listed[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"nothing was stored: {what} {first[0]}: {first[1]}{more}")
        self.problems = listed
        self.count = len(problems)

    def to_json(self) -> dict:
        data = super().to_json()
        data["error"]["items"] = [{"index": i, "message": m} for i, m in self.problems]
        data["error"]["refused"] = self.count
        return data


class Conflict(BlanketError):
    status = 409
    code = "conflict"


class StaleAttempt(Conflict):
    """A report from an attempt that is no longer the task's current one."""

    status = 409
    code = "stale_attempt"


class StorageFull(BlanketError):
    """The disk holding blanket's data has no room left: 507, saying where."""

    status = 507
    code = "disk_full"

    @classmethod
    def at(cls, where: Path | str, detail: str = "") -> StorageFull:
        return cls(f"the disk holding {where} is full{detail}; nothing was stored. Free space "
                   "there (remove finished tasks with `blanket rm`, or their folders under "
                   "tasks/), then try again: blanket takes work again by itself")


class StorageFailed(BlanketError):
    """The disk would not confirm a write (fsync failed): 503, nothing acknowledged."""

    status = 503
    code = "storage_failed"


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a full disk or quota: OSError ENOSPC/EDQUOT, or SQLITE_FULL."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(error, "sqlite_errorcode", None) == SQLITE_FULL


class DuplicateTask(Exception):
    """A task with this dedupe key exists already (not a user's mistake: the caller answers
    with the task that holds the key)."""

    def __init__(self, task_id: int):
        super().__init__(f"already submitted as task {task_id}")
        self.task_id = task_id


class KeyReused(BlanketError):
    """A client's Idempotency-Key sent again with a different request than the one that made
    task `task_id` (server/idempotency.py): refused, never answered as if the same."""

    status = 422
    code = "idempotency_key_reused"

    def __init__(self, task_id: int):
        super().__init__(
            f"this Idempotency-Key was sent before with a different request (it made task "
            f"{task_id}); send a new request with a new key, or this key with the first "
            "request to be answered its task(s) again")
        self.task_id = task_id


def same_request(task_id: int, first: str | None, fingerprint: str | None) -> None:
    """KeyReused unless the request that made task `task_id` with a key (its `first`
    fingerprint) and the one now sent with it (`fingerprint`) are the same, as far as known
    (a key stored without a fingerprint, or a request without one, is taken as the same)."""
    if first is not None and fingerprint is not None and first != fingerprint:
        raise KeyReused(task_id)
