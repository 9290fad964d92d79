"""POST /task/ID/outputs: a worker on another machine hands over what its task printed and
made (a tar.gz of the task directory), before its end report. See blanket/outputs.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import bottle

from blanket.api.http import json_response, parse_id
from blanket.app import Services
from blanket.errors import BlanketError, InvalidInput, NotFound, StaleAttempt
from blanket.models import ACTIVE_STATES
from blanket.outputs import MAX_PACKED, TOKEN_HEADER, BadOutputs, unpack


def install(app: bottle.Bottle, services: Services) -> None:
    routes = OutputRoutes(services)
    app.route("/task/<task_id>/outputs", "POST", routes.receive)


class OutputRoutes:
    def __init__(self, services: Services):
        self.s = services

    def receive(self, task_id: str):
        """Unpack the attempt's outputs into the server's copy of the task directory. Only
        the current attempt may send them (its token in the Blanket-Token header)."""
        task = self.s.store.get_task(parse_id(task_id))
        if task is None:
            raise NotFound(f"no task {task_id}")
        token = bottle.request.get_header(TOKEN_HEADER) or ""
        if not token or token != task.token or task.state not in ACTIVE_STATES:
            raise StaleAttempt(f"task {task.id} is not held by this attempt (it is "
                               f"{task.state.value}); its outputs were refused")
        length = bottle.request.content_length
        if length <= 0:
            raise InvalidInput("send the outputs as a tar.gz body with a Content-Length")
        if length > MAX_PACKED:
            raise BlanketError(f"the outputs are {length} bytes; the limit is {MAX_PACKED}",
                               code="too_large", status=413)
        task_dir = self.s.intake.task_dir(task.type, task.id)
        task_dir.mkdir(parents=True, exist_ok=True)
        staging = self.s.intake.staging_dir  # cleared at start: a crash leaves nothing behind
        staging.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=staging, prefix=f"outputs-{task.id}-",
                                         suffix=".tar.gz") as archive:
            _copy_body(bottle.request.environ["wsgi.input"], length, archive)
            archive.flush()
            try:
                written = unpack(Path(archive.name), task_dir, staging)
            except BadOutputs as e:
                raise InvalidInput(f"outputs of task {task.id} refused: {e}") from None
        return json_response({"task": task.id, "files": written})


def _copy_body(stream, length: int, out) -> None:
    left = length
    while left > 0:
        chunk = stream.read(min(left, 1024 * 1024))
        if not chunk:
            raise InvalidInput(f"the body ended {left} bytes short of its Content-Length")
        out.write(chunk)
        left -= len(chunk)
