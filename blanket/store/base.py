"""The store contract: every piece of shared state, behind plainly named verbs.

SQLite and PostgreSQL implement it and pass one shared test suite (tests/store/).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from blanket.errors import BlanketError, NotFound, StaleAttempt
from blanket.models import (
    SORT_COLUMNS,
    Delivery,
    Run,
    RunTask,
    ScheduleState,
    Task,
    TaskFilter,
    TaskState,
    Token,
    Worker,
)


@dataclass(frozen=True)
class NewTask:
    """What intake hands the store: a validated, priced task."""

    type: str
    environment: dict[str, str]
    tags: tuple[str, ...]
    score: float
    added: float
    not_before: float | None = None
    schedule: str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    priority: int = 0
    inputs: tuple[str, ...] = ()
    dedupe_key: str | None = None  # a second task with the same key is refused (inbox, retries)
    fingerprint: str | None = None  # of the request that came with a client's key, kept with it
    submitted_by: str | None = None
    secrets: tuple[str, ...] = ()
    after: tuple[int, ...] = ()  # tasks to wait for: it is stored WAITING until they end
    after_policy: str = "success"
    # (run id, step, item, round): a workflow run's step, tied to the run as it is stored
    run: tuple[int, str, int, int] | None = None


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the worker (or the reaper) reports it."""

    state: TaskState
    exit_code: int | None = None
    error: str | None = None
    finished: float = 0.0
    requeue_at: float | None = None  # set when the retry policy gives another attempt
    requeue_score: float | None = None
    # A start the worker had not reported yet (a short task's start rides on its end).
    started: float | None = None
    pid: int | None = None
    directory: str | None = None
    # Set when the attempt's worker died (why, as the attempt history records it): the
    # attempt shows LOST there whatever the task's own state becomes.
    lost: str | None = None
    # The lost attempt is not counted: its task was a reserve its worker held and never
    # started (lost_outcome grants this once per task).
    refund: bool = False


def lost_outcome(task: Task, lost: Outcome) -> Outcome:
    """How an attempt whose worker died ends: queued again as `lost` says while the task
    has attempts left (a crash spends one, started or not, so a task that kills every worker
    that takes it is not queued forever), else FAILED with how many workers it cost. A
    reserve the worker never started (`refund`) is queued again without spending one, once
    per task."""
    reason = lost.lost or lost.error
    if task.stop_requested:
        return replace(lost, state=TaskState.STOPPED, error=reason, lost=reason,
                       requeue_at=None, requeue_score=None, refund=False)
    if lost.refund and lost.requeue_at is not None and not any(
            past.get("refunded") for past in task.attempts):
        # Once only: a reserve's worker may have started it just before dying, its report
        # saying so not sent yet, so a task that kills its workers at once still runs out.
        return replace(lost, state=TaskState.LOST, error=reason, lost=reason)
    lost = replace(lost, refund=False)
    if lost.requeue_at is not None and task.attempt <= task.retries:
        return replace(lost, state=TaskState.LOST, error=reason, lost=reason)
    deaths = 1 + sum(1 for past in task.attempts if past.get("state") == TaskState.LOST.value)
    times = "time" if deaths == 1 else "times"
    return replace(lost, state=TaskState.FAILED, exit_code=None, lost=reason,
                   error=f"its worker died {deaths} {times} (last: {reason})",
                   requeue_at=None, requeue_score=None)


@dataclass(frozen=True)
class Ended:
    """An ended task as retention weighs it (server/retention.py)."""

    id: int
    type: str
    schedule: str | None
    state: TaskState
    finished: float
    version: str | None = None


# The most ids one `delete_ended` takes: a batch is one short transaction.
MAX_BATCH = 1000


@dataclass(frozen=True)
class DeliveryTarget:
    """A [[notify]] target a task's end goes to, as the server hands it to the store: its
    identity (`key`) and what the delivery keeps of it (`target`, JSON text)."""

    key: str
    target: str


# The targets of an end: (type, schedule or None, event) -> targets. Called inside the
# transaction that ends a task (so the deliveries are made with the end, or not at all); it
# must be quick and read no store (the server answers from memory).
NotifyTargets = Callable[[str, "str | None", str], Sequence[DeliveryTarget]]


