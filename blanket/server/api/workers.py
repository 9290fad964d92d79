"""Worker-facing routes: register, claim (long poll), attempt reports, bundles; and the
routes people use to list, pause, resume and stop workers. The rules are the worker
registry's (blanket/server/registry.py) and the queue's; these parse and answer."""

from __future__ import annotations

import contextlib
import re

import bottle
import msgspec
import structlog

from blanket import protocol as P
from blanket.auth import ADMIN, OPERATOR, VIEWER, Forbidden, Identity
from blanket.errors import BlanketError, InvalidInput, NotFound
from blanket.models import Task, TaskState, Worker
from blanket.server.api import schemas as S
from blanket.server.api.access import identity
from blanket.server.api.http import (
    json_response,
    message_response,
    parse_id,
    query_float,
    read_message,
    serve,
)
from blanket.server.httppool import UNDELIVERED
from blanket.server.queue import AttemptEnd, Queue
from blanket.server.services import Services

log = structlog.get_logger("blanket.server")
MAX_POLL = 60.0
_HASH = re.compile(r"[0-9a-f]{16,64}")
_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _refused(task_id: int, error: BlanketError) -> P.SlotEnded:
    return P.SlotEnded(task=task_id, refused=error.message, status=error.status)


def install(app: bottle.Bottle, services: Services) -> None:
    routes = WorkerRoutes(services)
    app.route("/worker/", "GET", routes.list_workers, role=VIEWER)
    serve(app, P.REGISTER, routes.register, body=S.REGISTER)
    app.route("/worker/<worker_id>", "GET", routes.show, role=VIEWER)
    serve(app, P.LEAVE, routes.remove, query=S.REMOVE_WORKER)
    app.route("/worker/<worker_id>/pause", "POST", routes.pause, role=OPERATOR)
    app.route("/worker/<worker_id>/resume", "POST", routes.resume, role=OPERATOR)
    serve(app, P.CLAIM, routes.claim, query=S.CLAIM, no_content="no task came within ?wait")
    serve(app, P.STARTED, routes.started, body=S.STARTED)
    serve(app, P.HEARTBEAT, routes.heartbeat, body=S.ATTEMPT, query=S.POLL)
    serve(app, P.FINISHED, routes.finished, body=S.FINISHED)
    serve(app, P.EXCHANGE, routes.exchange, body=S.EXCHANGE)
    serve(app, P.RELEASE, routes.release, body=S.ATTEMPT)
    serve(app, P.BUNDLE, routes.bundle)


def give_back_if_undelivered(queue: Queue, task: Task) -> None:
    """A claim answered to a worker that hung up while it waited (it died) must not keep the
    task: it would sit claimed until it counts as lost, spending one of its attempts. The
    server calls this when the answer found no client; the task is queued again as it was."""
    token = task.token or ""

    def give_back() -> None:
        with contextlib.suppress(BlanketError):  # it started or ended meanwhile: it arrived
            queue.release(task.id, token)
            log.info("a claim found its worker gone: the task is queued again", task=task.id)

    bottle.request.environ[UNDELIVERED] = give_back


