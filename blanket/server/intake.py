"""The one path by which tasks are created: the API, the CLI, the inbox and the scheduler
all call `Intake.submit`."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from blanket.config.checker import MAX_DURATION, MAX_RETRY_DELAY
from blanket.config.tasktype import TaskType
from blanket.config.workflow import STEP_TYPE_PREFIX
from blanket.durations import format_duration, parse_duration
from blanket.envnames import ENV_NAME, loader_name, too_big, too_long
from blanket.errors import DuplicateTask, InvalidInput, ItemsRefused, StorageFull, is_disk_full
from blanket.models import AFTER_POLICIES, MAX_AFTER, MAX_PRIORITY, Task
from blanket.server import idempotency
from blanket.server.metrics import Metrics
from blanket.server.pricing import estimate_from_history, task_score
from blanket.store.base import NewTask, Store
from blanket.taskdir import RESERVED_NAMES, DataDir

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
REQUEST_KEYS = ("type", "environment", "tags", "not_before", "priority", "timeout", "retries",
                "retry_delay", "after", "after_policy")
MAX_EDGES = 10_000  # `after` entries in one bulk submission, all tasks together
MAX_TASK_RETRIES = 1000  # retries one submission may ask for, whatever its type allows
MAX_SUBMITTED_FILES = 1000  # files one task may be submitted with (its record names each)
SCHEDULE_PREFIX = "schedule."  # the type name of a command schedule's own command
ESTIMATE_TTL = 30.0  # seconds a type's history-based estimate is reused
LATEST_TIME = 253_402_300_800.0  # 10000-01-01T00:00:00Z: later times cannot be shown as dates


@dataclass(frozen=True)
class Upload:
    """A file that lands at the root of the task's directory."""

    name: str
    source: BinaryIO | Path  # an open stream, or a file to move in


@dataclass(frozen=True)
class TaskRequest:
    type: str
    environment: dict[str, Any]
    tags: tuple[str, ...] = ()
    not_before: float | None = None
    priority: int = 0
    schedule: str | None = None
    front: bool = False  # a caller waits on it: it goes ahead of the queue
    uploads: tuple[Upload, ...] = ()
    dedupe_key: str | None = None
    fingerprint: str | None = None  # of a request with a client's key (server/idempotency.py)
    submitted_by: str | None = None
    # Set by config files (a schedule's environment) and reruns of accepted tasks: any name
    # goes. A submission may set only the names its type declares or allows.
    trusted_environment: bool = False
    # This task's own limits, within what its type allows (None: the type's).
    timeout: float | None = None
    retries: int | None = None
    retry_delay: float | None = None
    after: tuple[int, ...] = ()  # tasks it waits for (it is WAITING until they end)
    after_policy: str = "success"  # or "always": it runs even when one did not succeed
    # (run id, step, item, round): a workflow run's step makes it (server/workflows.py)
    run: tuple[int, str, int, int] | None = None


class TypeLookup(Protocol):
    def current_type(self, name: str) -> TaskType | None: ...

    def base_names(self) -> list[str]: ...

    def type_names(self) -> list[str]: ...


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file and not a symbolic link; files
    handed to a task (inbox entries, a rerun's inputs) must never lead elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        reason = "is a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise InvalidInput(f"{path.name} {reason}; give regular files only") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput(f"{path.name} is not a regular file; give regular files only")
    return os.fdopen(fd, "rb")


def check_file_count(count: int) -> None:
    """A task carries at most MAX_SUBMITTED_FILES files, however it is submitted."""
    if count > MAX_SUBMITTED_FILES:
        raise InvalidInput(f"{count} files, and a task takes at most {MAX_SUBMITTED_FILES} "
                           "files (put many small ones in an archive)")


def check_file_name(name: str) -> str:
    """Return `name` if it is a plain file name, else raise InvalidInput saying why."""
    if not name:
        raise InvalidInput("an uploaded file has no name; give each file a plain name")
    check_text(name, "the name of an uploaded file")
    if "\x00" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"file name {name!r} contains a control character; rename the file")
    if "/" in name or "\\" in name:
        raise InvalidInput(f"file name {name!r} contains a path separator; send a plain name")
    if name in (".", "..") or name.startswith(".."):
        raise InvalidInput(f"file name {name!r} could leave the task directory; rename it")
    if name in RESERVED_NAMES:
        raise InvalidInput(f"file name {name!r} is reserved for what blanket writes in the "
                           "task directory; rename the file")
    if len(name.encode()) > 255:
        raise InvalidInput(f"file name {name[:40]!r}... is longer than 255 bytes")
    return name


