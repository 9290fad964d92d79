"""Worker-facing routes: register, claim (long poll), attempt reports, bundles; and the
routes people use to list, pause, resume and stop workers."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace

import bottle

from blanket.api.http import json_response, parse_id, query_float, read_json_body
from blanket.app import Services
from blanket.errors import InvalidInput, NotFound
from blanket.models import TaskState, Worker

MAX_POLL = 60.0
_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
_HASH = re.compile(r"[0-9a-f]{16,64}")


def install(app: bottle.Bottle, services: Services) -> None:
    routes = WorkerRoutes(services)
    app.route("/worker/", "GET", routes.list_workers)
    app.route("/worker/", "POST", routes.register)
    app.route("/worker/<worker_id>", "GET", routes.show)
    app.route("/worker/<worker_id>", "DELETE", routes.remove)
    app.route("/worker/<worker_id>/pause", "POST", routes.pause)
    app.route("/worker/<worker_id>/resume", "POST", routes.resume)
    app.route("/worker/<worker_id>/claim", "POST", routes.claim)
    app.route("/task/<task_id>/started", "POST", routes.started)
    app.route("/task/<task_id>/heartbeat", "POST", routes.heartbeat)
    app.route("/task/<task_id>/finished", "POST", routes.finished)
    app.route("/version/<name>", "GET", routes.bundle)


def _text(data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f'"{key}" must be a non-empty string')
    return value


class WorkerRoutes:
    def __init__(self, services: Services):
        self.s = services

    def worker_or_404(self, worker_id: str) -> Worker:
        worker = self.s.store.get_worker(worker_id)
        if worker is None:
            raise NotFound(f"no worker {worker_id!r}; it has to register first (POST /worker/)")
        return worker

    def list_workers(self):
        return json_response([w.to_json() for w in self.s.store.list_workers()])

    def show(self, worker_id: str):
        return json_response(self.worker_or_404(worker_id).to_json())

    def register(self):
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
        worker_id = _text(data, "id", required=False) or f"{host}-{pid}-{uuid.uuid4().hex[:6]}"
        if not _WORKER_ID.fullmatch(worker_id):
            raise InvalidInput(f"worker id {worker_id!r}: use letters, digits and _.:@-")
        now = time.time()
        worker = Worker(id=worker_id, tags=tuple(sorted(set(tags))), host=host, pid=pid,
                        state="idle", registered=now, heartbeat=now)
        self.s.store.save_worker(worker)
        body = worker.to_json()
        body["heartbeat_interval"] = self.s.settings.heartbeat_interval
        return json_response(body, 201)

    def remove(self, worker_id: str):
        worker = self.worker_or_404(worker_id)
        mode = bottle.request.query.get("mode", "finish")
        if mode not in ("finish", "handback"):
            raise InvalidInput("?mode must be finish (let its task end) or handback "
                               "(stop the task and queue it again)")
        if worker.state == "gone" or time.time() - worker.heartbeat > self.s.settings.lost_after:
            self.s.store.delete_worker(worker.id)
            return json_response({**worker.to_json(), "state": "gone"})
        stopping = replace(worker, state="stopping", stop_mode=mode)
        self.s.store.save_worker(stopping)
        self.s.wakeups.notify()
        return json_response(stopping.to_json(), 202)

    def pause(self, worker_id: str):
        return self._set_state(worker_id, "paused")

    def resume(self, worker_id: str):
        return self._set_state(worker_id, "idle")

    def _set_state(self, worker_id: str, state: str):
        worker = self.worker_or_404(worker_id)
        if worker.state == "stopping":
            raise InvalidInput(f"worker {worker_id} is stopping")
        if state == "idle" and worker.task is not None:
            state = "busy"
        updated = replace(worker, state=state)
        self.s.store.save_worker(updated)
        self.s.wakeups.notify()
        return json_response(updated.to_json())

    def claim(self, worker_id: str):
        """Long poll: 200 with a task and its type, or 204 when none came within ?wait."""
        worker = self.worker_or_404(worker_id)
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        self._touch(worker, task=None)
        control = self._control(worker.id)
        if control is not None:
            return control
        claimed = self.s.queue.claim_next_task(
            worker.id, frozenset(worker.tags), wait) if worker.state != "paused" else None
        if claimed is None:
            if worker.state == "paused":
                self.s.wakeups.wait_for(lambda: self._control(worker.id), wait)
            return self._control(worker.id) or bottle.HTTPResponse(status=204)
        task, task_type = claimed
        self._touch(self.worker_or_404(worker.id), task=task.id)
        return json_response({"task": task.to_json(with_token=True),
                              "type": task_type.to_json(),
                              "bundle": f"/version/{task.version}.tar.gz"})

    def _control(self, worker_id: str) -> bottle.HTTPResponse | None:
        """An answer telling the worker to stop, when someone asked it to."""
        worker = self.s.store.get_worker(worker_id)
        if worker is None or worker.state == "stopping":
            return json_response({"stop": worker.stop_mode if worker else "handback"}, 410)
        return None

    def _touch(self, worker: Worker, task: int | None) -> None:
        state = worker.state
        if state in ("idle", "busy", "gone"):
            state = "busy" if task is not None else "idle"
        self.s.store.save_worker(replace(worker, heartbeat=time.time(), task=task, state=state))

    def started(self, task_id: str):
        data = read_json_body()
        task = self.s.queue.report_started(parse_id(task_id), _text(data, "token") or "",
                                           data.get("pid"), data.get("directory"))
        return json_response(task.to_json())

    def heartbeat(self, task_id: str):
        data = read_json_body()
        wait = query_float("wait", 0.0, MAX_POLL) or 0.0
        task = self.s.queue.heartbeat(parse_id(task_id), _text(data, "token") or "", wait)
        worker = self.s.store.get_worker(task.worker) if task.worker else None
        if worker is not None:
            self.s.store.save_worker(replace(worker, heartbeat=time.time()))
        handback = worker is not None and worker.stop_mode == "handback"
        return json_response({"stop": task.stop_requested or handback,
                              "handback": handback and not task.stop_requested,
                              "state": task.state.value})

    def finished(self, task_id: str):
        data = read_json_body()
        try:
            state = TaskState(data.get("state"))
        except ValueError:
            raise InvalidInput('"state" must be SUCCESS, FAILED, TIMEDOUT or STOPPED') from None
        exit_code = data.get("exit_code")
        if exit_code is not None and (isinstance(exit_code, bool)
                                      or not isinstance(exit_code, int)):
            raise InvalidInput('"exit_code" must be an integer or null')
        handback = bool(data.get("handback"))
        task = self.s.queue.finish_attempt(parse_id(task_id), _text(data, "token") or "",
                                           state, exit_code, data.get("error"),
                                           handback=handback)
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