def end_event(state: TaskState | str, lost: str | None = None) -> str:
    """The notification event of a task's final state: the state in lower case, "lost" for
    a task that failed because its worker died."""
    if lost and TaskState(state) is TaskState.FAILED:
        return "lost"
    return TaskState(state).value.lower()


# How an attempt ends, decided from the task as read inside the finishing transaction.
Decide = Callable[[Task], Outcome]


@dataclass
class Claim:
    """What a worker may take: its tags and the per-type concurrency caps."""

    worker: str
    tags: frozenset[str]
    limits: Mapping[str, int] = field(default_factory=dict)
    now: float = 0.0
    versions: Mapping[str, str] = field(default_factory=dict)  # bound in the same transaction
    # A reserve: a task a busy worker holds for the moment its current one ends. It is taken
    # only from lanes no idle worker could take from, and the worker's record keeps showing
    # `running`, the task it runs meanwhile.
    reserve: bool = False
    running: int | None = None
    # In an exchange, the index of the end whose report asks for it: a refused report
    # claims nothing (its answer could not carry the task, nor its worker's record show it).
    end: int | None = None
    # The claim's key, the same when its worker asks again for an answer it never got: a
    # task still claimed for this worker under this key is that answer (see claim_key).
    key: str | None = None
    # Only that answer, if there is one: nothing new is claimed (a paused worker asking again
    # for what an earlier claim took before the pause).
    replay_only: bool = False


@dataclass(frozen=True)
class End:
    """One attempt's end, as `Store.exchange` takes it: the task, the attempt's token and
    its outcome (or a function of the task as the transaction reads it)."""

    task_id: int
    token: str
    outcome: Outcome | Decide


def exchange_in(ends: Sequence[End], claims: Sequence[Claim], all_or_none: bool,
                finish: Callable[[End], Any], claim: Callable[[Claim], Any],
                replayed: Callable[[Claim], Any] = lambda claim: None,
                ) -> tuple[list[Any], list[Any], list[int]]:
    """`Store.exchange` inside a backend's transaction, with its own `finish`, `claim` and
    `replayed` (each returning a row, or None): (the rows ended, or the StaleAttempt or
    NotFound that refused each; the row each claim took, or None; the ids ended). A
    refusal runs no failing statement, so the transaction goes on."""
    ended: list[Any] = []
    ids: list[int] = []
    for end in ends:
        try:
            ended.append(finish(end))
            ids.append(end.task_id)
        except (StaleAttempt, NotFound) as e:
            if all_or_none:
                raise
            ended.append(e)
    taken: list[Any] = []
    # Tags whose claim found nothing: a later claim with them finds nothing either, unless
    # only a reserve found nothing (a reserve passes over what an idle worker could take).
    empty: dict[frozenset[str], bool] = {}  # tags -> whether only a reserve found nothing
    for one in claims:
        if one.end is not None and isinstance(ended[one.end], BlanketError):
            # A refused report claims nothing; but a report sent again because the answer
            # to the first never came (its end is refused now: it ended then) is answered
            # what the first claimed, if it is still claimed (by its key).
            taken.append(replayed(one) if one.key is not None else None)
            continue
        if one.replay_only:  # a paused or stopping worker's: nothing new
            taken.append(None)
            continue
        only_reserve = empty.get(one.tags)
        # A claim naming the task its worker now runs is made anyway: it also records that
        # in the worker's record (the reaper reads it to tell a reserve from a started task).
        if (only_reserve is not None and (one.reserve or not only_reserve)
                and one.running is None):
            taken.append(None)
            continue
        found = claim(one)
        if found is None:
            empty[one.tags] = one.reserve and empty.get(one.tags, True)
        taken.append(found)
    return ended, taken, ids


def replayed_in(db: Any, queries: Mapping[str, str], claim: Claim) -> Any:
    """The task a claim with `claim.key` already took for its worker, if it is still claimed
    (a row, or None), inside the caller's transaction (`db` a connection or cursor, with the
    backend's `queries`); the worker's record shows it again as a new claim would."""
    row = db.execute(queries["claimed_by_key"], {"worker": claim.worker, "key": claim.key}
                     ).fetchone()
    if row is not None:
        busy = claim.running if claim.running is not None else (
            None if claim.reserve else row["id"])
        if busy is not None:
            db.execute(queries["worker_busy"], {"worker": claim.worker, "id": busy,
                                                "now": claim.now})
    return row


