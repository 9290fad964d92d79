"""Routes for tasks: submit, list, show, remove, stop, rerun, logs, files, progress."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO

import bottle

from blanket.auth import OPERATOR, SUBMITTER, VIEWER, WORKER, Forbidden
from blanket.durations import parse_duration
from blanket.errors import BlanketError, DuplicateTask, InvalidInput, NotFound
from blanket.models import FINAL_STATES, SORT_COLUMNS, Task, TaskFilter, TaskState
from blanket.server import idempotency
from blanket.server.api import schemas as S
from blanket.server.api.access import identity, refusal
from blanket.server.api.http import (
    MAX_BULK_BODY,
    check_body,
    flag,
    json_response,
    parse_id,
    parse_json,
    query_float,
    query_int,
    read_body,
    read_json_body,
)
from blanket.server.api.logfollow import READ_LIMIT, LineSplitter, LogReader
from blanket.server.api.taskfiles import Masker, list_task_files, serve_task_file
from blanket.server.intake import (
    TaskRequest,
    Upload,
    check_file_count,
    open_regular,
    parse_task_request,
    parse_time,
)
from blanket.server.services import Services
from blanket.wakeups import task_topic

MAX_WAIT = 24 * 3600.0
MAX_BULK = 10_000  # tasks in one bulk submission
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
MAX_IDEMPOTENCY_KEY = 255
KEEPALIVE = 5.0  # seconds of a followed log's silence before a comment tells a gone client
_NUMBER = re.compile(r"\d{1,12}(\.\d{0,9})?")


def _starts_array(head: bytes) -> bool:
    return head.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"[")


def install(app: bottle.Bottle, services: Services) -> None:
    routes = TaskRoutes(services)
    app.route("/task/", "GET", routes.list_tasks, role=VIEWER, query=S.TASK_LIST)
    app.route("/task/", "POST", routes.submit, role=SUBMITTER, body=S.SUBMISSION,
              query=S.WAIT, bulk=MAX_BULK)
    app.route("/tasks/<type_name>/", "POST", routes.submit_environment, role=SUBMITTER,
              body=S.ENVIRONMENT_ONLY, query=S.WAIT)
    app.route("/task/<task_id>", "GET", routes.show, role=VIEWER, query=S.WAIT)
    app.route("/task/<task_id>", "DELETE", routes.remove, role=SUBMITTER, query=S.FORCE)
    app.route("/task/<task_id>/stop", "POST", routes.stop, role=SUBMITTER)
    app.route("/task/<task_id>/rerun", "POST", routes.rerun, role=SUBMITTER)
    app.route("/task/<task_id>/progress", "POST", routes.progress, role=OPERATOR,
              attempt_token=True, body=S.PROGRESS)
    app.route("/task/<task_id>/log/<stream>", "GET", routes.log, role=VIEWER, query=S.FOLLOW)
    app.route("/task/<task_id>/notifications", "GET", routes.notifications, role=VIEWER)
    app.route("/task/<task_id>/files/", "GET", routes.list_files, role=VIEWER)
    app.route("/task/<task_id>/files/<path:path>", "GET", routes.file, role=(VIEWER, WORKER))


class TaskRoutes:
    def __init__(self, services: Services):
        self.s = services

    def task_or_404(self, raw_id: str) -> Task:
        return self.s.tasks.get(parse_id(raw_id))

    def task_dir(self, task: Task) -> Path:
        return self.s.intake.task_dir(task.type, task.id)

    def list_tasks(self):
        """Tasks, newest first (?state, type, tags, added_after, added_before, limit...)."""
        flt = task_filter(bottle.request.query)
        if flag("count"):
            return json_response({"count": self.s.tasks.count(flt)})
        return json_response(self.shown(self.s.tasks.list(flt)))

    def submit(self):
        """Submit a task (JSON, a form field `data`, or multipart with files), or many at
        once (a JSON array, or NDJSON: one task object a line)."""
        wait = _wait_asked()
        items = self.read_many()
        if items is not None:
            if wait is not None:
                raise InvalidInput("?wait waits for one task; submit the tasks, then wait for "
                                   "each (GET /task/ID?wait... or blanket wait ID...)")
            return self.submit_all(items)
        return self.submit_one(self.read_request(front=wait is not None), wait)

    def caller_fields(self, data: Any, uploads: tuple[Upload, ...] = ()
                      ) -> dict[str, str | None]:
        """What a single submission's request carries of its caller: who submits it, and
        its Idempotency-Key, per caller (another token's key names nothing of this one's),
        with the fingerprint of the request (`data` and `uploads`) it came with."""
        name = identity().name
        key = bottle.request.get_header("Idempotency-Key")  # its length: see submit_one
        if not key:
            return {"submitted_by": name, "dedupe_key": None}
        return {"submitted_by": name, "dedupe_key": f"client:{name}:{key}",
                "fingerprint": idempotency.fingerprint(data, uploads)}

    def submit_one(self, request: TaskRequest, wait: float | None):
        """Store one submission the caller may make (its request made with
        `caller_fields`); with `wait`, answer once it ended."""
        caller = identity()
        if not caller.may_submit(request.type):
            raise Forbidden(f"token {caller.name!r} may not submit tasks of type "
                            f"{request.type!r}")
        self.idempotency_key()  # a key too long is refused, once the caller may submit
        try:
            task = self.s.intake.submit(request)
        except DuplicateTask as e:
            existing = self.s.tasks.find(e.task_id)
            if existing is None:  # removed since
                return json_response({"id": e.task_id}, 200)
            if wait is not None:  # sent again while its caller waits: it waits as the first
                existing = self.wait_until_ended(existing, wait)
            return json_response(self.shown([existing])[0], 200)
        if wait is not None:
            task = self.wait_until_ended(task, wait)
        return json_response(self.shown([task])[0], 201)

    def submit_environment(self, type_name: str):
        """The seed's spelling, `POST /tasks/TYPE/` with the environment as the body: the
        same as POST /task/ with {"type": TYPE, "environment": body}."""
        body = read_json_body(required=False)  # checked: an object of NAME: value
        wait = _wait_asked()
        data = {"type": type_name, "environment": body}
        request = parse_task_request(data, time.time(), front=wait is not None,
                                     **self.caller_fields(data))
        return self.submit_one(request, wait)

    def read_many(self) -> list[Any] | None:
        """The items of a bulk submission: a JSON array, or NDJSON (one JSON object a line,
        blank lines skipped); None for a single task."""
        content_type = bottle.request.content_type.split(";")[0].strip().lower()
        if content_type in NDJSON_TYPES:
            raw = read_body(MAX_BULK_BODY)
            items = []
            for number, line in enumerate(raw.split(b"\n"), start=1):
                if line.strip():
                    items.append(parse_json(line, f"line {number}"))
        # curl -d sends form data unless told otherwise: a body that is a JSON array is one
        elif content_type in ("", "application/json", "application/x-www-form-urlencoded") \
                and _starts_array(self.peek()):
            items = parse_json(read_body(MAX_BULK_BODY))
        else:
            return None
        if not items:
            raise InvalidInput("the list of tasks is empty; send at least one task")
        if len(items) > MAX_BULK:
            raise InvalidInput(f"{len(items)} tasks in one request; the limit is {MAX_BULK}: "
                               "send them in several requests")
        return items

    def peek(self) -> bytes:
        """The first bytes of the body, left to be read again."""
        body = bottle.request.body  # bottle keeps it, seekable, once read
        head = body.read(64)
        body.seek(0)
        return head

    def submit_all(self, items: list[Any]):
        """Store every task of a bulk submission in one transaction, or none: 400 listing
        each item that is wrong (its index and what to fix)."""
        caller = identity()
        key = self.idempotency_key()
        now = time.time()
        fingerprint = idempotency.fingerprint(items) if key else None
        keys = idempotency.list_keys(self.s.intake, f"client:{caller.name}:{key}", len(items)) \
            if key else [None] * len(items)
        requests: list[TaskRequest | InvalidInput] = []
        for index, item in enumerate(items):
            try:
                request = parse_task_request(
                    check_body(item, "the task"), now, submitted_by=caller.name,
                    dedupe_key=keys[index], fingerprint=fingerprint)
                if not caller.may_submit(request.type):
                    raise InvalidInput(f"token {caller.name!r} may not submit tasks of type "
                                       f"{request.type!r}")
            except InvalidInput as e:
                requests.append(e)  # named with the others the intake refuses
                continue
            requests.append(request)
        tasks = self.s.intake.submit_all(requests, now)
        return json_response({"count": len(tasks), "tasks": [
            {"id": t.id, "type": t.type, "state": t.state.value} for t in tasks]}, 201)

    def idempotency_key(self) -> str | None:
        key = bottle.request.get_header("Idempotency-Key")
        if key and len(key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidInput(f"the Idempotency-Key header is over {MAX_IDEMPOTENCY_KEY} "
                               "characters; send a shorter key, such as a UUID")
        return key or None

    def wait_until_ended(self, task: Task, wait: float) -> Task:
        """The task once it ended, or as it is when `wait` runs out; 410 if it was removed
        meanwhile."""
        if not 0 <= wait <= MAX_WAIT:  # NaN too: it would never run out
            raise InvalidInput(f"a wait is 0 to {MAX_WAIT:g} seconds, not {wait!r}")
        def ended() -> Task | bool | None:
            current = self.s.tasks.find(task.id)
            return False if current is None else has_ended(current)

        result = self.s.wakeups.wait_for(ended, wait, topics=(task_topic(task.id),))
        current = self.s.tasks.find(task.id) if result is None else result
        if not current:
            raise BlanketError(f"task {task.id} was removed before it ended", code="gone",
                               status=410)
        return current

    def read_request(self, front: bool) -> TaskRequest:
        """A submission in any of the forms clients send: JSON (whatever the content type
        says), a form field `data`, or multipart with a `data` field or file plus files."""
        now = time.time()
        content_type = bottle.request.content_type.split(";")[0].strip().lower()
        uploads: list[Upload] = []
        if content_type == "multipart/form-data":
            data, uploads = self.read_multipart()
        elif content_type == "application/x-www-form-urlencoded":
            data = self.read_form_body()
        else:
            data = read_json_body(checked=False)
        # Checked once, whichever form it came in.
        return parse_task_request(check_body(data, "the task"), now, front=front,
                                  uploads=tuple(uploads),
                                  **self.caller_fields(data, tuple(uploads)))

    def read_form_body(self):
        raw = read_body()
        stripped = raw.lstrip()
        if stripped.startswith(b"{") or not stripped:
            return parse_json(raw) if stripped else read_json_body()
        data = bottle.request.forms.getunicode("data")
        if data is None and "data" in bottle.request.forms:
            raise InvalidInput("the data field is not UTF-8 text; send the task JSON in UTF-8")
        if data is None:
            raise InvalidInput("send the task as JSON, or as a form field named data")
        return parse_json(data, "the data field")

    def read_multipart(self):
        # Counted before Bottle parses them (see count_parts); the task's data is a part too.
        parts = count_parts(bottle.request.body,
                            bottle.request.environ.get("CONTENT_TYPE", ""))
        try:
            check_file_count(parts - 1)
        except InvalidInput as refused:
            raise InvalidInput(f"the multipart body has {parts} parts: {refused.message}") \
                from None
        try:
            files = bottle.request.files
            forms = bottle.request.forms
        except ValueError as e:  # bottle refuses e.g. a NUL in a part's header
            raise InvalidInput(f"the multipart body is malformed: {e}") from None
        if len(files.getall("data")) + len(forms.getall("data")) > 1:
            raise InvalidInput("the multipart body has more than one part named data; send "
                               "the task JSON once")
        loose = sorted(name for name in forms if name != "data")
        if loose:
            raise InvalidInput(
                f"the multipart part(s) {', '.join(map(repr, loose))} carry no file name, so "
                "they are neither a file nor the task; give each file a name, e.g. "
                "-F 'input=@scan.pdf', and put everything else in the data field")
        if "data" in files:
            data = parse_json(files["data"].file.read(), "the data file")
        elif forms.getunicode("data") is not None:
            data = parse_json(forms.getunicode("data"), "the data field")
        else:
            raise InvalidInput("multipart submissions need a field or file named data holding "
                               'the task JSON, e.g. -F data=\'{"type": "NAME"}\'')
        uploads = [Upload(f.raw_filename or name, f.file)
                   for name, f in files.allitems() if name != "data"]
        return data, uploads

    def show(self, task_id: str):
        """One task's record (secret values shown as ***); with ?wait=S, once it ended or S
        seconds passed, whichever comes first (a client polls with short waits to show
        progress meanwhile)."""
        task = self.task_or_404(task_id)
        wait = query_float("wait", None, MAX_WAIT)
        if wait is not None and not has_ended(task):
            task = self.wait_until_ended(task, wait)
        shown = self.shown([task], one=True)[0]
        run = self.s.workflows.run_of_task(task.id)
        if run is not None:  # a step of a workflow run: which
            shown["run"] = run
        return json_response(shown)

    def notifications(self, task_id: str):
        """The notifications its end made ([[notify]]): to what, how each went."""
        task = self.task_or_404(task_id)
        return json_response({"task": task.id, "notifications": [
            d.to_json() for d in self.s.tasks.notifications(task.id)]})

    def shown(self, tasks: list[Task], one: bool = False) -> list[dict]:
        """Tasks as the API shows them: a queued one with why it waits (`waiting`: code and
        message; `no_worker` when no worker that is up could ever take it; for `one` task,
        its place in line too)."""
        reasons = self.s.waiting.explain(tasks, place_in_line=one)
        return [{**t.to_json(), "waiting": reasons[t.id].to_json()} if t.id in reasons
                else t.to_json() for t in tasks]

    def changeable_task(self, raw_id: str) -> Task:
        """The task, if the caller may stop, rerun or remove it (403 otherwise)."""
        task = self.task_or_404(raw_id)
        caller = identity()
        if not caller.may_change(task):
            raise Forbidden(f"task {task.id} was submitted by {task.submitted_by or 'someone'}"
                            f"; {caller.name!r} may change only its own tasks")
        return task

    def remove(self, task_id: str):
        """Remove a task and its files (?force: a running one too)."""
        task = self.changeable_task(task_id)
        removed = self.s.queue.remove(task, identity().name, force=flag("force"))
        return json_response(removed.to_json())

    def stop(self, task_id: str):
        """Stop a task: a queued one at once, a running one through its worker."""
        task = self.changeable_task(task_id)
        return json_response(self.s.queue.stop_task(task.id, identity().name).to_json())

    def rerun(self, task_id: str):
        """Submit a task again with the same type, environment (secrets too) and files."""
        old = self.changeable_task(task_id)
        caller = identity()
        if not caller.may_submit(old.type):
            raise Forbidden(f"token {caller.name!r} may not submit tasks of type {old.type!r}")
        folder = self.task_dir(old)
        with ExitStack() as stack:
            uploads = tuple(Upload(n, stack.enter_context(open_regular(folder / n)))
                            for n in old.inputs
                            if (folder / n).is_file() and not (folder / n).is_symlink())
            task = self.s.intake.submit(TaskRequest(
                type=old.type, environment=dict(old.environment), tags=old.tags,
                priority=old.priority, schedule=old.schedule, uploads=uploads,
                submitted_by=caller.name, trusted_environment=True))
        return json_response(self.shown([task])[0], 201)

    def progress(self, task_id: str):
        """A running task's progress (0-100, a message). Operators may set any task's; the
        task itself sends its attempt token (BLANKET_TASK_TOKEN)."""
        data = read_json_body(checked=False)  # who may send it is decided first
        token = data.get("token") if isinstance(data, dict) else None
        trusted = identity().at_least(OPERATOR)
        if not trusted and not isinstance(token, str):
            raise refusal(identity(), OPERATOR)
        check_body(data)
        task = self.task_or_404(task_id)
        if not trusted and not (task.token is not None and hmac.compare_digest(
                str(token).encode(), task.token.encode())):
            raise refusal(identity(), OPERATOR)
        value = data.get("progress") if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput('send {"progress": 0-100, "message": "optional text"}')
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise InvalidInput('"message" must be a string')
        updated = self.s.queue.set_progress(task.id, data.get("token"), value, message)
        return json_response(updated.to_json())

    def log(self, task_id: str, stream: str):
        task = self.task_or_404(task_id)
        path = self.s.logs.path(task, stream)
        follow = flag("follow") or "text/event-stream" in bottle.request.get_header(
            "Accept", "")
        if follow:
            bottle.response.content_type = "text/event-stream"
            bottle.response.set_header("Cache-Control", "no-cache")
            return self.follow_log(task.id, path, Masker.of(task))
        if not path.is_file():
            raise NotFound(f"task {task.id} has no {stream} log yet")
        return serve_task_file(path.parent, path.name, Masker.of(task))

    def follow_log(self, task_id: int, path: Path, masker: Masker) -> Iterator[bytes]:
        """Server-sent events: each new line as a `data:` event, then `event: end`. Bytes,
        not text: Bottle encodes text chunks by its thread-local response, and a stream may
        be sent from another thread than the one that ran the route (httppool.py). A
        comment comes first, so that the first chunk, which Bottle reads on the thread that
        ran the route, never waits for the log; and again after KEEPALIVE seconds of silence,
        so that a client gone while the task prints nothing is noticed."""
        reader, lines = LogReader(path), LineSplitter(masker)  # see logfollow.py
        try:
            yield b": following\n\n"
            quiet_since = time.monotonic()
            while True:
                task = self.s.tasks.find(task_id)
                chunk = reader.read()
                found = lines.feed(chunk)
                for line in found:
                    yield _event_data(line)
                if found:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE:
                    yield b": \n\n"
                    quiet_since = time.monotonic()
                if len(chunk) == READ_LIMIT:
                    continue  # more is there to read now
                if task is None or has_ended(task):
                    if (rest := lines.rest()) is not None:
                        yield _event_data(rest)
                    state = task.state.value if task else "REMOVED"
                    yield f"event: end\ndata: {state}\n\n".encode()
                    return
                if not chunk:
                    self.s.wakeups.wait_for(lambda: None, 0.25, topics=(task_topic(task_id),))
        finally:
            reader.close()

    def list_files(self, task_id: str):
        """The files in the task's directory, with their sizes."""
        return json_response(list_task_files(self.task_dir(self.task_or_404(task_id))))

    def file(self, task_id: str, path: str):
        """One file of the task's directory; a worker reads only its own task's inputs."""
        task = self.task_or_404(task_id)
        caller = identity()
        if not caller.at_least(VIEWER) and not self.s.registry.holds(caller, task):
            raise Forbidden(f"worker token {caller.name!r} may read only the files of "
                            "tasks its workers hold")
        return serve_task_file(self.task_dir(task), path, Masker.of(task))


