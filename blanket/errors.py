"""Errors a user can cause, each carrying an HTTP status and a message that says what to fix."""

from __future__ import annotations


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


class Conflict(BlanketError):
    status = 409
    code = "conflict"


class StaleAttempt(Conflict):
    """A report from an attempt that is no longer the task's current one."""

    status = 409
    code = "stale_attempt"
