"""Worker-facing routes: register, claim (long poll), attempt reports, bundles; and the
routes people use to list, pause, resume and stop workers. The rules are the worker
registry's (blanket/registry.py) and the queue's; these parse and answer."""

from __future__ import annotations

import re
import select
import socket

import bottle

from blanket.api import schemas as S
from blanket.api.access import identity
from blanket.api.http import json_response, parse_id, query_float, read_json_body
from blanket.app import Services
from blanket.auth import ADMIN, OPERATOR, VIEWER, WORKER
from blanket.errors import InvalidInput, NotFound
from blanket.models import Task, TaskState
from blanket.registry import Leave
from blanket.tasktype import TaskType

MAX_POLL = 60.0
_HASH = re.compile(r"[0-9a-f]{16,64}")


def install(app: bottle.Bottle, services: Services) -> None:
    routes = WorkerRoutes(services)
    app.route("/worker/", "GET", routes.list_workers, role=VIEWER)
    app.route("/worker/", "POST", routes.register, role=WORKER, body=S.REGISTER)
    app.route("/worker/<worker_id>", "GET", routes.show, role=VIEWER)
    app.route("/worker/<worker_id>", "DELETE", routes.remove, role=(OPERATOR, WORKER),
              query=S.REMOVE_WORKER)
    app.route("/worker/<worker_id>/pause", "POST", routes.pause, role=OPERATOR)
    app.route("/worker/<worker_id>/resume", "POST", routes.resume, role=OPERATOR)
    app.route("/worker/<worker_id>/claim", "POST", routes.claim, role=WORKER, query=S.POLL,
              no_content="no task came within ?wait")
    app.route("/task/<task_id>/started", "POST", routes.started, role=WORKER, body=S.STARTED)
    app.route("/task/<task_id>/heartbeat", "POST", routes.heartbeat, role=WORKER,
              body=S.ATTEMPT, query=S.POLL)
    app.route("/task/<task_id>/finished", "POST", routes.finished, role=WORKER, body=S.FINISHED)
    app.route("/task/<task_id>/release", "POST", routes.release, role=WORKER, body=S.ATTEMPT)
    app.route("/version/<name>", "GET", routes.bundle, role=(ADMIN, WORKER))


def _text(data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f'"{key}" must be a non-empty string')
    return value


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
        self.registry = services.registry

    def list_workers(self):
        return json_response([w.to_json() for w in self.registry.listed()])

    def show(self, worker_id: str):
        return json_response(self.registry.shown(self.registry.get(worker_id)).to_json())

    def register(self):
        """A worker joins with its tags, which its token must allow."""
        data = read_json_body()
        if not isinstance(data, dict):
            raise InvalidInput("send the worker as a JSON object")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput('"tags" must be a list of strings')
        host = _text(data, "host") or ""
        pid = data.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InvalidInput('"pid" must be an integer')
        worker = self.registry.register(identity(), tags, host, pid,
                                        _text(data, "id", required=False))
        body = worker.to_json()
        body["heartbeat_interval"] = self.s.settings.heartbeat_interval
        body["server_id"] = self.s.server_id  # the same id in its data dir: files are shared
        return json_response(body, 201)

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
        the worker was asked to stop (it then leaves the list)."""
        worker = self.registry.owned(worker_id, identity())
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        caller = bottle.request.environ
        answer = self.registry.claim(worker, wait, lambda: hung_up(caller))
        if answer is None:
            return bottle.HTTPResponse(status=204)
        if isinstance(answer, Leave):
            return json_response({"stop": answer.mode}, 410)
        return json_response(_claimed_json(*answer))

    def attempt(self, raw_id: str, data: dict) -> tuple[int, str]:
        """(task id, attempt token) of a report, once its sender may make it."""
        task_id, token = parse_id(raw_id), _text(data, "token") or ""
        self.registry.check_holder(identity(), task_id, token)
        return task_id, token

    def started(self, task_id: str):
        """The attempt's process started."""
        data = read_json_body()
        task = self.s.queue.report_started(*self.attempt(task_id, data), data.get("pid"),
                                           data.get("directory"))
        return json_response(task.to_json())

    def heartbeat(self, task_id: str):
        """Record that the attempt is alive; with ?wait, hold until it must stop (the task
        was stopped, or its worker must hand it back)."""
        data = read_json_body()
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        orders = self.registry.heartbeat(*self.attempt(task_id, data), wait)
        return json_response(orders.to_json())

    def finished(self, task_id: str):
        """The attempt ended; the answer may bring the worker's next task and a reserve."""
        data = read_json_body()
        held, token = self.attempt(task_id, data)
        try:
            state = TaskState(data.get("state"))
        except ValueError:
            raise InvalidInput('"state" must be SUCCESS, FAILED, TIMEDOUT or STOPPED') from None
        exit_code = data.get("exit_code")
        if exit_code is not None and (isinstance(exit_code, bool)
                                      or not isinstance(exit_code, int)):
            raise InvalidInput('"exit_code" must be an integer or null')
        handback = bool(data.get("handback"))
        started = data.get("started")
        claim_next = data.get("claim_next", 0)
        if claim_next not in (True, False, 0, 1, 2):
            raise InvalidInput('"claim_next" must be 0, 1 or 2 (or true for 1)')
        running = data.get("running")
        if running is not None and (isinstance(running, bool) or not isinstance(running, int)):
            raise InvalidInput('"running" must be the id of the task the worker runs now')
        task, taken = self.s.queue.finish_and_claim(
            held, token, state, exit_code, data.get("error"),
            handback=handback, started=started if isinstance(started, dict) else None,
            claim_next=int(claim_next), running=running)
        if not claim_next:
            return json_response(task.to_json())
        # The worker asked for its next task (and maybe a reserve) in the same round trip (no
        # waiting here: when none is ready it long-polls the claim route as usual).
        claimed = [_claimed_json(*found) for found in taken]
        if running is not None:  # it runs its reserve: what it took is its new reserve
            claimed.insert(0, None)
        return json_response({"task": task.to_json(),
                              "next": claimed[0] if claimed else None,
                              "reserve": claimed[1] if len(claimed) > 1 else None})

    def release(self, task_id: str):
        """A reserve its worker will not run (its current task runs long, or it is
        stopping) goes back to the queue, as if it had never been claimed."""
        data = read_json_body()
        task = self.s.queue.release(*self.attempt(task_id, data))
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


def _claimed_json(task: Task, task_type: TaskType) -> dict:
    """What a worker receives for a claimed task: the task with its token, its type, and
    where to fetch the type version's bundle."""
    return {"task": task.to_json(with_token=True), "type": task_type.to_json(),
            "bundle": f"/version/{task.version}.tar.gz"}