class WorkerRoutes:
    def __init__(self, services: Services):
        self.s = services
        self.registry = services.registry

    def list_workers(self):
        return json_response([w.to_json() for w in self.registry.listed()])

    def show(self, worker_id: str):
        return json_response(self.registry.shown(self.registry.get(worker_id)).to_json())

    def register(self):
        """A worker joins with its tags, which its token must allow."""
        request = read_message(P.Register)
        worker = self.registry.register(identity(), list(request.tags), request.host,
                                        request.pid, request.id)
        # The same server id in the worker's data dir: the two share their files.
        return message_response(P.Registered.of(worker, self.s.settings.heartbeat_interval,
                                                self.s.server_id), 201)

    def remove(self, worker_id: str):
        """Stop a worker (?mode=finish lets its task end, handback queues it again); a
        worker token may remove only its own workers."""
        worker, forgotten = self.registry.stop(
            worker_id, bottle.request.query.get("mode", "finish"), identity())
        return json_response(worker.to_json(), 200 if forgotten else 202)

    def pause(self, worker_id: str):
        return json_response(self.registry.pause(worker_id).to_json())

    def resume(self, worker_id: str):
        return json_response(self.registry.resume(worker_id).to_json())

    def claim(self, worker_id: str):
        """Long poll: 200 with a task and its type, 204 when none came within ?wait, 410 when
        the worker was asked to stop (it then leaves the list). With ?key, a claim asked
        again with the key of one whose answer never came is answered the task that one
        took, while it is still claimed."""
        worker = self.registry.owned(worker_id, identity())
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        key = bottle.request.query.get("key") or None
        if key is not None and not _KEY.fullmatch(key):
            raise InvalidInput("key must be 1 to 64 letters, digits, '-' or '_' (the same "
                               "for a claim asked again because its answer never came)")
        answer = self.registry.claim(worker, wait, key=key)
        if answer is None:
            return bottle.HTTPResponse(status=204)
        if isinstance(answer, P.Leave):
            return message_response(answer, 410)
        give_back_if_undelivered(self.s.queue, answer[0])
        return message_response(P.Claimed.of(*answer))

    def attempt(self, raw_id: str, token: str) -> tuple[int, str]:
        """(task id, attempt token) of a report, once its sender may make it."""
        task_id = parse_id(raw_id)
        self.registry.check_holder(identity(), task_id, token)
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
        return message_response(self.registry.heartbeat(*self.attempt(task_id, report.token),
                                                        wait))

    def finished(self, task_id: str):
        """The attempt ended; the answer may bring the worker's next task and a reserve."""
        report = read_message(P.Finished)
        held, token = self.attempt(task_id, report.token)
        task, taken = self.s.queue.finish_and_claim(
            held, token, TaskState(report.state), report.exit_code, report.error,
            handback=report.handback,
            started=msgspec.structs.asdict(report.started) if report.started else None,
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

    def exchange(self):
        """The end reports of a worker process's slots, ready together: one transaction for
        all, each answered alone (a refused one does not refuse the others), each bringing
        the claims it asked for its slot."""
        request = read_message(P.Exchange)
        caller = identity()
        ends: list[AttemptEnd] = []
        refusals: dict[int, BlanketError] = {}
        slots: dict[str, Worker | None] = {}
        for index, report in enumerate(request.reports):
            try:
                self.registry.check_holder(caller, report.task, report.token)
                worker = self._slot(report.worker, caller, slots) if report.wants else None
            except BlanketError as e:
                refusals[index] = e
                continue
            ends.append(AttemptEnd(
                report.task, report.token, TaskState(report.state), report.exit_code,
                report.error, report.handback,
                msgspec.structs.asdict(report.started) if report.started else None,
                # a slot the server forgot (a new database) claims nothing: it registers again
                report.wants if worker is not None else 0, report.running, worker))
        answers = iter(self.s.queue.end_attempts(ends))
        ended = []
        for index, report in enumerate(request.reports):
            if index in refusals:
                ended.append(_refused(report.task, refusals[index]))
                continue
            task, taken = next(answers)
            if isinstance(task, BlanketError):
                ended.append(_refused(report.task, task))
                continue
            claimed: list[P.Claimed | None] = [P.Claimed.of(*found) for found in taken]
            if report.running is not None:  # its reserve runs: what it took is the new one
                claimed.insert(0, None)
            ended.append(P.SlotEnded(task=task.id, state=task.state.value,
                                     next=claimed[0] if claimed else None,
                                     reserve=claimed[1] if len(claimed) > 1 else None))
        return message_response(P.Exchanged(ended=ended))

    def _slot(self, worker_id: str, caller: Identity,
              known: dict[str, Worker | None]) -> Worker | None:
        """The caller's worker `worker_id` (None if the server does not know it)."""
        if worker_id not in known:
            try:
                known[worker_id] = self.registry.owned(worker_id, caller)
            except NotFound:
                known[worker_id] = None
        return known[worker_id]

    def release(self, task_id: str):
        """A reserve its worker will not run (its current task runs long, or it is
        stopping) goes back to the queue, as if it had never been claimed."""
        report = read_message(P.AttemptReport)
        task = self.s.queue.release(*self.attempt(task_id, report.token))
        return json_response(task.to_json())

    def bundle(self, name: str):
        """A type version's files. A worker token fetches only the versions of tasks its
        workers hold: a bundle holds the type's file, secret defaults and all, and a token
        limited to some tags must not read the types of others."""
        digest = name.removesuffix(".tar.gz")
        if not _HASH.fullmatch(digest) or not name.endswith(".tar.gz"):
            raise InvalidInput(f"{name!r} is not a version bundle name (HASH.tar.gz)")
        caller = identity()
        if caller.role != ADMIN and not self.registry.holds_version(caller, digest):
            raise Forbidden(f"worker token {caller.name!r} may fetch only the versions of "
                            "tasks its workers hold")
        path = self.s.versions_dir / name
        if not path.is_file():
            raise NotFound(f"no version {digest}")
        return bottle.static_file(name, root=str(self.s.versions_dir),
                                  mimetype="application/gzip")

