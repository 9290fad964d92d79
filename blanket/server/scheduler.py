"""The scheduler: turns the catalog's schedules into tasks, on time, through the one intake.

The rules of when a schedule fires live in blanket/config/schedule.py; this module keeps each
schedule's next fire time in the store, submits due runs, and sleeps until the earliest next
fire (woken early when the catalog changes). One server at a time runs it.

overlap = "queue": a fire that comes while the schedule's previous run has not ended is kept
as the schedule's one waiting run (`pending_fire` in the store; later fires coalesce into it)
and submitted on the first tick after the previous run ends. While a run waits, every store
change (a task ends) wakes the loop, so that tick comes at once rather than at the next fire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import structlog

from blanket.config.schedule import Schedule, due_runs, next_fire, overlap_decision
from blanket.errors import DuplicateTask, InvalidInput, NotFound, StorageFailed, StorageFull
from blanket.models import ScheduleState, Task, TaskFilter, TaskState
from blanket.server.catalog import Catalog
from blanket.server.schedulebook import FIRE_TIME_VARIABLE, fire_time_text, scheduled_request
from blanket.store.base import Store

if TYPE_CHECKING:
    from blanket.server.services import Services

log = structlog.get_logger("blanket.scheduler")

UNFINISHED = (TaskState.WAITING.value, TaskState.QUEUED.value, TaskState.CLAIMED.value,
              TaskState.RUNNING.value)
LOCK_RETRY = 5.0  # seconds between attempts to become the scheduling server
_T = TypeVar("_T")
MAX_SLEEP = 300.0  # Event.wait runs on the monotonic clock; re-read the wall clock this often
# A schedule whose tick failed (a bug, or its own request refused by the database) is left
# alone until its retry, 1 s after, doubling to this; the others go on. Short enough that a
# fault gone is retried well within the minute a `missed = "skip"` fire may be late.
# A tick that failed as a whole (the store full or failing) is tried again after 1 s,
# doubling to TICK_RETRY_MOST.
SCHEDULE_RETRY_MOST = 5.0
TRACEBACK_EVERY = 12  # a schedule failing again and again logs its traceback this seldom
TICK_RETRY_MOST = 10.0
# Store-wide trouble: no schedule could be saved either, so the tick fails as a whole.
WHOLE_TICK_ERRORS = (StorageFull, StorageFailed)



def dedupe_key(name: str, fire: float) -> str:
    """The key that makes one fire of one schedule one task, even across a crash."""
    return f"schedule:{name}:{fire:.3f}"


def is_fire_time(schedule: Schedule, moment: float) -> bool:
    """Whether `moment` is one of the schedule's fire times (so a stored next fire still fits)."""
    found = next_fire(schedule, moment - 1e-3)
    return found is not None and abs(found - moment) < 1e-6