def check_priority(priority: Any) -> int:
    """Return `priority` if it is an integer within +-MAX_PRIORITY, else raise InvalidInput."""
    if (isinstance(priority, bool) or not isinstance(priority, int)
            or abs(priority) > MAX_PRIORITY):
        raise InvalidInput(f'"priority" must be an integer from -{MAX_PRIORITY} to '
                           f'{MAX_PRIORITY} (minutes ahead; higher runs earlier)')
    return priority


def parse_time(value: Any, now: float, what: str = "not_before") -> float:
    """Unix seconds from a number, an ISO 8601 date with offset, or a relative "+2h"."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a time; use ISO 8601 or '+2h'")
    if isinstance(value, int | float):
        return _in_time_range(float(value), what)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("+"):
            try:
                return _in_time_range(now + parse_duration(text[1:]), what)
            except ValueError as e:
                raise InvalidInput(f"{what}: {e}") from None
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                raise InvalidInput(f"{what}: {text!r} has no UTC offset; add one, "
                                   "e.g. 2026-12-01T08:00:00+01:00 or ...Z")
            return _in_time_range(moment.timestamp(), what)
    raise InvalidInput(f"{what}: {value!r} is not a time; use ISO 8601 with an offset "
                       "(2026-12-01T08:00:00Z) or a relative time such as '+2h'")


def _in_time_range(moment: float, what: str) -> float:
    """`moment` if it is a finite time from 1970 to the year 9999 (what dates can show)."""
    if not 0 <= moment < LATEST_TIME:  # NaN fails this too
        raise InvalidInput(f"{what}: {moment!r} is not a time from 1970 to the year 9999; "
                           "use ISO 8601 (2026-12-01T08:00:00Z) or a relative time ('+2h')")
    return moment


def parse_task_request(data: Any, now: float, **given: Any) -> TaskRequest:
    """Validate the JSON form of a submission (POST /task/, inbox files); `given` are the
    fields the caller sets itself (who submits, a dedupe key, files), never the client."""
    if not isinstance(data, dict):
        raise InvalidInput("the task must be a JSON object such as "
                           '{"type": "NAME", "environment": {"KEY": "value"}}')
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}; "
                           f"a task has {', '.join(REQUEST_KEYS)}")
    type_name = data.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise InvalidInput('"type" is missing: name the task type to run, e.g. "type": "backup"')
    check_text(type_name, '"type"')
    environment = data.get("environment", {})
    if not isinstance(environment, dict):
        raise InvalidInput('"environment" must be an object of NAME: value pairs')
    for name, value in environment.items():
        check_text(str(name), 'a name in "environment"')
        if isinstance(value, str):
            check_text(value, f'"environment" {name}')
    tags = data.get("tags", [])
    if isinstance(tags, str):
        check_text(tags, '"tags"')
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, str):
            check_text(tag, '"tags"')
    if not isinstance(tags, list) or not all(isinstance(t, str) and _TAG.fullmatch(t)
                                             for t in tags):
        raise InvalidInput('"tags" must be a list of words such as ["unix", "gpu"]')
    priority = check_priority(data.get("priority", 0))
    not_before = data.get("not_before")
    return TaskRequest(
        type=type_name, environment=environment, tags=tuple(tags), priority=priority,
        not_before=None if not_before in (None, "") else parse_time(not_before, now),
        timeout=_duration_field(data, "timeout", least=0.001, most=MAX_DURATION),
        retries=_retries_field(data),
        retry_delay=_duration_field(data, "retry_delay", most=MAX_RETRY_DELAY),
        after=after_field(data.get("after")),
        after_policy=_after_policy(data.get("after_policy", "success")),
        **given,
    )


def after_field(value: Any) -> tuple[int, ...]:
    """`after`: the ids of the tasks to wait for (a list, or "12,13" as text)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        check_text(value, '"after"')
        words = [w.strip() for w in value.split(",") if w.strip()]
        if not all(w.isdigit() and len(w) < 19 for w in words):
            raise InvalidInput(f'"after": {value!r} is not a list of task ids such as "12,13"')
        value = [int(w) for w in words]
    if not isinstance(value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in value):
        raise InvalidInput('"after" must be a list of task ids, such as [12, 13]')
    if len(value) > MAX_AFTER:
        raise InvalidInput(f'"after" names {len(value)} tasks; a task may wait for at most '
                           f"{MAX_AFTER}")
    return tuple(dict.fromkeys(value))


def _after_policy(value: Any) -> str:
    if value not in AFTER_POLICIES:
        raise InvalidInput(f'"after_policy" must be one of {", ".join(AFTER_POLICIES)}: '
                           '"success" runs the task once all it waits for succeeded (else it '
                           'is SKIPPED), "always" once they all ended')
    return str(value)


