"""Why a queued task waits, in words an operator can act on: its start date is still to
come, no worker that is up has its tags (the task would wait for ever: start one, or fix
the tags), the workers that have them are paused, its type is at its max_concurrent, or it
is next in line for a worker that is busy."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from blanket.models import Task, TaskFilter, TaskState, Worker

AWAY = frozenset({"lost", "gone", "stopping"})  # workers that will take nothing
WORKERS_FRESH = 1.0  # seconds the list of workers is reused: every submission explains its task


@dataclass(frozen=True)
class Waiting:
    code: str  # not_before | no_worker | paused | max_concurrent | busy
    message: str
    ahead: int | None = None  # queued tasks before it, when asked for

    def to_json(self) -> dict[str, object]:
        shown: dict[str, object] = {"code": self.code, "message": self.message}
        if self.ahead is not None:
            shown["ahead"] = self.ahead
        return shown


class WaitReasons:
    """Explains queued tasks, reading the workers and the running counts once per call."""

    def __init__(self, workers: Callable[[], list[Worker]], limits: Callable[[], dict[str, int]],
                 running: Callable[[str], int], clock: Callable[[], float] = time.time,
                 ahead: Callable[[Task], int] | None = None,
                 held: Callable[[], frozenset[str]] = frozenset):
        self.workers = workers  # every registered worker, as shown (lost when silent)
        self.limits = limits  # max_concurrent of each capped type
        self.running = running  # tasks of a type claimed or running now
        self.clock = clock
        self.ahead = ahead  # queued tasks before this one in line (a count query)
        self.held = held  # types with no good definition: their tasks wait for a fix
        self._workers: tuple[float, list[Worker]] | None = None  # (read at, the list)

    def _up(self, now: float) -> list[Worker]:
        """The workers that may take tasks, read at most every WORKERS_FRESH seconds."""
        cached = self._workers
        if cached is None or not 0 <= now - cached[0] < WORKERS_FRESH:
            cached = (now, [w for w in self.workers() if w.state not in AWAY])
            self._workers = cached
        return cached[1]

    def explain(self, tasks: Sequence[Task], place_in_line: bool = False
                ) -> dict[int, Waiting]:
        """Why each queued task of `tasks` waits, by id (others are left out); with
        `place_in_line`, one waiting for a free worker also says how many are ahead of it
        (a query each: for one task's answer, not for lists)."""
        reasons = {t.id: _after(t) for t in tasks if t.state == TaskState.WAITING}
        queued = [t for t in tasks if t.state == TaskState.QUEUED]
        if not queued:
            return reasons
        now = self.clock()
        up = self._up(now)
        limits = self.limits()
        held = self.held()
        running: dict[str, int] = {}
        for task in queued:
            reason = _held(task.type) if task.type in held else \
                self._why(task, now, up, limits, running)
            if place_in_line and reason.code == "busy" and self.ahead is not None:
                count = self.ahead(task)
                reason = Waiting("busy", f"{reason.message}, behind {count} queued "
                                         f"task{'s' if count != 1 else ''}", ahead=count)
            reasons[task.id] = reason
        return reasons

    def _why(self, task: Task, now: float, up: list[Worker], limits: dict[str, int],
             running: dict[str, int]) -> Waiting:
        if task.not_before is not None and task.not_before > now:
            when = datetime.fromtimestamp(task.not_before, UTC)
            return Waiting("not_before", f"starts no earlier than {when.isoformat()}")
        needed = set(task.tags)
        able = [w for w in up if needed <= set(w.tags)]
        if not able:
            wanted = ", ".join(sorted(needed)) if needed else "none"
            return Waiting("no_worker", f"no worker that is up has the tags it needs "
                                        f"({wanted}): start one with "
                                        f"blanket worker -t {','.join(sorted(needed)) or '...'}"
                                        ", or change the task's tags")
        if all(w.state == "paused" for w in able):
            return Waiting("paused", f"every worker with its tags is paused "
                                     f"({', '.join(sorted(w.id for w in able))})")
        cap = limits.get(task.type)
        if cap is not None:
            if task.type not in running:
                running[task.type] = self.running(task.type)
            if running[task.type] >= cap:
                return Waiting("max_concurrent", f"its type runs {running[task.type]} tasks, "
                                                 f"its max_concurrent ({cap})")
        return Waiting("busy", "waits for a worker with its tags to be free")


def _held(type_name: str) -> Waiting:
    return Waiting("type_broken", f"its type {type_name!r} has had no good definition since "
                                  "the server started: fix the problems in its file (GET "
                                  f"/task_type/{type_name} lists them); the task waits until "
                                  "then")


def _after(task: Task) -> Waiting:
    ids = ", ".join(map(str, task.after))
    then = ("then runs whatever their ends" if task.after_policy == "always"
            else "runs once they all succeeded, else ends SKIPPED")
    return Waiting("after", f"waits for task{'s' if len(task.after) != 1 else ''} {ids} to "
                            f"end; {then}")


def running_count(tasks_count: Callable[[TaskFilter], int]) -> Callable[[str], int]:
    """How many tasks of a type are claimed or running, from a counting function."""
    def count(type_name: str) -> int:
        return tasks_count(TaskFilter(states=(TaskState.CLAIMED.value,
                                              TaskState.RUNNING.value), types=(type_name,)))
    return count
