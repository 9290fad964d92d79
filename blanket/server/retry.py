"""The retry policy: failed, timed-out and lost attempts run again while retries remain,
after retry_delay doubled at each attempt (capped)."""

from __future__ import annotations

from blanket.models import Task, TaskState

RETRYABLE = frozenset({TaskState.FAILED, TaskState.TIMEDOUT, TaskState.LOST})
MAX_BACKOFF = 3600.0


def retry_at(task: Task, outcome: TaskState, now: float) -> float | None:
    """When the next attempt may start, or None when the task has had its last one."""
    if outcome not in RETRYABLE or task.attempt > task.retries:
        return None
    return now + backoff(task)


def backoff(task: Task) -> float:
    """How long the attempt after the task's current one waits."""
    return min(MAX_BACKOFF, task.retry_delay * 2 ** (task.attempt - 1))