def count_parts(body: BinaryIO, content_type: str, chunk_size: int = 1024 * 1024) -> int:
    """How many parts a multipart body has, counted by its boundary before Bottle parses it:
    Bottle makes an object of every part first, a hundred thousand tiny files in a few
    megabytes would take hundreds of megabytes of memory."""
    message = Message()
    message["Content-Type"] = content_type
    named = [key for key, _ in message.get_params(failobj=[])[1:]
             if key.strip().lower().startswith("boundary")]
    if len(named) > 1:  # parsers differ on which one counts (Bottle takes the last)
        raise InvalidInput("the Content-Type names its boundary more than once; name it once")
    # The boundary as Bottle reads it, which is the one its parser will split the body by.
    boundary = bottle._parse_http_header(content_type)[0][1].get("boundary")
    if not isinstance(boundary, str) or not boundary:
        return 0  # Bottle refuses it, saying why
    # A delimiter starts a line (the first may start the body: the carry's newline).
    delimiter = b"\n--" + bottle.tob(boundary)
    found, carry = 0, b"\n"
    body.seek(0)
    while chunk := body.read(chunk_size):
        window = carry + chunk
        found += window.count(delimiter)
        # A delimiter cut by the chunk's end is whole in the next window; the tail carried
        # is too short to hold one already counted.
        carry = window[-(len(delimiter) - 1):]
    body.seek(0)
    return max(0, found - 1)  # the last delimiter closes the body


