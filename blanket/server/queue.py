"""The queue's behaviour over the store: claims, attempt reports, progress, the retry
policy, stops and removals, and the reaper that notices workers that stopped answering."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from blanket.config.tasktype import TaskType
from blanket.errors import BlanketError, Conflict, NotFound
from blanket.models import ACTIVE_STATES, FINAL_STATES, Task, TaskState, Worker
from blanket.server.metrics import Metrics
from blanket.server.pricing import task_score
from blanket.server.retry import backoff, retry_at
from blanket.store.base import Claim, Outcome, Store
from blanket.store.base import End as StoreEnd
from blanket.wakeups import task_topic

log = structlog.get_logger("blanket.queue")

REPORTABLE = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.TIMEDOUT,
                        TaskState.STOPPED})


@dataclass(frozen=True)
class AttemptEnd:
    """An attempt's end as its worker reports it. `started` carries a start the worker had
    not reported ({"at", "pid", "directory"}). With `claim_next` the report also claims
    for `worker` (by default the attempt's holder) in the same transaction: 1, its next
    task; 2, its next task and a reserve to start the moment that one ends. A worker that
    already started its reserve says which (`running`): what it claims then is its new
    reserve."""

    task_id: int
    token: str
    state: TaskState
    exit_code: int | None = None
    error: str | None = None
    handback: bool = False
    started: Mapping[str, Any] | None = None
    claim_next: int = 0
    running: int | None = None
    worker: Worker | None = None


class Queue:
    """Claims and attempt reports. `current` gives a type's definition and version hash;
    `task_dir` the folder of a task (type name, id)."""

    def __init__(self, store: Store,
                 current: Callable[[str], tuple[TaskType, str] | None],
                 limits: Callable[[], Mapping[str, int]],
                 versions: Callable[[], Mapping[str, str]] = dict, *,
                 task_dir: Callable[[str, int], Path], metrics: Metrics | None = None):
        self.store = store
        self.current = current
        self.limits = limits
        self.versions = versions
        self.task_dir = task_dir
        self.metrics = metrics or Metrics()

    def next_start(self) -> float | None:
        """When the next task held back by its not_before may start (to wake claims then)."""
        return self.store.next_not_before(time.time())

    def claim_once(self, worker: str, tags: frozenset[str], key: str | None = None
                   ) -> tuple[Task, TaskType] | None:
        """Claim the next task this worker may run now, without waiting. A claim with the
        `key` of an earlier one whose answer never reached the worker is answered the task
        that one took, while it is still claimed."""
        claim = self._claim(worker, tags, key=None if key is None else f"claim:{key}")
        task = self.store.claim_task(claim)
        return self._bound(task, claim) if task is not None else None

    def replay_once(self, worker: str, tags: frozenset[str], key: str
                    ) -> tuple[Task, TaskType] | None:
        """The task an earlier claim with `key` took for this worker, if it is still claimed
        (its answer never reached the worker); nothing new is claimed."""
        claim = replace(self._claim(worker, tags, key=f"claim:{key}"), replay_only=True)
        task = self.store.claim_task(claim)
        return self._bound(task, claim) if task is not None else None

    def give_back_keyed(self, worker: str, tags: frozenset[str], key: str) -> Task | None:
        """Queue again, as it was, the task an earlier claim with `key` took for this worker
        if it is still claimed; the task given back, or None."""
        claim = replace(self._claim(worker, tags, key=f"claim:{key}"), replay_only=True)
        task = self.store.claim_task(claim)
        if task is None:
            return None
        try:
            return self.release(task.id, task.token or "")
        except (Conflict, NotFound):  # released meanwhile (its first answer found no client)
            return None  # (a storage failure is the worker's 5xx: it asks again)

    def _claim(self, worker: str, tags: frozenset[str], *, reserve: bool = False,
               running: int | None = None, end: int | None = None,
               key: str | None = None) -> Claim:
        return Claim(worker, tags, self.limits(), time.time(), self.versions(),
                     reserve=reserve, running=running, end=end, key=key)

    def _bound(self, task: Task, claim: Claim) -> tuple[Task, TaskType] | None:
        """A claimed task with its type; one whose type is gone fails, and the worker
        claims again (the same kind of claim)."""
        if task.claimed == claim.now:  # not a claim answered again (a replay), taken before
            self.metrics.claimed(task)
        found = self.current(task.type)
        if found is None:
            self._ended(self.store.finish_task(task.id, task.token or "", Outcome(
                TaskState.FAILED, error=f"task type {task.type!r} no longer exists",
                finished=time.time())))
            claim = replace(claim, now=time.time())
            again = self.store.claim_task(claim)
            return self._bound(again, claim) if again is not None else None
        task_type, version = found
        if task.version != version:  # a type outside the claim's version map
            task = self.store.bind_version(task.id, task.token or "", version)
        return task, task_type

    def release(self, task_id: int, token: str) -> Task:
        """A worker gives back a claimed task it will not start (a reserve behind a long
        task, or a claim that crossed its stop): queued again as it was."""
        task = self.store.release_task(task_id, token)
        log.debug("claimed task given back", task=task.id, type=task.type)
        return task

    def report_started(self, task_id: int, token: str, pid: int | None,
                       directory: str | None, at: float | None = None) -> Task:
        """The attempt's process started (`at`, when the worker says, else now)."""
        return self.store.mark_started(task_id, token, pid, time.time() if at is None else at,
                                       directory)

    def heartbeat(self, task_id: int, token: str) -> Task:
        """Record that the attempt is alive."""
        return self.store.heartbeat_task(task_id, token, time.time())

    def set_progress(self, task_id: int, token: str | None, value: int | float,
                     message: str | None) -> Task:
        """A running task's progress, kept within 0-100, and what it says it is doing."""
        return self.store.set_progress(task_id, token, max(0, min(100, int(value))), message)

    def finish_and_claim(self, task_id: int, token: str, state: TaskState,
                         exit_code: int | None, error: str | None, handback: bool = False,
                         started: Mapping[str, Any] | None = None, claim_next: int = 0,
                         running: int | None = None
                         ) -> tuple[Task, list[tuple[Task, TaskType]]]:
        """End one attempt as its worker reports it (see AttemptEnd); StaleAttempt or
        NotFound when the report is refused."""
        end = AttemptEnd(task_id, token, state, exit_code, error, handback, started,
                         claim_next, running)
        ended, taken = self.end_attempts([end], all_or_none=True)[0]
        assert isinstance(ended, Task)
        return ended, taken

    def end_attempts(self, ends: Sequence[AttemptEnd], *, all_or_none: bool = False
                     ) -> list[tuple[Task | BlanketError, list[tuple[Task, TaskType]]]]:
        """End attempts as their workers report them, with the claims they ask for, in one
        transaction (one commit for a worker process's whole batch). Each answer is the
        task as it now is (or the error that refused its report: the others still end,
        unless `all_or_none`) and what its claims took. The retry policy may queue a task
        again; a handed-back task (its worker is going away) is queued again in its old
        place."""
        for end in ends:
            if end.state not in REPORTABLE:
                raise Conflict(f"state {end.state.value} cannot be reported; use one of "
                               f"{', '.join(sorted(s.value for s in REPORTABLE))}")
        now = time.time()
        # Each claim names the end it answers (its index).
        claims = [claim for index, end in enumerate(ends)
                  for claim in self._claims_of(end, now, index)]
        ended, taken = self.store.exchange(
            [StoreEnd(end.task_id, end.token, self._decider(end, now)) for end in ends],
            claims, all_or_none=all_or_none)
        answers: list[tuple[Task | BlanketError, list[tuple[Task, TaskType]]]] = [
            (task, []) for task in ended]
        for found, claim in zip(taken, claims, strict=True):  # one answer a claim
            bound = self._bound(found, claim) if found is not None else None
            if bound is not None:
                answers[claim.end or 0][1].append(bound)
        for index, (task, bound_claims) in enumerate(answers):
            if isinstance(task, Task):
                self._ended(task)
            elif bound_claims:
                # A report sent again because the answer to the first never came: refused
                # (it ended then), its claims answered again. It is answered as taken.
                again = self.store.get_task(ends[index].task_id)
                if again is not None:
                    answers[index] = (again, bound_claims)
        return answers

    def _ended(self, task: Task) -> None:
        """An attempt ended (`task` as it is now, its last attempt the one that ended):
        counted, and logged (info): the task's end, or its return to the queue."""
        self.metrics.attempt_ended(task)
        attempt = task.attempts[-1] if task.attempts else {}
        started, finished = attempt.get("started"), attempt.get("finished")
        duration = (round(finished - started, 3)
                    if started is not None and finished is not None else None)
        if task.state in FINAL_STATES:
            log.info("task ended", task=task.id, type=task.type, state=task.state.value,
                     duration=duration, worker=attempt.get("worker"), attempt=task.attempt,
                     exit_code=task.exit_code, error=task.error)
        else:
            log.info("attempt ended, task queued again", task=task.id, type=task.type,
                     attempt_state=attempt.get("state"), duration=duration,
                     worker=attempt.get("worker"), attempt=task.attempt,
                     not_before=task.not_before, error=attempt.get("error"))

    def _claims_of(self, end: AttemptEnd, now: float, index: int) -> list[Claim]:
        """What an end report claims for its worker: with `claim_next` 1 its next task, 2
        its next task and a reserve; a worker already running its reserve (`running`)
        claims a new reserve. A paused or stopping worker claims nothing new, but a report
        it sends again (the answer to the first was lost) is answered what the first
        claimed, as a claim asked again is (a stopping worker gives those back)."""
        if not end.claim_next:
            return []
        # (a stale token finds no worker here, and is refused by the finish)
        worker = end.worker or self.store.attempt_worker(end.task_id, end.token)
        if worker is None:
            return []
        replay_only = not worker.takes_tasks
        if replay_only and end.running is not None:  # paused: it still runs its reserve
            self.store.touch_worker(worker.id, end.running, now)
        tags = frozenset(worker.tags)
        # Keyed by the ended attempt: the same report sent again (its first answer never
        # reached the worker) is answered what the first claimed.
        key = end_key(end.token)
        if end.running is not None:
            claims = [self._claim(worker.id, tags, reserve=True, running=end.running,
                                  end=index, key=f"{key}/1")]
        else:
            claims = [self._claim(worker.id, tags, end=index, key=f"{key}/0")]
            if end.claim_next > 1:
                claims.append(self._claim(worker.id, tags, reserve=True, end=index,
                                          key=f"{key}/1"))
        return [replace(c, replay_only=True) for c in claims] if replay_only else claims

    def _decider(self, end: AttemptEnd, now: float) -> Callable[[Task], Outcome]:
        start = _late_start(end.started, now) if end.started is not None else None

        def decide(current: Task) -> Outcome:  # on the task as the transaction reads it
            return self._outcome(current, end.state, end.exit_code, end.error, start,
                                 end.handback, now)

        return decide

    def _outcome(self, task: Task, state: TaskState, exit_code: int | None, error: str | None,
                 started: Outcome | None, handback: bool, now: float) -> Outcome:
        """How the attempt ends: final, queued again by the retry policy, or handed back."""
        start = started or Outcome(state)
        if handback and not task.stop_requested:
            return replace(start, state=state, exit_code=exit_code,
                           error=error or "handed back by its worker", finished=now,
                           requeue_at=now, requeue_score=task.score)
        again = None if task.stop_requested else retry_at(task, state, now)
        score = None if again is None else self._retry_score(task, again)
        return replace(start, state=state, exit_code=exit_code, error=error, finished=now,
                       requeue_at=again, requeue_score=score)

    def _retry_score(self, task: Task, again: float) -> float:
        found = self.current(task.type)
        estimate = found[0].estimate if found else None
        weight = found[0].weight if found else 1
        return task_score(again, estimate, weight, task.priority)

    def stop_task(self, task_id: int, by: str | None = None) -> Task:
        """Stop a queued task at once, or ask the worker of a running one to stop it; `by`
        names who asked."""
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        if task.state in FINAL_STATES or task.state is TaskState.LOST:
            raise Conflict(f"task {task_id} has already ended ({task.state.value})")
        log.info("task stop asked", task=task.id, type=task.type, by=by)
        if task.state in (TaskState.QUEUED, TaskState.WAITING):
            stopped = self.store.stop_queued(task_id, time.time(), by)
            if stopped is not None:
                self.metrics.ended_unrun(stopped)
                log.info("task ended", task=stopped.id, type=stopped.type,
                         state=stopped.state.value, duration=None, worker=None,
                         attempt=stopped.attempt, by=by)
                return stopped
        task = self.store.request_stop(task_id, by)
        self.store.announce(task_topic(task_id))  # its heartbeat, on whichever server
        return task

    def remove(self, task: Task, by: str | None, force: bool = False) -> Task:
        """Remove a task's record and its folder; an active one only with `force` (its
        worker is asked to stop it first)."""
        if task.state in ACTIVE_STATES:
            if not force:
                raise Conflict(f"task {task.id} is {task.state.value}; stop it first, or "
                               "remove it with ?force (blanket rm -f)")
            self.store.request_stop(task.id, by)
            self.store.announce(task_topic(task.id))
        removed = self.store.delete_task(task.id)
        if removed is None:
            raise NotFound(f"no task {task.id}")
        log.info("task removed", task=task.id, type=task.type, by=by)
        self.store.announce(task_topic(task.id))  # a submission waiting for its end
        self.remove_folder(task.type, task.id)
        return removed

    def remove_folder(self, type_name: str, task_id: int) -> None:
        """Remove a removed task's folder, never anything outside it: a folder that is a
        symlink is unlinked, not walked; one whose type folder is a symlink is left (and
        logged); rmtree itself never follows a symlink inside."""
        if "/" in type_name or type_name in ("", ".", ".."):
            log.warning("task folder not removed: odd type name", task=task_id, type=type_name)
            return
        path = self.task_dir(type_name, task_id)
        if path.parent.is_symlink():
            log.warning("task folder not removed: its type folder is a symlink",
                        task=task_id, path=str(path.parent))
            return
        if path.is_symlink():
            path.unlink(missing_ok=True)
            return
        shutil.rmtree(path, ignore_errors=True)

    def reap_lost_tasks(self, lost_after: float, now: float | None = None) -> list[Task]:
        """Attempts whose worker missed heartbeats for `lost_after` seconds are lost: each
        spends one of the task's attempts, started or not (a task that kills its workers
        must not go round forever), and the store ends the task FAILED once none is left.
        One that never started takes its old place again; one that ran waits its retry
        delay. A reserve (a task its worker held while it ran another, as the worker's
        record shows) never started: it spends no attempt (see lost_outcome)."""
        now = time.time() if now is None else now
        ended = []
        current: dict[str, int | None] = {}  # each lost worker's task as its record shows
        for task in self.store.stale_tasks(now - lost_after):
            error = f"worker {task.worker} stopped answering"
            if task.state is TaskState.CLAIMED:
                if task.worker is not None and task.worker not in current:
                    worker = self.store.get_worker(task.worker)
                    current[task.worker] = worker.task if worker is not None else None
                running = current.get(task.worker or "")
                reserve = running is not None and running != task.id
                error += (f" while it held the task in reserve (it ran task {running})"
                          if reserve else " before the task started")
                lost = Outcome(TaskState.LOST, None, error, now, requeue_at=now,
                               requeue_score=task.score, lost=error, refund=reserve)
            else:
                again = now + backoff(task)
                lost = Outcome(TaskState.LOST, None, error, now, requeue_at=again,
                               requeue_score=self._retry_score(task, again), lost=error)
            try:
                ended.append(self.store.lose_task(task.id, task.token or "", lost))
            except (Conflict, NotFound):
                continue  # it ended meanwhile
            self._ended(ended[-1])  # its line says the attempt was LOST, and why
        return ended


def end_key(token: str) -> str:
    """The key of the claims an end report makes: of its attempt, without its token."""
    return "end:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _late_start(started: Mapping[str, Any], now: float) -> Outcome:
    """A short task's start, sent with its end to save a round trip (what is not well
    formed is left out; a start in the future is taken as now)."""
    at, pid, directory = started.get("at"), started.get("pid"), started.get("directory")
    if isinstance(at, bool) or not isinstance(at, int | float):
        at = now
    return Outcome(TaskState.RUNNING, started=min(float(at), now),
                   pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                   directory=directory if isinstance(directory, str) else None)