def _duration_field(data: dict, key: str, least: float = 0.0,
                    most: float | None = None) -> float | None:
    """A task's own duration setting: seconds or "90s", "5m", "2h"; None when absent."""
    value = data.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise InvalidInput(f'"{key}": {e}') from None
    if seconds < least:
        raise InvalidInput(f'"{key}" must be more than 0 seconds')
    if most is not None and seconds > most:
        raise InvalidInput(f'"{key}" {value!r} is too long; the most is {format_duration(most)}')
    return seconds


def _retries_field(data: dict) -> int | None:
    value = data.get("retries")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 <= value <= MAX_TASK_RETRIES:
        raise InvalidInput(f'"retries" must be a whole number from 0 to {MAX_TASK_RETRIES}')
    return value


def own_limits(task_type: TaskType, request: TaskRequest) -> tuple[float | None, int, float]:
    """The timeout, retries and retry delay of a task: its type's, or the submission's own
    within the type's max_timeout and max_retries (without them, a task may only lower its
    type's values)."""
    timeout = task_type.timeout
    if request.timeout is not None:
        bound = task_type.max_timeout if task_type.max_timeout is not None else task_type.timeout
        if bound is not None and request.timeout > bound:
            which = "max_timeout" if task_type.max_timeout is not None else "timeout"
            raise InvalidInput(
                f'"timeout" {request.timeout:g}s is more than type {task_type.name!r} allows '
                f"({bound:g}s, its {which}); ask for less, or raise max_timeout in its file")
        timeout = request.timeout
    retries = task_type.retries
    if request.retries is not None:
        bound_retries = (task_type.max_retries if task_type.max_retries is not None
                         else task_type.retries)
        if request.retries > bound_retries:
            which = "max_retries" if task_type.max_retries is not None else "retries"
            raise InvalidInput(
                f'"retries" {request.retries} is more than type {task_type.name!r} allows '
                f"({bound_retries}, its {which}); ask for fewer, or raise max_retries in its "
                "file")
        retries = request.retries
    delay = task_type.retry_delay if request.retry_delay is None else request.retry_delay
    return timeout, retries, delay


def clean_environment(task_type: TaskType, submitted: dict[str, Any],
                      trusted: bool = False) -> dict[str, str]:
    """Defaults, then submitted values, as strings; required names present and well typed.
    Unless `trusted`, only names the type declares or allows, and never a loader name."""
    values: dict[str, str] = dict(task_type.defaults)
    for name, value in submitted.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise InvalidInput(f"environment name {name!r} is not valid; use letters, digits "
                               "and _, not starting with a digit")
        if not trusted:
            check_submitted_name(task_type, name)
        if isinstance(value, dict | list) or value is None:
            raise InvalidInput(f"environment {name}: give a string, number or boolean, "
                               f"not {type(value).__name__}")
        text = _as_text(value)
        if "\x00" in text:
            raise InvalidInput(f"environment {name}: a NUL byte cannot be passed to a process")
        if (problem := too_long(name, text)) is not None:
            raise InvalidInput(f"environment {problem}")
        values[name] = text
    if (problem := too_big(values, task_type.defaults)) is not None:
        raise InvalidInput(f"environment: {problem}")
    missing = [r for r in task_type.required if r.name not in values]
    if missing:
        listed = "; ".join(f"{r.name} ({r.description or r.type})" for r in missing)
        raise InvalidInput(f"task type {task_type.name!r} needs {listed}: add "
                           f"{'it' if len(missing) == 1 else 'them'} to \"environment\"")
    for required in task_type.required:
        _check_type(required.name, required.type, values[required.name])
    return values


def check_submitted_name(task_type: TaskType, name: str) -> None:
    """Refuse a name a submission may not set, saying why."""
    if loader_name(name):
        raise InvalidInput(f"environment {name}: a submission may not set {name}; shells, the "
                           "loader or interpreters read it to find code. Set it in the type's "
                           "file if the task needs it", code="forbidden_variable")
    if not task_type.takes(name):
        declared = ", ".join(sorted(task_type.declared)) or "none"
        raise InvalidInput(f"environment {name}: task type {task_type.name!r} does not take "
                           f"this variable (it takes: {declared}); declare it in the type's "
                           "[environment] or allow it with allow_extra_environment",
                           code="undeclared_variable")