def _event_data(line: bytes) -> bytes:
    """One log line as a server-sent event. SSE ends a line at a CR as at an LF: a CR in the
    log (a progress bar redrawn) would end the data there and let what follows it be read as
    a field of its own (`event: end`, written by the task). So each part is a data line of
    its own, which the client joins with newlines."""
    text = line.decode(errors="replace").removesuffix("\r")  # a CRLF line is one line
    return ("".join(f"data: {part}\n" for part in text.split("\r")) + "\n").encode()


def has_ended(task: Task | None) -> Task | None:
    if task is not None and (task.state in FINAL_STATES or task.state is TaskState.LOST):
        return task
    return None


def _wait_asked() -> float | None:
    """A submission's ?wait=S, or ?sync=S (the seed's spelling); None when neither."""
    wait = query_float("wait", None, MAX_WAIT)
    return query_float("sync", None, MAX_WAIT) if wait is None else wait


def task_filter(query: bottle.FormsDict) -> TaskFilter:
    """A TaskFilter from ?state=&type=&tags=&schedule=&worker=&by=&q=&added_after=
    &added_before=&limit=&offset=&order="""
    def words(name: str) -> tuple[str, ...]:
        return tuple(w.strip() for v in query.getall(name) for w in v.split(",") if w.strip())

    states = tuple(s.upper() for s in words("state"))
    bad = [s for s in states if s not in TaskState.__members__]
    if bad:
        raise InvalidInput(f"unknown state(s) {', '.join(bad)}; use "
                           f"{', '.join(TaskState.__members__)}")
    order = query.get("order", "newest")
    if order not in ("newest", "oldest", "asc", "desc"):
        raise InvalidInput(f"?order={order!r}: use newest or oldest (asc or desc)")
    sort = query.get("sort", "id")
    if sort not in SORT_COLUMNS:
        raise InvalidInput(f"?sort={sort!r}: sort by {', '.join(SORT_COLUMNS)}")
    return TaskFilter(
        states=states, types=words("type"), tags=words("tags"),
        schedule=query.get("schedule") or None,
        added_after=_time(query, "added_after"), added_before=_time(query, "added_before"),
        worker=query.get("worker") or None, submitted_by=query.get("by") or None,
        search=(query.get("q") or "").strip() or None,  # at most 200: its query schema
        limit=query_int("limit", 100, 10_000, query),
        offset=query_int("offset", 0, 10**12, query),
        oldest_first=order in ("oldest", "asc"), sort=sort,
    )


def _time(query: bottle.FormsDict, name: str) -> float | None:
    """Unix seconds, ISO 8601 with an offset, or a relative time, from the query string."""
    raw = query.get(name)
    if not raw:
        return None
    if _NUMBER.fullmatch(raw):
        return float(raw)
    if raw.startswith("-"):  # "-2h": that long ago, as the parameter's description says
        try:
            return max(0.0, time.time() - parse_duration(raw[1:]))
        except ValueError as e:
            raise InvalidInput(f"{name}: {e}") from None
    return parse_time(raw, time.time(), name)