def order_sql(flt: TaskFilter) -> str:
    """The ORDER BY of a listing: its sort column (from a fixed list, never from the
    request's text), missing values last, then the id."""
    if flt.sort not in SORT_COLUMNS:
        raise ValueError(f"cannot sort by {flt.sort!r}")
    direction = "ASC" if flt.oldest_first else "DESC"
    if flt.sort == "id":
        return f"id {direction}"
    return f"{flt.sort} IS NULL, {flt.sort} {direction}, id {direction}"


# An idle worker whose record was touched this recently is waiting in its long poll (which
# lasts at most a minute): a reserve never takes a task such a worker could start at once.
IDLE_FRESH = 120.0


class Store(ABC):
    """Durable state. Every method is atomic; methods taking a token refuse stale attempts."""

    # Called with the wake-up topics of each change (blanket.wakeups): QUEUE when something
    # may have become claimable, task_topic(ID) when a task ended or was stopped.
    on_change: Callable[..., None] = staticmethod(lambda *topics: None)
    # Which [[notify]] targets a task's end goes to (the server sets it; by default none).
    notify_targets: NotifyTargets = staticmethod(lambda type_name, schedule, event: ())
    # Called after each write transaction with the seconds its commit took (with, when
    # durable, its wait for the disk) and whether it was durable (the server's metrics).
    on_commit: Callable[[float, bool], None] = staticmethod(lambda seconds, durable: None)
    # Called after a transaction that skipped tasks (a task they waited for did not succeed)
    # with their types, one entry each (the server counts them as finished).
    on_skipped: Callable[[list[str]], None] = staticmethod(lambda types: None)
    # Called after each WAL checkpoint of the SQLite store (from its checkpointer's thread)
    # with its seconds and kind: "passive" (off the lock), "finish" or "restart" (under it).
    on_checkpoint: Callable[[float, str], None] = staticmethod(lambda seconds, kind: None)

    def announce(self, *topics: str) -> None:
        """Wake the waiters of `topics` on every server sharing this store (a stop asked
        for, a worker paused, resumed or told to stop)."""
        self.on_change(*topics)

    # versions
    @abstractmethod
    def record_version(self, hash: str, type_name: str, created: float) -> bool:
        """Record a type version once; True when it was new."""


    @abstractmethod
    def version_records(self) -> list[tuple[str, str, float]]:
        """Every recorded version: (hash, type name, created)."""

    @abstractmethod
    def versions_between(self, first_id: int, last_id: int) -> dict[str, int]:
        """The versions bound to tasks whose id is in [first_id, last_id], with how many
        tasks each (a range of the primary key: a look over every task is many short
        reads)."""

    @abstractmethod
    def delete_versions(self, hashes: Sequence[str]) -> int:
        """Forget these version records (the caller removes their bundles); how many were."""

    # retention
    @abstractmethod
    def ended_page(self, after: tuple[float, int] | None, until: float,
                   limit: int) -> list[Ended]:
        """Ended tasks (a final state) that ended before `until`, in (finished, id) order,
        after the position `after` (by the index on finished: a page costs its own rows)."""

    @abstractmethod
    def group_page(self, before_id: int, limit: int, type_name: str | None = None,
                   schedule: str | None = None) -> list[tuple[int, str | None, bool]]:
        """A type's tasks (or one schedule's), newest id first, below `before_id`: (id, its
        schedule, whether it ended). A short read per page, queued tasks and all, so that
        retention counts a group's newest ended tasks without holding the store."""

    @abstractmethod
    def max_task_id(self) -> int:
        """The highest task id there is (0 for none)."""

    @abstractmethod
    def delete_ended(self, ids: Sequence[int]) -> list[Ended]:
        """Remove these tasks' records (with their dedupe keys) in one transaction, each only
        if it is still ended; what was removed. At most MAX_BATCH ids. The caller removes
        their folders."""

    @abstractmethod
    def try_sweep_lock(self) -> bool:
        """True when this server may sweep now (among several servers, one at a time);
        `release_sweep_lock` after the sweep."""

    @abstractmethod
    def release_sweep_lock(self) -> None: ...

    # tasks
    @abstractmethod
    def add_task(self, new: NewTask, place: Callable[[int], None] | None = None) -> Task:
        """Queue a task durably and return it with its id; DuplicateTask if its key was used.
        `place(id)` runs inside the transaction once the id is known, before the commit, so
        that a task's files are in place before any worker can claim it; when it raises,
        nothing is stored."""

    @abstractmethod
    def add_tasks(self, news: list[NewTask]) -> list[Task]:
        """Queue several tasks in one transaction, in order. Where a dedupe key was used
        already, the answer holds the task that has it and nothing new is stored."""

    @abstractmethod
    def task_for_key(self, key: str) -> int | None:
        """The id of the task submitted with this dedupe key, if any."""

    @abstractmethod
    def key_entry(self, key: str) -> tuple[int, str | None] | None:
        """(task id, fingerprint of the request it came with) for this dedupe key, if any."""

    @abstractmethod
    def get_task(self, task_id: int) -> Task | None: ...

    @abstractmethod
    def list_tasks(self, flt: TaskFilter) -> list[Task]: ...

    @abstractmethod
    def count_tasks(self, flt: TaskFilter) -> int: ...

    @abstractmethod
    def queued_ahead(self, task: Task) -> int:
        """How many queued tasks come before `task` (a lower score, or the same score and an
        earlier id), of any type: a rough place in line."""

    @abstractmethod
    def queued_by_type(self) -> dict[str, int]:
        """How many tasks are queued, by type (types with none left out)."""

    @abstractmethod
    def versions_run(self, type_name: str,
                     limit: int) -> list[tuple[str, float, float, int]]:
        """The versions tasks of a type ran with (bound when claimed), latest used first:
        (version, first added, last added, tasks)."""

    @abstractmethod
    def ended_since(self, since: float) -> list[tuple[str, str, int, int, float, int]]:
        """Tasks that ended at or after `since`: (type, state, minute, count, seconds they
        waited queued in all, how many of them started) rows, the minute being
        int(finished // 60) and a wait `started - added`."""

    @abstractmethod
    def delete_task(self, task_id: int) -> Task | None:
        """Remove a task record; the caller removes its files."""

    @abstractmethod
    def claim_task(self, claim: Claim) -> Task | None:
        """Atomically take the lowest-score eligible queued task, or None. In the same
        transaction the task is bound to its type's version (from `claim.versions`) and the
        worker's record shows it busy with the task. A claim with a key is answered the task
        a claim with that key already took for its worker, if it is still claimed."""

    @abstractmethod
    def bind_version(self, task_id: int, token: str, version: str) -> Task: ...

    @abstractmethod
    def mark_started(self, task_id: int, token: str, pid: int | None, now: float,
                     directory: str | None = None) -> Task: ...

    @abstractmethod
    def heartbeat_task(self, task_id: int, token: str, now: float) -> Task:
        """Record that the attempt, and so its worker, is alive."""

    @abstractmethod
    def set_progress(self, task_id: int, token: str | None, value: int,
                     message: str | None) -> Task: ...

    def finish_task(self, task_id: int, token: str, outcome: Outcome | Decide) -> Task:
        """End the current attempt: a final state, or back to QUEUED for a retry. `outcome`
        may be a function of the task as the transaction reads it (so a stop requested a
        moment before is seen by the retry policy). A final end makes the deliveries of
        the targets `notify_targets` names in the same transaction (a retry makes none)."""
        return self.finish_and_claim(task_id, token, outcome)[0]

    def finish_and_claim(self, task_id: int, token: str, outcome: Outcome | Decide,
                         claims: Sequence[Claim] = ()) -> tuple[Task, list[Task]]:
        """finish_task, then claim_task for each of `claims` (the same worker's next task,
        and maybe a reserve), in one transaction: a busy worker's end report takes its next
        task with one commit. The list holds what was claimed, in order (a reserve is
        claimed only when the next task was). A refused end refuses the claims too."""
        ended, taken = self.exchange([End(task_id, token, outcome)], claims, all_or_none=True)
        found = ended[0]
        if isinstance(found, Exception):
            raise found
        return found, [task for task in taken if task is not None]

    def lose_task(self, task_id: int, token: str, lost: Outcome) -> Task:
        """End an attempt whose worker died (stopped answering): see `lost_outcome`. The
        attempt history records it LOST; StaleAttempt if it is not the current one."""
        return self.finish_task(task_id, token, lambda task: lost_outcome(task, lost))

    @abstractmethod
    def exchange(self, ends: Sequence[End], claims: Sequence[Claim] = (), *,
                 all_or_none: bool = False
                 ) -> tuple[list[Task | BlanketError], list[Task | None]]:
        """End attempts, then claim, in one durable transaction (one commit for a worker's
        whole batch). Each end answers alone: the task as it now is, or the StaleAttempt or
        NotFound that refused it (the others still end), unless `all_or_none`, when a
        refused end refuses everything. Claims are taken in order, and answered one for
        one: the task taken, or None (it found nothing; its report was refused; or an
        earlier claim with its tags found nothing, unless only a reserve did: a reserve
        passes over what an idle worker could take). A claim with a key whose end was
        refused answers the task a claim with that key took before, if it is still claimed
        (the report was sent again: the answer to the first never reached its worker)."""

    @abstractmethod
    def passes_over(self, tags: frozenset[str]) -> bool:
        """Whether tasks are queued that a worker with `tags` may not take (they need a tag
        it lacks): an idle claim that found nothing then wakes another worker's."""

    @abstractmethod
    def release_task(self, task_id: int, token: str) -> Task:
        """Put a claimed task that never started back in the queue as if it had not been
        claimed (a worker's reserve it will not run); StaleAttempt once it started."""

    @abstractmethod
    def request_stop(self, task_id: int, by: str | None = None) -> Task:
        """Ask a claimed or running task to stop, recording who asked (`by`)."""

    @abstractmethod
    def stop_queued(self, task_id: int, now: float, by: str | None = None) -> Task | None:
        """A queued task that is asked to stop ends STOPPED at once; None if not queued.
        Like every final end, it makes its notifications in the same transaction."""

    @abstractmethod
    def stale_tasks(self, heartbeat_before: float) -> list[Task]:
        """Claimed or running tasks whose last heartbeat is older than the bound."""

    @abstractmethod
    def next_not_before(self, now: float) -> float | None:
        """The earliest future start time among queued tasks, to time wake-ups."""

    @abstractmethod
    def recent_durations(self, type_name: str, limit: int = 20) -> list[float]:
        """Run times of the type's latest successful tasks, newest first."""

    # notifications
    @abstractmethod
    def claim_deliveries(self, now: float, lease: float, limit: int) -> list[Delivery]:
        """Take up to `limit` due deliveries (pending, `next_at` <= now) to send, earliest
        first: each is held until `lease` (a server that dies sending it leaves it due again
        then) and its `attempts` counts this one. Among several servers each is taken by one."""

    @abstractmethod
    def settle_delivery(self, delivery: Delivery, now: float, *, state: str,
                        result: str | None, retry_at: float | None = None) -> bool:
        """Record how the attempt `claim_deliveries` gave ended: "delivered", "failed" (given
        up), or "pending" again at `retry_at`. False if that attempt is no longer current
        (its lease ran out and another took it)."""

    @abstractmethod
    def task_deliveries(self, task_id: int) -> list[Delivery]:
        """The notifications of one task, oldest first."""

    @abstractmethod
    def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery is due (to time the delivery loop)."""

    # workflow runs
    @abstractmethod
    def add_run(self, workflow: str, version: str, definition: str,
                environment: dict[str, str], added: float, submitted_by: str | None,
                schedule: str | None = None, dedupe_key: str | None = None) -> Run:
        """Record a new run, `running`; durable when it returns. A `dedupe_key` used before
        gives back the run that holds it."""

    @abstractmethod
    def get_run(self, run_id: int) -> Run | None: ...

    @abstractmethod
    def list_runs(self, workflow: str | None = None, state: str | None = None,
                  before: int | None = None, limit: int = 100,
                  schedule: str | None = None) -> list[Run]:
        """Runs newest first, of one workflow, state or schedule when given, with ids below
        `before`."""

    @abstractmethod
    def run_for_key(self, key: str) -> Run | None:
        """The run started with dedupe key `key`, or None."""

    @abstractmethod
    def running_runs(self) -> list[Run]:
        """Every run still `running`, oldest first (through an index of those alone)."""

    @abstractmethod
    def run_tasks(self, run_id: int) -> list[RunTask]:
        """The tasks a run's steps made, with their states (None when removed)."""

    @abstractmethod
    def run_step_tasks(self, run_id: int, step: str, states: frozenset[str] = frozenset(),
                       offset: int = 0, limit: int = 100) -> tuple[int, list[RunTask]]:
        """One step's tasks, every round's, in item and round order: how many there are
        with a state in `states` (task states, and "removed" for a removed task; all when
        empty), and `limit` of them from `offset`."""

    @abstractmethod
    def run_first_task(self, run_id: int) -> int | None:
        """The id of the first task a run made, or None."""

    @abstractmethod
    def active_steps(self, run_id: int) -> frozenset[str]:
        """The steps of a run with a task not ended (waiting, queued, claimed, running)."""

    @abstractmethod
    def end_run(self, run_id: int, state: str, reason: str | None, now: float,
                round_: int | None = None) -> Run | None:
        """End a running run as `state` (only in `round_` when given: a look at an earlier
        round must not end a rerun); None when it is not running (another ended it)."""

    @abstractmethod
    def rerun_run(self, run_id: int) -> Run | None:
        """A failed or stopped run running again in its next round; None when it is not
        failed or stopped."""

    @abstractmethod
    def run_of_task(self, task_id: int) -> tuple[int, str, int, int] | None:
        """(run id, step, item, round) of a task a workflow made, or None."""

    # workers
    @abstractmethod
    def save_worker(self, worker: Worker) -> None: ...

    @abstractmethod
    def get_worker(self, worker_id: str) -> Worker | None: ...

    @abstractmethod
    def attempt_worker(self, task_id: int, token: str) -> Worker | None:
        """The worker holding the task's current attempt (None if the token is not it)."""

    @abstractmethod
    def list_workers(self) -> list[Worker]: ...

    @abstractmethod
    def holds_version(self, owner: str, version: str) -> bool:
        """Whether a worker registered by token `owner` holds (has claimed or runs) a task
        of type version `version`."""

    @abstractmethod
    def delete_worker(self, worker_id: str) -> bool: ...

    # Targeted changes to one worker's record, each one statement: two servers (or a claim
    # and a person) changing the same worker never undo each other's change.
    @abstractmethod
    def touch_worker(self, worker_id: str, task: int | None, now: float) -> None:
        """The worker is alive and holds `task` (None: idle); its state follows unless it is
        paused or stopping."""

    @abstractmethod
    def set_worker_state(self, worker_id: str, state: str) -> Worker | None:
        """Pause ("paused") or resume ("idle", or "busy" while it holds a task) a worker that
        is not stopping; the record after (unchanged if stopping), None if there is none."""

    @abstractmethod
    def stop_worker(self, worker_id: str, mode: str) -> Worker | None:
        """Mark the worker stopping, its task to be finished or handed back (`mode`); the
        record after, None if there is none."""

    # tokens
    @abstractmethod
    def add_token(self, token: Token) -> None:
        """Store a new token; Conflict if a live token (not a session) has its name."""

    @abstractmethod
    def get_token(self, token_id: str) -> Token | None: ...

    @abstractmethod
    def list_tokens(self) -> list[Token]:
        """Every token that is not a web session, revoked ones included, by name."""

    @abstractmethod
    def revoke_token(self, name: str, now: float) -> Token | None:
        """Revoke the live token named `name` and the web sessions opened with it."""

    @abstractmethod
    def end_session(self, token_id: str, now: float) -> None:
        """Revoke one web session (a logout)."""

    # schedules
    @abstractmethod
    def get_schedule_state(self, name: str) -> ScheduleState | None: ...

    @abstractmethod
    def save_schedule_state(self, state: ScheduleState) -> None: ...

    @abstractmethod
    def planned_schedules(self) -> list[str]:
        """Names of the schedules whose stored state holds a next fire or a waiting run."""

    @abstractmethod
    def try_scheduler_lock(self) -> bool:
        """True while this server is the one that runs the scheduler."""

    @abstractmethod
    def close(self) -> None: ...