def check_text(text: str, field: str) -> str:
    """Return `text` if UTF-8 can encode it, else raise InvalidInput naming `field`: a lone
    surrogate (such as \\ud800) is not Unicode text, and no file, command or process
    environment could hold it."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{field} holds a lone surrogate (such as \\ud800), which is not "
                               "Unicode text; send valid UTF-8") from None
    return text


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_type(name: str, kind: str, text: str) -> None:
    ok = True
    if kind == "integer":
        ok = re.fullmatch(r"[+-]?\d+", text) is not None
    elif kind == "number":
        try:
            float(text)
        except ValueError:
            ok = False
    elif kind == "boolean":
        ok = text.lower() in ("true", "false", "1", "0", "yes", "no")
    if not ok:
        raise InvalidInput(f"environment {name}: {text!r} is not a valid {kind}")


class Intake:
    """Validates, prices and stores tasks; saves their uploaded files."""

    def __init__(self, store: Store, types: TypeLookup, data_dir: Path, *,
                 metrics: Metrics | None = None):
        self.store = store
        self.types = types
        self.data_dir = data_dir
        self.metrics = metrics or Metrics()
        self._estimates: dict[str, tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    @property
    def staging_dir(self) -> Path:
        """Where files wait before they move into a task directory (uploads, outputs)."""
        return DataDir(self.data_dir).staging

    def clear_staging(self) -> None:
        """Remove what a crash left staged (at server start)."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def task_dir(self, type_name: str, task_id: int) -> Path:
        return DataDir(self.data_dir).task(type_name, task_id)

    def submit(self, request: TaskRequest, now: float | None = None) -> Task:
        """Create one task; raise InvalidInput (nothing stored) when the request is wrong."""
        now = time.time() if now is None else now
        if request.fingerprint is not None and request.dedupe_key is not None:
            known = idempotency.first_use(self.store, request.dedupe_key, request.fingerprint)
            if known is not None:  # sent again: nothing to check, stage or store
                raise DuplicateTask(known)
        check_file_count(len(request.uploads))
        names = [check_file_name(u.name) for u in request.uploads]
        if len(set(names)) != len(names):
            raise InvalidInput("two uploaded files have the same name; rename one")
        new = self._priced(request, now, tuple(names))
        staged = self._stage(request.uploads)
        if staged is None:
            return self._counted(self.store.add_task(new))
        placed: list[Path] = []

        def place(task_id: int) -> None:
            """The staged files become the task's folder inside the store's transaction:
            a worker that claims the task the moment it commits finds them there."""
            target = self.task_dir(new.type, task_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # debris of a transaction that never committed: ids that
                shutil.rmtree(target)  # were committed once are never handed out again
            staged.rename(target)
            placed.append(target)

        try:
            return self._counted(self.store.add_task(new, place))
        except BaseException:
            for folder in (staged, *placed):
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def task_for_key(self, key: str) -> int | None:
        """The task a dedupe key made, if any."""
        return self.store.task_for_key(key)

    def submit_all(self, requests: list[TaskRequest | InvalidInput],
                   now: float | None = None) -> list[Task]:
        """Create the tasks (without files) in one durable transaction, all or none:
        ItemsRefused names every request that is wrong (a place holding an InvalidInput
        was refused before it came here), and nothing is stored. A request whose dedupe key
        was used before gets the task that holds the key (KeyReused, from the store, when
        that key came with another request's fingerprint)."""
        now = time.time() if now is None else now
        edges = sum(len(r.after) for r in requests if isinstance(r, TaskRequest))
        if edges > MAX_EDGES:  # each is read and written in the one transaction
            raise InvalidInput(f"these tasks wait for {edges} tasks in all; one request may "
                               f"hold at most {MAX_EDGES} (send the tasks in several requests)")
        priced = self._price_all(requests, now)
        problems = [(index, p.message) for index, p in enumerate(priced)
                    if isinstance(p, InvalidInput)]
        if problems:
            raise ItemsRefused(problems)
        return self._counted_new(self.store.add_tasks(priced), now)  # type: ignore[arg-type]

    def check_all(self, requests: list[TaskRequest], now: float | None = None) -> None:
        """Refuse (InvalidInput, naming the first wrong request) what `submit_all` would
        refuse, storing nothing."""
        now = time.time() if now is None else now
        for priced in self._price_all(requests, now):
            if isinstance(priced, InvalidInput):
                raise priced

    def submit_many(self, requests: list[TaskRequest],
                    now: float | None = None) -> list[Task | InvalidInput]:
        """Create many tasks without files in one transaction (the scheduler's due runs).
        Each place in the answer is the task, or the error that refused its request; a
        request whose dedupe key was used before gets the task that holds the key."""
        now = time.time() if now is None else now
        answers: list[Task | InvalidInput | NewTask] = list(self._price_all(requests, now))
        valid = [place for place, p in enumerate(answers) if isinstance(p, NewTask)]
        stored = self._counted_new(
            self.store.add_tasks([answers[place] for place in valid]), now)  # type: ignore[misc]
        for place, task in zip(valid, stored, strict=True):
            answers[place] = task
        return answers  # type: ignore[return-value]

    def _counted(self, task: Task) -> Task:
        self.metrics.submitted((task,))
        return task

    def _counted_new(self, tasks: list[Task], now: float) -> list[Task]:
        """Count the tasks made now; one whose dedupe key was used before is the older task,
        added earlier."""
        self.metrics.submitted(t for t in tasks if t.added == now)
        return tasks

    def _price_all(self, requests: list[TaskRequest] | list[TaskRequest | InvalidInput],
                   now: float) -> list[NewTask | InvalidInput]:
        """Each request priced, or the error that refuses it (one given already stays);
        none may carry files."""
        priced: list[NewTask | InvalidInput] = []
        for request in requests:
            try:
                if isinstance(request, InvalidInput):
                    raise request
                if request.uploads:
                    raise InvalidInput("tasks submitted together take no files; submit each "
                                       "with its files alone")
                priced.append(self._priced(request, now, ()))
            except InvalidInput as refused:
                priced.append(refused)
        return priced

    def _priced(self, request: TaskRequest, now: float, inputs: tuple[str, ...]) -> NewTask:
        """The validated, priced record of a request; InvalidInput says what is wrong."""
        if request.type.startswith(SCHEDULE_PREFIX) and not request.trusted_environment:
            raise InvalidInput(f"{request.type!r} is a schedule's own command; run it with "
                               "POST /schedule/NAME/run (blanket schedule run NAME)")
        if request.type.startswith(STEP_TYPE_PREFIX) and request.run is None:
            raise InvalidInput(f"{request.type!r} is a workflow's own step; start the workflow "
                               "with POST /workflow/NAME/run (blanket workflow run NAME)")
        task_type = self.types.current_type(request.type)
        if task_type is None:
            known = ", ".join(self.types.type_names()) or "none yet"
            if request.type in self.types.base_names():
                raise InvalidInput(f"task type {request.type!r} is abstract: only a base other "
                                   f"types extend; submit one of them (known types: {known})",
                                   code="unknown_type")
            raise InvalidInput(f"unknown task type {request.type!r}; known types: {known}",
                               code="unknown_type")
        environment = clean_environment(task_type, request.environment,
                                        request.trusted_environment)
        check_priority(request.priority)  # schedules build requests without parse_task_request
        timeout, retries, retry_delay = own_limits(task_type, request)
        runnable = max(now, request.not_before or now)
        return NewTask(
            type=task_type.name, environment=environment,
            tags=tuple(sorted(set(task_type.tags) | set(request.tags))),
            score=task_score(runnable, self._estimate(task_type, now), task_type.weight,
                             request.priority, request.front),
            added=now, not_before=request.not_before, schedule=request.schedule,
            retries=retries, retry_delay=retry_delay,
            timeout=timeout, priority=request.priority, inputs=inputs,
            dedupe_key=request.dedupe_key, fingerprint=request.fingerprint,
            submitted_by=request.submitted_by,
            secrets=tuple(sorted(task_type.secrets & environment.keys())),
            after=request.after, after_policy=request.after_policy, run=request.run,
        )

    def _stage(self, uploads: tuple[Upload, ...]) -> Path | None:
        """Write uploads to a private folder first, so a failed submission leaves nothing."""
        if not uploads:
            return None
        staged = self.staging_dir / uuid.uuid4().hex
        try:
            staged.mkdir(parents=True)
            for upload in uploads:
                if isinstance(upload.source, Path):
                    shutil.move(upload.source, staged / upload.name)
                else:
                    with open(staged / upload.name, "xb") as out:
                        shutil.copyfileobj(upload.source, out, 1024 * 1024)
        except BaseException as e:
            shutil.rmtree(staged, ignore_errors=True)
            if is_disk_full(e):
                raise StorageFull.at(self.staging_dir, " (no room for the uploaded files)"
                                     ) from e
            raise
        return staged

    def _estimate(self, task_type: TaskType, now: float) -> float | None:
        if task_type.estimate is not None:
            return task_type.estimate
        with self._lock:
            cached = self._estimates.get(task_type.name)
        if cached and now - cached[0] < ESTIMATE_TTL:
            return cached[1]
        estimate = estimate_from_history(self.store.recent_durations(task_type.name))
        with self._lock:
            self._estimates[task_type.name] = (now, estimate)
        return estimate