class Scheduler:
    """Submits each schedule's due runs; `tick(now)` does one pass, `start()` runs the loop."""

    def __init__(self, services: Services, clock: Callable[[], float] = time.time):
        self.store: Store = services.store
        self.catalog: Catalog = services.catalog
        self.intake = services.intake
        self.wakeups = services.wakeups
        self.book = services.schedules
        self.workflows = services.workflows
        self.metrics = services.metrics
        self.max_missed = services.settings.max_missed
        self.clock = clock
        self.next_wake: float | None = None
        # The definition each stored next fire was last checked against, by schedule name.
        self._basis: dict[str, Schedule | None] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._holds_lock = False
        self._after: list[tuple[Schedule, ScheduleState]] = []  # as the last tick left them
        self._prepared: dict[str, _Plan] = {}
        # Schedules with a run waiting for its previous run to end (read by store listeners).
        self._pending: set[str] = set()
        self._swept = False  # stored plans of schedules deleted while we did not look: cleared
        self._failures: dict[str, int] = {}  # schedule -> tries in a row that failed
        self._retry_at: dict[str, float] = {}  # schedule -> when to try a failed one again
        self._tick_failures = 0  # ticks in a row that failed as a whole

    # ---------------------------------------------------------------- one pass

    def tick(self, now: float) -> list[Task]:
        """Submit every run due at `now`; return the tasks created (oldest fire first)."""
        if not self._has_lock():
            self._pending = set()
            self._swept = False  # whoever holds the lock next looks for deleted ones again
            return []
        current = {s.name: s.schedule for s in self.catalog.schedules() if s.schedule is not None}
        self._forget_deleted(set(current))
        # Failed schedules whose retry has not come: left alone, their state as stored.
        held = {name for name, at in self._retry_at.items() if name in current and at > now}
        failed: set[str] = set()  # schedules this tick failed for: nothing of theirs is saved
        try:
            return self._tick(now, current, held, failed)
        except BaseException:
            # Nothing of this tick may have been saved: every stored next fire is checked
            # against its definition again next time (an edit seen now is not taken as
            # checked while its old stored fire stays).
            for name in current:
                if name in self._basis:
                    self._basis[name] = None
            raise

    def _tick(self, now: float, current: dict[str, Schedule], held: set[str],
              failed: set[str]) -> list[Task]:
        with self.book.editing():
            plans = [p for p in (self._guarded(failed, s, self._plan, s, now)
                                 for s in current.values() if s.name not in held)
                     if p is not None]
            # Submit everything first and save states after: a run's lateness is then the
            # time to submit the runs before it, and the dedupe key covers a crash between.
            due = sorted((p for p in plans if p.fires), key=lambda p: p.fires[0])
            decided = [(p, result) for p in due if (result := self._guarded(
                failed, p.schedule, self._submit_runs, p)) is not None]
            done = self._submit_together(decided, failed)
            # A schedule the tick failed for keeps its stored state: its fires are planned
            # again at the retry, and the runs it did submit are found by their dedupe keys.
            self._after = [self._save(p, done.get(p.schedule.name, _Submitted())) for p in plans
                           if p.schedule.name not in failed]
        self._fired(done, now)  # a failed schedule's runs that were submitted count now
        self._pending = {state.name for _, state in self._after if state.pending_fire is not None}
        upcoming = [p.upcoming for p in plans
                    if p.upcoming is not None and p.schedule.name not in failed]
        self.next_wake = min(upcoming + self._retries(failed, held, now), default=None)
        return sorted((task for result in done.values() for _, task in result.tasks),
                      key=lambda t: (t.environment.get(FIRE_TIME_VARIABLE, ""), t.id))

    def _guarded(self, failed: set[str], schedule: Schedule, step: Callable[..., _T],
                 *args: object) -> _T | None:
        """`step(*args)` for one schedule; None, with the schedule added to `failed`, if it
        raised something other than store-wide trouble, so one schedule cannot stop the
        others. Its state is not saved, so its fires are tried again (`_retries`)."""
        if schedule.name in failed:
            return None
        try:
            return step(*args)
        except WHOLE_TICK_ERRORS:
            raise
        except Exception as exc:
            failed.add(schedule.name)
            # Its stored next fire is checked against its definition again at the retry:
            # the failure may have come after the check noted the definition as seen.
            self._basis[schedule.name] = None
            count = self._failures.get(schedule.name, 0) + 1
            if count == 1 or count % TRACEBACK_EVERY == 0:
                log.exception("schedule tick failed; its runs are tried again, the other "
                              "schedules go on", schedule=schedule.name, failures=count)
            else:
                log.warning("schedule tick failed again", schedule=schedule.name,
                            failures=count, problem=f"{type(exc).__name__}: {exc}")
            return None

    def _retries(self, failed: set[str], held: set[str], now: float) -> list[float]:
        """When to try again each schedule this tick failed for (1 s after its first
        failure, doubling to SCHEDULE_RETRY_MOST) or left alone; a schedule tried and done,
        or gone, is forgotten."""
        for name in set(self._retry_at) - failed - held:
            del self._retry_at[name]
            self._failures.pop(name, None)
        for name in failed:
            count = self._failures[name] = self._failures.get(name, 0) + 1
            self._retry_at[name] = now + min(SCHEDULE_RETRY_MOST, 2.0 ** (count - 1))
        return [self._retry_at[name] for name in failed | held]

    def _fired(self, done: dict[str, _Submitted], now: float) -> None:
        """Count and log each run submitted by this tick, with how late it was (a task
        found by its dedupe key, submitted before a crash, was counted then)."""
        for name, result in done.items():
            for fire, task in result.tasks:
                if task.added < now:
                    continue
                self.metrics.schedule_fired(name, fire, task.added)
                log.info("schedule fired", schedule=name, fire=fire_time_text(fire),
                         task=task.id, type=task.type, lateness=round(task.added - fire, 3))

    def prepare(self, moment: float) -> None:
        """Work out ahead of time the runs due at `moment` (the next wake), so that the tick
        then only submits them. A plan is used only if nothing it depends on changed."""
        self._prepared = {}
        for schedule, state in self._after:
            if state.next_fire == moment and self._basis.get(schedule.name) == schedule:
                self._prepared[schedule.name] = self._compute(schedule, state, state.next_fire,
                                                              moment)

    def _plan(self, schedule: Schedule, now: float) -> _Plan | None:
        state = self.store.get_schedule_state(schedule.name) or ScheduleState(schedule.name)
        if state.paused:
            return None
        ready = self._prepared.get(schedule.name)
        if ready is not None and ready.still_valid(schedule, state, now):
            return ready
        stored = self._checked_next_fire(schedule, state.next_fire, now)
        if stored is not None and stored > now:
            return _Plan(schedule, state, (), stored, now)  # what due_runs says, cheaply
        return self._compute(schedule, state, stored, now)

    def _compute(self, schedule: Schedule, state: ScheduleState, stored: float | None,
                 now: float) -> _Plan:
        limit = min(self.max_missed, schedule.max_missed) if self.max_missed else None
        runs, upcoming = due_runs(schedule, stored, now, max_missed=limit)
        return _Plan(schedule, state, tuple(runs), upcoming, now)

    def _save(self, plan: _Plan, done: _Submitted) -> tuple[Schedule, ScheduleState]:
        old = plan.state
        last_fire, last_task = done.tasks[-1] if done.tasks else (old.last_fire, None)
        new = ScheduleState(
            old.name, next_fire=plan.upcoming, last_fire=last_fire,
            last_task=last_task.id if last_task else old.last_task, paused=False,
            pending_fire=done.pending)
        if new != old:
            self.store.save_schedule_state(new)
        return plan.schedule, new

    def _checked_next_fire(self, schedule: Schedule, stored: float | None,
                           now: float) -> float | None:
        """The stored next fire, or None (start afresh from `now`) when the definition it was
        computed for changed: a future one may be later than the new definition's next fire,
        and a past one (missed while the server was down) counts only if it still fits."""
        if self._basis.get(schedule.name) == schedule:
            return stored
        self._basis[schedule.name] = schedule
        if stored is None or stored > now or not is_fire_time(schedule, stored):
            return None
        return stored

    def _forget_deleted(self, names: set[str]) -> None:
        """A schedule that disappeared stops; its stored next fire and waiting run are cleared
        so that a file put back later starts afresh instead of catching up. The first time,
        that includes schedules deleted while the server was down (a file that is there but
        broken is not deleted: fixed, it catches up as its `missed` says)."""
        deleted = set(self._basis) - names
        if not self._swept:
            there = {s.name for s in self.catalog.schedules()}
            deleted |= {name for name in self.store.planned_schedules() if name not in there}
            self._swept = True
        for gone in deleted:
            self._basis.pop(gone, None)
            with self.book.editing():
                state = self.store.get_schedule_state(gone)
                if state is not None and (state.next_fire, state.pending_fire) != (None, None):
                    self.store.save_schedule_state(replace(state, next_fire=None,
                                                           pending_fire=None))
            log.info("schedule removed", schedule=gone)

    def _submit_together(self, decided: list[tuple[_Plan, _Submitted | tuple[float, ...]]],
                         failed: set[str]) -> dict[str, _Submitted]:
        """Submit every plan's plain runs in one transaction (one commit for all the
        schedules firing this second), in fire order. A schedule whose runs cannot even be
        asked for is added to `failed`."""
        fired = [(plan.schedule, fire) for plan, result in decided
                 if isinstance(result, tuple) for fire in result]
        requests = [(schedule, fire, request) for schedule, fire in fired
                    if not schedule.workflow and (request := self._guarded(
                        failed, schedule, scheduled_request, schedule, fire,
                        dedupe_key(schedule.name, fire))) is not None]
        runs = [(schedule, fire) for schedule, fire, _ in requests
                if schedule.name not in failed]
        answers: list[Task | InvalidInput | None]
        try:
            answers = list(self.intake.submit_many(
                [request for schedule, _, request in requests if schedule.name not in failed]))
        except WHOLE_TICK_ERRORS:
            raise
        except Exception:
            # Something one request brought (a bug, a row refused) stopped the batch: each
            # alone, so that only its schedule fails. The dedupe keys make it safe.
            log.exception("schedule runs not submitted together; submitting each alone")
            answers = [self._guarded(failed, schedule, self._submit, schedule, fire)
                       for schedule, fire in runs]
        for schedule, fire in fired:  # workflow runs: each its own run
            if schedule.workflow:
                runs.append((schedule, fire))
                answers.append(self._guarded(failed, schedule, self._submit, schedule, fire))
        submitted: dict[str, list[tuple[float, Task]]] = {}
        for (schedule, fire), answer in zip(runs, answers, strict=True):
            if answer is None:
                continue
            if isinstance(answer, InvalidInput):
                log.warning("schedule run refused", schedule=schedule.name,
                            fire=fire_time_text(fire), reason=answer.message)
            else:
                submitted.setdefault(schedule.name, []).append((fire, answer))
        return {plan.schedule.name: result if isinstance(result, _Submitted)
                else _Submitted(tuple(submitted.get(plan.schedule.name, ())))
                for plan, result in decided}

    def _submit_runs(self, plan: _Plan) -> _Submitted | tuple[float, ...]:
        """Decide a plan's fires (its waiting run first) as its overlap rule says: the fires
        to submit as they are, or what was done with them."""
        schedule, fires = plan.schedule, plan.fires
        if schedule.overlap == "allow":
            return fires
        previous = self._previous_run(schedule, fires)
        decision = overlap_decision(schedule, previous is not None)
        if decision == "skip":
            log.info("schedule run skipped: the previous run has not ended",
                     schedule=schedule.name, previous=previous, fires=len(fires))
            return _Submitted()
        if decision == "queue":
            self._coalesce(schedule, fires[:-1])
            if fires[-1] != plan.state.pending_fire:
                log.info("schedule run waits for the previous run to end", schedule=schedule.name,
                         previous=previous, fire=fire_time_text(fires[-1]))
            return _Submitted(pending=fires[-1])
        if schedule.overlap == "queue":
            return self._submit_first(schedule, fires)
        return fires

    def _previous_run(self, schedule: Schedule, fires: tuple[float, ...]) -> int | None:
        """The id of a run of `schedule` that has not ended, other than these fires' own."""
        if schedule.overlap == "queue":
            # Before the query: a run that ends after it must still wake the loop.
            self._pending.add(schedule.name)
        if schedule.workflow:
            return self._previous_workflow_run(schedule, fires)
        # Runs submitted before a crash that lost the saved state are not "previous" runs.
        done = {self.store.task_for_key(dedupe_key(schedule.name, fire)) for fire in fires}
        unfinished = self.store.list_tasks(TaskFilter(
            schedule=schedule.name, states=UNFINISHED, limit=len(fires) + 1))
        return next((t.id for t in unfinished if t.id not in done), None)

    def _previous_workflow_run(self, schedule: Schedule, fires: tuple[float, ...]
                               ) -> int | None:
        """The first task of a workflow run of `schedule` still running, other than these
        fires' own."""
        done = {run.id for run in (self.workflows.run_for_key(dedupe_key(schedule.name, f))
                                   for f in fires) if run is not None}
        for run in self.workflows.list_runs(state="running", limit=len(done) + 1,
                                            schedule=schedule.name):
            if run.id not in done:
                first = self.workflows.first_task(run)
                return first.id if first is not None else 0
        return None

    def _submit_first(self, schedule: Schedule, fires: tuple[float, ...]) -> _Submitted:
        """overlap = "queue" with no run going: submit the oldest fire; the later ones become
        one waiting run, for the latest fire."""
        for index, fire in enumerate(fires):
            task = self._submit(schedule, fire)
            if task is not None:
                later = fires[index + 1:]
                self._coalesce(schedule, later[:-1])
                return _Submitted(((fire, task),), later[-1] if later else None)
        return _Submitted()

    def _coalesce(self, schedule: Schedule, dropped: tuple[float, ...]) -> None:
        if dropped:
            log.info("schedule runs coalesced into the later waiting run", schedule=schedule.name,
                     fires=[fire_time_text(f) for f in dropped])

    def _submit(self, schedule: Schedule, fire: float) -> Task | None:
        key = dedupe_key(schedule.name, fire)
        try:
            if schedule.workflow:
                return self.workflows.start_scheduled(schedule.name, schedule.workflow,
                                                      schedule.environment, key,
                                                      fire_time_text(fire))
            return self.intake.submit(scheduled_request(schedule, fire, key))
        except DuplicateTask as duplicate:
            # Submitted before a crash that lost the saved state: that task is this run.
            return self.store.get_task(duplicate.task_id)
        except (InvalidInput, NotFound) as refused:  # NotFound: its workflow is gone
            log.warning("schedule run refused", schedule=schedule.name, fire=fire_time_text(fire),
                        reason=refused.message)
            return None

    def _has_lock(self) -> bool:
        holds = self.store.try_scheduler_lock()
        if holds != self._holds_lock:
            log.info("scheduler lock " + ("taken" if holds else "held by another server"))
            self._holds_lock = holds
        return holds

    # ---------------------------------------------------------------- the loop

    def start(self) -> None:
        """Run ticks in a thread, sleeping until the earliest next fire or a catalog change
        (or, while a run waits for its previous run, any store change)."""
        self.catalog.add_listener(self.wake)
        self.wakeups.add_listener(self._store_changed)
        self.book.on_resume(self.wake)
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tick now (the catalog changed, or a schedule was resumed)."""
        self._wake.set()

    def _store_changed(self) -> None:
        # Called on every submission and finish: only a waiting run makes it worth a tick.
        if self._pending:
            self._wake.set()

    def stop(self) -> None:
        self.book.forget_listener(self.wake)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self._wake.wait(self.run_once())

    def run_once(self) -> float:
        """One pass of the loop: tick, and work out the next one ahead; the seconds to sleep
        before the next pass (unless woken)."""
        try:
            self.tick(self.clock())
            if self.next_wake is not None and self._holds_lock:
                self.prepare(self.next_wake)
        except StorageFull as e:  # the runs are submitted once there is room again
            self._tick_failed()
            log.warning("scheduler waits for disk space", problem=e.message,
                        retry_in=self._retry_in())
        except Exception:
            self._tick_failed()
            log.exception("scheduler tick failed", retry_in=self._retry_in())
        else:
            self._tick_failures = 0
        return self._sleep_time()

    def _tick_failed(self) -> None:
        """Try again after 1 s, doubling to TICK_RETRY_MOST, not at once: the wake time the
        failed tick left is already past."""
        self._tick_failures += 1
        self.next_wake = self.clock() + self._retry_in()

    def _retry_in(self) -> float:
        return min(TICK_RETRY_MOST, 2.0 ** (self._tick_failures - 1))

    def _sleep_time(self) -> float:
        if not self._holds_lock:
            return LOCK_RETRY
        if self.next_wake is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, self.next_wake - self.clock()))


@dataclass(frozen=True)
class _Plan:
    """What one tick does for one schedule: the runs to submit and the next fire to store."""

    schedule: Schedule
    state: ScheduleState
    runs: tuple[float, ...]
    upcoming: float | None
    at: float

    @property
    def fires(self) -> tuple[float, ...]:
        """The fires to submit now: the run left waiting (if still enabled), then the due runs."""
        waiting = self.state.pending_fire
        if waiting is None or not self.schedule.enabled:
            return self.runs
        return (waiting, *self.runs)

    def still_valid(self, schedule: Schedule, state: ScheduleState, now: float) -> bool:
        """Whether due_runs at `now` would give the same answer (a plan made ahead of time)."""
        return (schedule == self.schedule and state == self.state and self.at <= now < self.at + 1
                and (self.upcoming is None or now < self.upcoming))


@dataclass(frozen=True)
class _Submitted:
    """What one tick made of a schedule's fires: (fire, task) submitted, and the waiting run."""

    tasks: tuple[tuple[float, Task], ...] = ()
    pending: float | None = None
