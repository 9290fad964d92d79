"""The server's register of its workers: who joined with which tags and which token, who is
paused, stopping or gone, what a worker's claim does, and what the worker of a running
attempt must do. The worker routes (blanket/server/api/workers.py) call these verbs."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import structlog

from blanket.auth import ADMIN, OPERATOR, Forbidden, Identity
from blanket.config.tasktype import TaskType
from blanket.errors import InvalidInput, NotFound, StaleAttempt
from blanket.models import ACTIVE_STATES, Task, Worker
from blanket.protocol import WORKER_ID_PATTERN, Leave, Orders
from blanket.server.queue import Queue
from blanket.store.base import Store
from blanket.wakeups import QUEUE, Wakeups, task_topic, worker_topic

log = structlog.get_logger("blanket.registry")

_WORKER_ID = re.compile(WORKER_ID_PATTERN)
STOP_MODES = ("finish", "handback")


Claimed = tuple[Task, TaskType]
_HUNG_UP = object()  # the claiming worker closed its connection while it waited


class WorkerRegistry:
    """Workers as the server knows them. A worker silent for `lost_after` shows as lost
    (unless this server holds its claim: waiting is not silence)."""

    def __init__(self, store: Store, queue: Queue, wakeups: Wakeups, lost_after: float):
        self.store = store
        self.queue = queue
        self.wakeups = wakeups
        self.lost_after = lost_after
        self._claiming: Counter[str] = Counter()  # workers whose claim this server holds
        self._claiming_lock = threading.Lock()

    # ------------------------------------------------------------ joining and looking

    def register(self, caller: Identity, tags: list[str], host: str, pid: int,
                 worker_id: str | None = None) -> Worker:
        """A worker joins with tags its token must allow; without an id it gets one. An id
        another token's worker holds is refused (admins may take any over)."""
        worker_id = worker_id or f"{host}-{pid}-{uuid.uuid4().hex[:6]}"
        if not _WORKER_ID.fullmatch(worker_id):
            raise InvalidInput(f"worker id {worker_id!r}: use letters, digits and _.:@-")
        refused = [t for t in tags if not caller.may_claim(t)]
        if refused:
            raise Forbidden(f"token {caller.name!r} may not take tasks tagged "
                            f"{', '.join(sorted(refused))}; allowed: {', '.join(caller.tags)}")
        known = self.store.get_worker(worker_id)
        if known is not None and known.owner != caller.name and caller.role != ADMIN:
            raise Forbidden(f"worker id {worker_id!r} is taken by a worker of another token")
        now = time.time()
        worker = Worker(id=worker_id, tags=tuple(sorted(set(tags))), host=host, pid=pid,
                        state="idle", registered=now, heartbeat=now, owner=caller.name)
        self.store.save_worker(worker)
        return worker

    def get(self, worker_id: str) -> Worker:
        """The worker's record; NotFound until it registers."""
        worker = self.store.get_worker(worker_id)
        if worker is None:
            raise NotFound(f"no worker {worker_id!r}; it has to register first (POST /worker/)")
        return worker

    def owned(self, worker_id: str, caller: Identity) -> Worker:
        """The worker, if the caller's token registered it (admins reach every worker)."""
        worker = self.get(worker_id)
        if caller.role != ADMIN and worker.owner != caller.name:
            raise Forbidden(f"worker {worker_id!r} was registered with another token")
        return worker

    def shown(self, worker: Worker, now: float | None = None) -> Worker:
        """The worker as people see it: `lost` when it has been silent past lost_after."""
        now = time.time() if now is None else now
        silent = now - worker.heartbeat > self.lost_after
        if silent and worker.state != "gone" and worker.id not in self._claiming:
            return replace(worker, state="lost")
        return worker

    def listed(self) -> list[Worker]:
        """Every registered worker, as shown."""
        now = time.time()
        return [self.shown(w, now) for w in self.store.list_workers()]

    def count_by_state(self) -> Counter[str]:
        """How many workers are in each state as shown (idle, busy, paused..., lost when
        silent)."""
        return Counter(w.state for w in self.listed())

    # ------------------------------------------------------------ people's orders

    def pause(self, worker_id: str) -> Worker:
        """The worker takes no new task until resumed (its current one runs on)."""
        return self._set_state(worker_id, "paused")

    def resume(self, worker_id: str) -> Worker:
        return self._set_state(worker_id, "idle")

    def _set_state(self, worker_id: str, state: str) -> Worker:
        updated = self.store.set_worker_state(worker_id, state)
        if updated is None:
            raise NotFound(f"no worker {worker_id!r}; it has to register first (POST /worker/)")
        if updated.state == "stopping":
            raise InvalidInput(f"worker {worker_id} is stopping")
        self.store.announce(worker_topic(worker_id))
        return updated

    def stop(self, worker_id: str, mode: str, caller: Identity) -> tuple[Worker, bool]:
        """Ask a worker to stop: `finish` lets its task end, `handback` queues it again. One
        that has departed is forgotten at once. Operators stop any worker, a worker token
        only its own. Gives the worker as it is now, and whether it was forgotten."""
        if mode not in STOP_MODES:
            raise InvalidInput("?mode must be finish (let its task end) or handback "
                               "(stop the task and queue it again)")
        worker = (self.get(worker_id) if caller.at_least(OPERATOR)
                  else self.owned(worker_id, caller))
        if self.departed(worker):
            self.forget(worker.id)
            return replace(worker, state="gone"), True
        stopping = self.store.stop_worker(worker.id, mode)
        if stopping is None:
            raise NotFound(f"no worker {worker_id!r}")
        self.store.announce(worker_topic(worker.id))  # its claim, or its task's heartbeat
        return stopping, False

    def departed(self, worker: Worker, now: float | None = None) -> bool:
        """Gone, silent for too long, or stopping with nothing left to run (a worker that
        says goodbye after its SIGTERM)."""
        now = time.time() if now is None else now
        if worker.state == "gone" or now - worker.heartbeat > self.lost_after:
            return True
        if worker.state != "stopping":
            return False
        task = self.store.get_task(worker.task) if worker.task is not None else None
        return task is None or task.state not in ACTIVE_STATES or task.worker != worker.id

    def forget(self, worker_id: str) -> bool:
        """Remove the worker from the list; False if it was not there."""
        return self.store.delete_worker(worker_id)

    def forget_silent(self, since: float) -> list[Worker]:
        """Forget the workers silent since `since` (they showed as lost meanwhile)."""
        forgotten = [w for w in self.store.list_workers()
                     if w.heartbeat < since and self.forget(w.id)]
        for worker in forgotten:
            log.info("worker forgotten", worker=worker.id, host=worker.host,
                     silent_since=worker.heartbeat)
        return forgotten

    # ------------------------------------------------------------ the worker's side

    def claim(self, worker: Worker, wait: float,
              hung_up: Callable[[], bool] = lambda: False,
              key: str | None = None) -> Claimed | Leave | None:
        """The worker's next task, waiting up to `wait` seconds for one; None when none
        came (or `hung_up` says the worker stopped waiting); Leave when it was asked to
        stop, and it leaves the list."""
        tags = frozenset(worker.tags)
        answer = self._claim_step(worker.id, tags, key)
        if answer is None:  # idle until a task comes: say so while waiting
            self.store.touch_worker(worker.id, None, time.time())
            # A paused worker waits for its own news only (resume, stop): new tasks must
            # not wake every paused worker's claim to look up that it is paused.
            paused = not worker.takes_tasks
            with self._holding_claim(worker.id):
                # A worker that died while it waited must not be handed a task: it would
                # sit claimed until it counts as lost, spending one of the task's attempts.
                answer = self.wakeups.wait_for(
                    lambda: _HUNG_UP if hung_up() else self._claim_step(worker.id, tags, key),
                    wait,
                    topics=(worker_topic(worker.id),) if paused
                    else (QUEUE, worker_topic(worker.id)),
                    next_deadline=(lambda: None) if paused else self.queue.next_start,
                    # a new task wakes one idle claim; one that could not take it passes it
                    # on when another worker might (this one is paused, or lacks a tag)
                    passes_on=lambda: not self._takes_tasks(worker.id)
                    or self.store.passes_over(tags))
        if answer is _HUNG_UP:
            return None
        if isinstance(answer, Leave):
            self.forget(worker.id)
        return answer  # a claim marks the worker busy

    def _claim_step(self, worker_id: str, tags: frozenset[str],
                    key: str | None = None) -> Claimed | Leave | None:
        """Checked on every wake-up: leave when asked to stop, hold while paused, else claim."""
        worker = self.store.get_worker(worker_id)
        if worker is None or worker.state == "stopping":
            if worker is not None and key is not None:
                self._give_back(worker_id, tags, key)
            return Leave(stop=worker.stop_mode or "finish" if worker else "handback")
        if not worker.takes_tasks:  # paused: nothing new, but a claim from before the pause
            # whose answer never came is answered again (else it waits to count as lost)
            return None if key is None else self.queue.replay_once(worker_id, tags, key)
        return self.queue.claim_once(worker_id, tags, key)

    def _give_back(self, worker_id: str, tags: frozenset[str], key: str) -> None:
        """A worker told to stop asks again for a claim whose answer it never got: it will
        not run that task, so the task goes back to the queue now, its attempt unspent,
        rather than stay claimed until it counts as lost. (It cannot be running: its worker
        never learnt of it.)"""
        task = self.queue.give_back_keyed(worker_id, tags, key)
        if task is not None:
            log.info("claim never answered given back", task=task.id, worker=worker_id)

    def _takes_tasks(self, worker_id: str) -> bool:
        worker = self.store.get_worker(worker_id)
        return worker is not None and worker.takes_tasks

    @contextmanager
    def _holding_claim(self, worker_id: str) -> Iterator[None]:
        with self._claiming_lock:
            self._claiming[worker_id] += 1
        try:
            yield
        finally:
            with self._claiming_lock:
                self._claiming[worker_id] -= 1
                if not self._claiming[worker_id]:
                    del self._claiming[worker_id]

    def heartbeat(self, task_id: int, token: str, wait: float = 0.0) -> Orders:
        """Record that the attempt (and its worker) is alive; with `wait`, hold until it
        must stop (the task was stopped, or its worker must hand it back)."""
        task = self.queue.heartbeat(task_id, token)
        topics = [task_topic(task.id)] + ([worker_topic(task.worker)] if task.worker else [])
        orders = self.wakeups.wait_for(lambda: self.orders(task.id, token), wait,
                                       topics=topics)
        return orders or self.orders(task.id, token, final=True)

    def orders(self, task_id: int, token: str, final: bool = False) -> Orders | None:
        """What the worker of an attempt must do; None while it should just carry on (unless
        `final`: then what it does now)."""
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} was removed")
        if task.token != token:
            raise StaleAttempt(f"task {task_id} has moved on to attempt {task.attempt}")
        worker = self.store.get_worker(task.worker) if task.worker else None
        handback = worker is not None and worker.stop_mode == "handback"
        if not (final or task.stop_requested or handback or task.state not in ACTIVE_STATES):
            return None
        return Orders(stop=task.stop_requested or handback,
                      handback=handback and not task.stop_requested, state=task.state.value)

    # ------------------------------------------------------------ who holds an attempt

    def check_holder(self, caller: Identity, task_id: int, token: str) -> None:
        """Refuse an attempt report unless the worker holding the attempt was registered
        with the caller's token: the attempt token alone must not let another worker's
        token end, feed or take over a task (admins, as the local workers are, may)."""
        if caller.role == ADMIN:
            return
        holder = self.store.attempt_worker(task_id, token)
        if holder is not None and holder.owner != caller.name:
            raise Forbidden(f"task {task_id} is held by a worker of another token")

    def sender(self, caller: Identity, task_id: int, token: str, what: str) -> Task:
        """The task, if `token` is its current, running attempt's and the caller's workers
        hold it; `what` names what was sent, for the refusal."""
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        if not token or token != task.token or task.state not in ACTIVE_STATES:
            raise StaleAttempt(f"task {task.id} is not held by this attempt (it is "
                               f"{task.state.value}); its {what} was refused")
        self.check_holder(caller, task.id, token)
        return task

    def holds_version(self, caller: Identity, version: str) -> bool:
        """Whether a worker registered with the caller's token holds a task of `version`."""
        return self.store.holds_version(caller.name, version)

    def holds(self, caller: Identity, task: Task) -> bool:
        """Whether a worker registered with the caller's token holds the task now."""
        if task.worker is None or task.state not in ACTIVE_STATES:
            return False
        worker = self.store.get_worker(task.worker)
        return worker is not None and worker.owner == caller.name
