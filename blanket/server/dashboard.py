"""What the web page's dashboard shows, in one answer: tasks by state, the tasks that ended
in the last hour or day by type and by state, how many ended each minute of the last hour
and how long those had waited queued,
the tasks running by type, workers by state, and how many queued tasks no worker that is
up can take."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from blanket.models import TaskFilter, TaskState, Worker
from blanket.server.tasksview import TasksView
from blanket.server.waiting import WaitReasons

WINDOWS = {"hour": 3600.0, "day": 86400.0}
QUEUED_EXPLAINED = 500  # the oldest queued tasks looked at for the no-worker count
RUNNING_LISTED = 10_000  # running tasks counted by type


def summary(tasks: TasksView, workers: Callable[[], list[Worker]], waiting: WaitReasons,
            window: str = "hour", now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    span = WINDOWS[window]
    since = now - span
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    per_minute: Counter[int] = Counter()
    waited: Counter[int] = Counter()  # seconds queued, summed, of tasks that started
    started: Counter[int] = Counter()
    hour_ago = int((now - 3600) // 60)
    for type_name, state, minute, count, wait, ran in tasks.ended_since(
            min(since, now - 3600)):
        if minute * 60 >= since - 60:
            by_type[type_name][state] += count
        if minute > hour_ago:
            per_minute[minute] += count
            waited[minute] += wait
            started[minute] += ran
    first = hour_ago + 1
    queued = tasks.list(TaskFilter(states=(TaskState.QUEUED.value,), limit=QUEUED_EXPLAINED,
                                   oldest_first=True))
    stuck = Counter(reason.code for reason in waiting.explain(queued).values())
    running = Counter(t.type for t in tasks.list(TaskFilter(
        states=(TaskState.CLAIMED.value, TaskState.RUNNING.value), limit=RUNNING_LISTED)))
    return {
        "window": window, "since": since,
        "states": {state.value: count for state, count in tasks.count_by_state().items()},
        "ended_by_type": {name: dict(counts) for name, counts in sorted(by_type.items())},
        "running_by_type": dict(sorted(running.items())),
        "ended_per_minute": [[(first + i) * 60, per_minute.get(first + i, 0)]
                             for i in range(60)],
        # the mean time queued of the tasks that ended in each minute (None: none started)
        "queue_wait_per_minute": [
            [(first + i) * 60, round(waited[first + i] / started[first + i], 3)
             if started.get(first + i) else None] for i in range(60)],
        "workers": dict(Counter(w.state for w in workers())),
        # of the oldest queued tasks: those no worker that is up can take, and those whose
        # type's file has problems (held until it is fixed)
        "queued_no_worker": stuck["no_worker"],
        "queued_type_broken": stuck["type_broken"],
    }
