"""What a worker on another machine sends of its task: POST /task/ID/log/STREAM, what the
task printed so far, while it runs (so its log can be read and followed here); and POST
/task/ID/outputs, what it printed and made (a tar.gz of the task directory), before its end
report. See blanket/outputs.py."""

from __future__ import annotations

import io
import tempfile
import threading
import weakref
from pathlib import Path

import bottle

from blanket import protocol as P
from blanket.errors import BlanketError, InvalidInput
from blanket.models import Task
from blanket.outputs import MAX_PACKED, BadOutputs, unpack
from blanket.protocol import MAX_LOG_CHUNK, TOKEN_HEADER
from blanket.server.api import schemas as S
from blanket.server.api.access import identity
from blanket.server.api.http import message_response, parse_id, serve
from blanket.server.services import Services


def install(app: bottle.Bottle, services: Services) -> None:
    routes = OutputRoutes(services)
    serve(app, P.OUTPUTS, routes.receive)
    serve(app, P.LOG, routes.append_log, query=S.OFFSET)


class OutputRoutes:
    def __init__(self, services: Services):
        self.s = services
        # Outputs of one task are unpacked one post at a time: each checks the folder's
        # size and files with what the others left, then moves its own in.
        self._unpacking: weakref.WeakValueDictionary[int, threading.Lock] = \
            weakref.WeakValueDictionary()
        self._locks = threading.Lock()

    def _lock_of(self, task_id: int) -> threading.Lock:
        with self._locks:
            lock = self._unpacking.get(task_id)
            if lock is None:
                lock = self._unpacking[task_id] = threading.Lock()
            return lock

    def _sender(self, task_id: str, what: str) -> Task:
        """The task, if the request comes from its current attempt (its token in the
        Blanket-Token header)."""
        token = bottle.request.get_header(TOKEN_HEADER) or ""
        return self.s.registry.sender(identity(), parse_id(task_id), token, what)

    def append_log(self, task_id: str, stream: str):
        """Bytes the running task printed, from `?offset=N` of its log. Bytes the server
        already has are skipped, so a resent chunk is harmless; a chunk beyond the end of
        the server's copy is refused (409: send again from 0). Answers {"size": N}, the
        length of the server's copy, where the next chunk starts."""
        task = self._sender(task_id, "log")
        path = self.s.logs.path(task, stream)
        offset = bottle.request.query.get("offset", "")
        if not offset.isdigit() or len(offset) > 15:
            raise InvalidInput("?offset must be where the chunk starts in the log (0 or more)")
        length = bottle.request.content_length
        if length <= 0 or length > MAX_LOG_CHUNK:
            raise BlanketError(f"send 1 to {MAX_LOG_CHUNK} bytes of log with a Content-Length",
                               code="bad_chunk", status=413 if length > 0 else 400)
        data = _read_body(bottle.request.environ["wsgi.input"], length)
        return message_response(P.LogTaken(size=self.s.logs.append(path, int(offset), data)))

    def receive(self, task_id: str):
        """Unpack the attempt's outputs into the server's copy of the task directory. Only
        the current attempt may send them (its token in the Blanket-Token header)."""
        task = self._sender(task_id, "outputs")
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
                with self._lock_of(task.id):
                    written = unpack(Path(archive.name), task_dir, staging, keep=task.inputs)
            except BadOutputs as e:
                raise InvalidInput(f"outputs of task {task.id} refused: {e}") from None
        return message_response(P.OutputsTaken(task=task.id, files=written))


def _read_body(stream, length: int) -> bytes:
    out = io.BytesIO()
    _copy_body(stream, length, out)
    return out.getvalue()


def _copy_body(stream, length: int, out) -> None:
    left = length
    while left > 0:
        chunk = stream.read(min(left, 1024 * 1024))
        if not chunk:
            raise InvalidInput(f"the body ended {left} bytes short of its Content-Length")
        out.write(chunk)
        left -= len(chunk)
