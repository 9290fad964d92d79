"""Worker-facing routes: register, claim (long poll), attempt reports, bundles; and the
routes people use to list, pause, resume and stop workers."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import bottle

from blanket import protocol as P
from blanket.api import schemas as S
from blanket.api.access import check_holder, identity
from blanket.api.http import (
    json_response,
    message_response,
    parse_id,
    query_float,
    read_message,
    serve,
)
from blanket.app import Services
from blanket.auth import ADMIN, OPERATOR, VIEWER, Forbidden
from blanket.errors import InvalidInput, NotFound, StaleAttempt
from blanket.models import ACTIVE_STATES, TaskState, Worker
from blanket.store.base import Outcome
from blanket.wakeups import QUEUE, task_topic, worker_topic

MAX_POLL = 60.0
_WORKER_ID = re.compile(P.WORKER_ID_PATTERN)
_HASH = re.compile(r"[0-9a-f]{16,64}")


def install(app: bottle.Bottle, services: Services) -> None:
    routes = WorkerRoutes(services)
    app.route("/worker/", "GET", routes.list_workers, role=VIEWER)
    serve(app, P.REGISTER, routes.register, body=S.REGISTER)
    app.route("/worker/<worker_id>", "GET", routes.show, role=VIEWER)
    serve(app, P.LEAVE, routes.remove, query=S.REMOVE_WORKER)
    app.route("/worker/<worker_id>/pause", "POST", routes.pause, role=OPERATOR)
    app.route("/worker/<worker_id>/resume", "POST", routes.resume, role=OPERATOR)
    serve(app, P.CLAIM, routes.claim, query=S.POLL, no_content="no task came within ?wait")
    serve(app, P.STARTED, routes.started, body=S.STARTED)
    serve(app, P.HEARTBEAT, routes.heartbeat, body=S.ATTEMPT, query=S.POLL)
    serve(app, P.FINISHED, routes.finished, body=S.FINISHED)
    serve(app, P.RELEASE, routes.release, body=S.ATTEMPT)
    serve(app, P.BUNDLE, routes.bundle)


_HUNG_UP = object()  # the claim's client closed its connection while it waited
_HANG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


def hung_up(environ: dict) -> bool:
    """Whether the client of this request closed its connection (a worker that died while
    it waited for a task): cheroot's socket polled for the peer's hang-up (Linux). False
    when it cannot tell."""
    stream = environ.get("wsgi.input")
    for _ in range(4):
        sock = getattr(getattr(stream, "raw", None), "_sock", None)
        if isinstance(sock, socket.socket):
            poll = select.poll()
            poll.register(sock, _HANG_UP)
            try:
                return any(events & _HANG_UP for _, events in poll.poll(0))
            except OSError:
                return False
        stream = getattr(stream, "rfile", None)
    return False


class WorkerRoutes:
    def __init__(self, services: Services):
        self.s = services
        self._claiming: Counter[str] = Counter()  # workers whose claim this server holds
        self._claiming_lock = threading.Lock()

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

    def shown(self, worker: Worker, now: float) -> dict:
        """The worker's JSON form; its state is `lost` when it has been silent past
        lost_after (a worker waiting in a claim here is not silent)."""
        data = worker.to_json()
        silent = now - worker.heartbeat > self.s.settings.lost_after
        if silent and worker.state != "gone" and worker.id not in self._claiming:
            data["state"] = "lost"
        return data

    def worker_or_404(self, worker_id: str) -> Worker:
        worker = self.s.store.get_worker(worker_id)
        if worker is None:
            raise NotFound(f"no worker {worker_id!r}; it has to register first (POST /worker/)")
        return worker

    def own_worker(self, worker_id: str) -> Worker:
        """The worker, if the caller's token registered it (admins reach every worker)."""
        worker = self.worker_or_404(worker_id)
        caller = identity()
        if caller.role != ADMIN and worker.owner != caller.name:
            raise Forbidden(f"worker {worker_id!r} was registered with another token")
        return worker

    def list_workers(self):
        now = time.time()
        return json_response([self.shown(w, now) for w in self.s.store.list_workers()])

    def show(self, worker_id: str):
        return json_response(self.shown(self.worker_or_404(worker_id), time.time()))

    def register(self):
        """A worker joins with its tags, which its token must allow."""
        request = read_message(P.Register)
        tags, host, pid = request.tags, request.host, request.pid
        worker_id = request.id or f"{host}-{pid}-{uuid.uuid4().hex[:6]}"
        if not _WORKER_ID.fullmatch(worker_id):
            raise InvalidInput(f"worker id {worker_id!r}: use letters, digits and _.:@-")
        caller = identity()
        refused = [t for t in tags if not caller.may_claim(t)]
        if refused:
            raise Forbidden(f"token {caller.name!r} may not take tasks tagged "
                            f"{', '.join(sorted(refused))}; allowed: {', '.join(caller.tags)}")
        known = self.s.store.get_worker(worker_id)
        if known is not None and known.owner != caller.name and caller.role != ADMIN:
            raise Forbidden(f"worker id {worker_id!r} is taken by a worker of another token")
        now = time.time()
        worker = Worker(id=worker_id, tags=tuple(sorted(set(tags))), host=host, pid=pid,
                        state="idle", registered=now, heartbeat=now, owner=caller.name)
        self.s.store.save_worker(worker)
        # The same server id in the worker's data dir: the two share their files.
        return message_response(P.Registered.of(worker, self.s.settings.heartbeat_interval,
                                                self.s.server_id), 201)

    def remove(self, worker_id: str):
        """Stop a worker (?mode=finish lets its task end, handback queues it again); a
        worker token may remove only its own workers."""
        mode = bottle.request.query.get("mode", "finish")
        if mode not in ("finish", "handback"):
            raise InvalidInput("?mode must be finish (let its task end) or handback "
                               "(stop the task and queue it again)")
        worker = (self.worker_or_404(worker_id) if identity().at_least(OPERATOR)
                  else self.own_worker(worker_id))
        if self._departed(worker):
            self.s.store.delete_worker(worker.id)
            return json_response({**worker.to_json(), "state": "gone"})
        stopping = self.s.store.stop_worker(worker.id, mode)
        if stopping is None:
            raise NotFound(f"no worker {worker_id!r}")
        self.s.store.announce(worker_topic(worker.id))  # its claim, or its task's heartbeat
        return json_response(stopping.to_json(), 202)

    def _departed(self, worker: Worker) -> bool:
        """Gone, silent for too long, or stopping with nothing left to run (a worker that
        says goodbye after its SIGTERM)."""
        if worker.state == "gone" or time.time() - worker.heartbeat > self.s.settings.lost_after:
            return True
        if worker.state != "stopping":
            return False
        task = self.s.store.get_task(worker.task) if worker.task is not None else None
        return task is None or task.state not in ACTIVE_STATES or task.worker != worker.id

    def pause(self, worker_id: str):
        return self._set_state(worker_id, "paused")

    def resume(self, worker_id: str):
        return self._set_state(worker_id, "idle")

    def _set_state(self, worker_id: str, state: str):
        updated = self.s.store.set_worker_state(worker_id, state)
        if updated is None:
            raise NotFound(f"no worker {worker_id!r}; it has to register first (POST /worker/)")
        if updated.state == "stopping":
            raise InvalidInput(f"worker {worker_id} is stopping")
        self.s.store.announce(worker_topic(worker_id))
        return json_response(updated.to_json())

    def claim(self, worker_id: str):
        """Long poll: 200 with a task and its type, 204 when none came within ?wait, 410 when
        the worker was asked to stop (it then leaves the list)."""
        worker = self.own_worker(worker_id)
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        tags = frozenset(worker.tags)
        answer = self._claim_step(worker.id, tags)
        if answer is None:  # idle until a task comes: say so while waiting
            self.s.store.touch_worker(worker.id, None, time.time())
            caller = bottle.request.environ
            with self._holding_claim(worker.id):
                # A worker that died while it waited must not be handed a task: it would
                # sit claimed until it counts as lost, spending one of the task's attempts.
                answer = self.s.wakeups.wait_for(
                    lambda: _HUNG_UP if hung_up(caller) else self._claim_step(worker.id, tags),
                    wait,
                    topics=(QUEUE, worker_topic(worker.id)),
                    next_deadline=self.s.queue.next_start,
                    # a new task wakes one idle claim; one that could not take it passes it
                    # on when another worker might (this one is paused, or lacks a tag)
                    passes_on=lambda: not self._takes_tasks(worker.id)
                    or self.s.store.passes_over(tags))
        if answer is None or answer is _HUNG_UP:
            return bottle.HTTPResponse(status=204)
        if isinstance(answer, P.Leave):
            self.s.store.delete_worker(worker.id)
            return message_response(answer, 410)
        return message_response(P.Claimed.of(*answer))  # the claim marked the worker busy

    def _takes_tasks(self, worker_id: str) -> bool:
        worker = self.s.store.get_worker(worker_id)
        return worker is not None and worker.takes_tasks

    def _claim_step(self, worker_id: str, tags: frozenset[str]):
        """Checked on every wake-up: leave when asked to stop, hold while paused, else claim."""
        worker = self.s.store.get_worker(worker_id)
        if worker is None or worker.state == "stopping":
            return P.Leave(stop=worker.stop_mode or "finish" if worker else "handback")
        if not worker.takes_tasks:  # paused
            return None
        return self.s.queue.claim_once(worker_id, tags)

    def attempt(self, raw_id: str, token: str) -> tuple[int, str]:
        """(task id, attempt token) of a report, once its sender may make it."""
        task_id = parse_id(raw_id)
        check_holder(self.s.store, task_id, token)
        return task_id, token

    def started(self, task_id: str):
        """The attempt's process started."""
        report = read_message(P.Started)
        task = self.s.queue.report_started(*self.attempt(task_id, report.token), report.pid,
                                           report.directory)
        return json_response(task.to_json())

    def heartbeat(self, task_id: str):
        """Record that the attempt is alive; with ?wait, hold until it must stop (the task
        was stopped, or its worker must hand it back)."""
        report = read_message(P.AttemptReport)
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        held, token = self.attempt(task_id, report.token)
        task = self.s.queue.heartbeat(held, token)  # the worker's too
        topics = [task_topic(task.id)] + ([worker_topic(task.worker)] if task.worker else [])
        orders = self.s.wakeups.wait_for(lambda: self._orders(task.id, token), wait,
                                         topics=topics)
        return message_response(orders or self._orders(task.id, token, final=True))

    def _orders(self, task_id: int, token: str, final: bool = False) -> P.Orders | None:
        """What the worker of an attempt must do; None while it should just carry on."""
        task = self.s.store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} was removed")
        if task.token != token:
            raise StaleAttempt(f"task {task_id} has moved on to attempt {task.attempt}")
        worker = self.s.store.get_worker(task.worker) if task.worker else None
        handback = worker is not None and worker.stop_mode == "handback"
        if not (final or task.stop_requested or handback or task.state not in ACTIVE_STATES):
            return None
        return P.Orders(stop=task.stop_requested or handback,
                        handback=handback and not task.stop_requested, state=task.state.value)

    def finished(self, task_id: str):
        """The attempt ended; the answer may bring the worker's next task and a reserve."""
        report = read_message(P.Finished)
        held, token = self.attempt(task_id, report.token)
        task, taken = self.s.queue.finish_and_claim(
            held, token, TaskState(report.state), report.exit_code, report.error,
            handback=report.handback,
            started=_late_start(report.started) if report.started else None,
            claim_next=report.wants, running=report.running)
        if not report.wants:
            return json_response(task.to_json())
        # The worker asked for its next task (and maybe a reserve) in the same round trip (no
        # waiting here: when none is ready it long-polls the claim route as usual).
        claimed: list[P.Claimed | None] = [P.Claimed.of(*found) for found in taken]
        if report.running is not None:  # it runs its reserve: what it took is its new reserve
            claimed.insert(0, None)
        return message_response(P.Ended(task=task.to_json(),
                                        next=claimed[0] if claimed else None,
                                        reserve=claimed[1] if len(claimed) > 1 else None))

    def release(self, task_id: str):
        """A reserve its worker will not run (its current task runs long, or it is
        stopping) goes back to the queue, as if it had never been claimed."""
        report = read_message(P.AttemptReport)
        task = self.s.queue.release(*self.attempt(task_id, report.token))
        return json_response(task.to_json())

    def bundle(self, name: str):
        digest = name.removesuffix(".tar.gz")
        if not _HASH.fullmatch(digest) or not name.endswith(".tar.gz"):
            raise InvalidInput(f"{name!r} is not a version bundle name (HASH.tar.gz)")
        path = self.s.versions_dir / name
        if not path.is_file():
            raise NotFound(f"no version {digest}")
        return bottle.static_file(name, root=str(self.s.versions_dir),
                                  mimetype="application/gzip")


def _late_start(started: P.LateStart) -> Outcome:
    """A short task's start, sent with its end to save a round trip."""
    now = time.time()
    return Outcome(TaskState.RUNNING, started=now if started.at is None else min(started.at, now),
                   pid=started.pid, directory=started.directory)
