"""Each schedule's saved progress (its row of schedule state in the store) and what an
operator does to a schedule: run it now, pause it, resume it. The scheduler's ticks and the
API read-modify-write the same rows, so both go through one book and its lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import structlog

from blanket.config.schedule import Schedule
from blanket.envnames import FIRE_TIME_VARIABLE
from blanket.errors import InvalidInput, NotFound
from blanket.models import ScheduleState, Task
from blanket.server.catalog import Catalog
from blanket.server.currenttypes import task_type_of
from blanket.server.intake import Intake, TaskRequest
from blanket.server.workflows import Workflows
from blanket.store.base import Store
from blanket.times import iso_utc

log = structlog.get_logger("blanket.scheduler")



def fire_time_text(fire: float) -> str:
    """A fire time as ISO 8601 UTC, as the task sees it in BLANKET_FIRE_TIME."""
    return iso_utc(fire) or ""


def scheduled_request(schedule: Schedule, fire: float | None, key: str | None) -> TaskRequest:
    """The submission for one run of `schedule` (fired at `fire`, or None when run by hand)."""
    environment: dict[str, str] = dict(schedule.environment)
    if fire is not None:
        environment[FIRE_TIME_VARIABLE] = fire_time_text(fire)
    return TaskRequest(type=task_type_of(schedule), environment=environment,
                       tags=schedule.tags, priority=schedule.priority, schedule=schedule.name,
                       dedupe_key=key, submitted_by="schedule", trusted_environment=True)


class ScheduleBook:
    """The schedule-state rows, read and written under one lock by the scheduler and the API."""

    def __init__(self, store: Store, catalog: Catalog, intake: Intake, workflows: Workflows):
        self.store = store
        self.catalog = catalog
        self.intake = intake
        self.workflows = workflows
        self._lock = threading.RLock()
        self._resumed: list[Callable[[], None]] = []

    def on_resume(self, callback: Callable[[], None]) -> None:
        """Call `callback` after a schedule is paused or resumed (the scheduler re-plans)."""
        self._resumed.append(callback)

    def forget_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._resumed:
            self._resumed.remove(callback)

    @contextmanager
    def editing(self) -> Iterator[None]:
        """Hold the book while reading states and writing them back."""
        with self._lock:
            yield

    def state(self, name: str) -> ScheduleState:
        """Schedule `name`'s saved progress (a fresh one for a schedule never planned)."""
        return self.store.get_schedule_state(name) or ScheduleState(name)

    def run_now(self, name: str) -> Task:
        """Submit one run of schedule `name` at once (overlap does not apply to a manual run)."""
        schedule = self.runnable(name)
        if schedule.workflow:
            task = self.workflows.start_scheduled(name, schedule.workflow,
                                                  schedule.environment, None)
            if task is None:  # it ran at once: a fan-out over an empty list, say
                raise InvalidInput(f"schedule {name!r} started a run of workflow "
                                   f"{schedule.workflow!r}, which made no task: see it with "
                                   f"GET /run/?workflow={schedule.workflow}", code="no_task")
        else:
            task = self.intake.submit(scheduled_request(schedule, None, None))
        with self._lock:
            self.store.save_schedule_state(replace(self.state(name), last_task=task.id))
        log.info("schedule run by hand", schedule=name, task=task.id, type=task.type)
        return task

    def set_paused(self, name: str, paused: bool) -> ScheduleState:
        """Pause or resume schedule `name`. A resumed schedule starts afresh from its next fire
        time: runs that fell while it was paused are not caught up, and a run that was waiting
        for the previous one to end (overlap = "queue") is dropped."""
        self.runnable(name)
        with self._lock:
            state = self.state(name)
            new = ScheduleState(name, None, state.last_fire, state.last_task, paused)
            self.store.save_schedule_state(new)
        for callback in list(self._resumed):
            callback()
        return new

    def runnable(self, name: str) -> Schedule:
        """Schedule `name`'s good definition; 404 when there is none, 400 when it is broken."""
        loaded = self.catalog.schedule(name)
        if loaded is None:
            known = ", ".join(s.name for s in self.catalog.schedules()) or "none yet"
            raise NotFound(f"no schedule {name!r}; known schedules: {known}")
        if loaded.schedule is None:
            problem = loaded.problems[0].message if loaded.problems else "it did not load"
            raise InvalidInput(f"schedule {name!r} cannot run: {problem}",
                               code="invalid_schedule")
        return loaded.schedule
