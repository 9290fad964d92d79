"""The queue's order: lower score runs first.

score = minute the task becomes runnable + max(1, estimate minutes // weight) - priority,
so short and heavy-weighted tasks move ahead and every task ages to the front. A task that
waits for a start date is priced from that date. A submission held open with `?wait` goes
ahead of everything queued normally.
"""

from __future__ import annotations

import statistics

FRONT = 10_000_000  # minutes (19 years): more than any score difference between normal tasks


def task_score(runnable_at: float, estimate: float | None, weight: int = 1, priority: int = 0,
               front: bool = False) -> float:
    """The score of a task runnable at `runnable_at` (Unix seconds); estimate in seconds."""
    minutes = int(estimate // 60) if estimate else 0
    score = int(runnable_at // 60) + max(1, minutes // max(1, weight)) - priority
    return float(score - FRONT if front else score)


def estimate_from_history(durations: list[float]) -> float | None:
    """The median of recent successful run times, or None without history."""
    return statistics.median(durations) if durations else None
