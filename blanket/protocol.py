"""The worker protocol: the routes a worker calls and the messages they carry, shared by the
server's routes (blanket/server/api/workers.py, outputs.py) and the worker's client
(blanket/worker/client.py).

Each message is a frozen msgspec Struct with one way in (`from_json`) and one way out
(`to_json`); requests refuse unknown fields and values out of range, naming the field, and
/openapi.json describes them from the same definitions (blanket/server/api/schemas.py). Answers
ignore fields they do not know, so a newer server may add some.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import msgspec
from msgspec import Meta

from blanket.config.tasktype import TaskType
from blanket.models import Task, Worker

TOKEN_HEADER = "Blanket-Token"  # the attempt's token, beside a log chunk or outputs archive
MAX_LOG_CHUNK = 1024 * 1024  # bytes of a running task's log per request
INT32 = 2**31 - 1
INT64 = 2**63 - 1
LATEST_TIME = 253402300799  # 9999-12-31, in Unix seconds

Token = Annotated[str, Meta(min_length=1, max_length=200)]
Pid = Annotated[int, Meta(ge=0, le=INT32)]
Seconds = Annotated[float, Meta(ge=0, le=LATEST_TIME)]
Directory = Annotated[str, Meta(max_length=4096)]
Text = Annotated[str, Meta(max_length=65536)]
Tag = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=100)]
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
WorkerId = Annotated[str, Meta(pattern=WORKER_ID_PATTERN)]
EndState = Literal["SUCCESS", "FAILED", "TIMEDOUT", "STOPPED"]

M = TypeVar("M", bound="Message")
A = TypeVar("A", bound="Answer")


class BadMessage(ValueError):
    """A body that is not the message it should be; the text names the field and the rule.
    `malformed`: not JSON at all."""

    def __init__(self, text: str, malformed: bool = False):
        super().__init__(text)
        self.malformed = malformed


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message of the protocol, in its one JSON form."""

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls: type[M], raw: bytes) -> M:
        """The message in `raw`, or BadMessage saying which field is wrong and how."""
        try:
            return _decoder(cls).decode(raw)
        except msgspec.ValidationError as e:
            raise BadMessage(_explain(str(e), cls)) from None
        except msgspec.DecodeError as e:
            raise BadMessage(f"the body is not valid JSON: {e}", malformed=True) from None


class Request(Message, frozen=True, forbid_unknown_fields=True):
    """A message a worker sends: the server takes nothing it does not expect."""


class Answer(Message, frozen=True, omit_defaults=False):
    """A message the server answers with, every field written out. A task stored before
    intake refused text that is not Unicode (a lone surrogate) still travels, escaped as
    JSON writes it, so its worker can fail it saying why."""

    def to_json(self) -> bytes:
        try:
            return super().to_json()
        except UnicodeEncodeError:
            return json.dumps(msgspec.to_builtins(self)).encode()

    @classmethod
    def from_json(cls: type[A], raw: bytes) -> A:
        try:
            return super().from_json(raw)
        except BadMessage as e:
            if not e.malformed:
                raise
            try:
                return msgspec.convert(json.loads(raw), cls)
            except (ValueError, msgspec.ValidationError):
                raise e from None


_ENCODER = msgspec.json.Encoder()


@functools.cache
def _decoder(kind: type[Message]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(kind)


def _explain(error: str, kind: type[Message]) -> str:
    """msgspec's `Expected ... - at `$.started.pid`` as `started.pid: expected ...`."""
    rule, _, where = error.partition(" - at `$")
    field = where.rstrip("`").lstrip(".") or "the body"
    if rule.startswith("Object contains unknown field"):
        known = ", ".join(sorted(kind.__struct_fields__)) if field == "the body" else ""
        return f"{field}: {rule[0].lower()}{rule[1:]}" + (f"; it takes {known}" if known else "")
    return f"{field}: {rule[0].lower()}{rule[1:]}"


# Requests: what a worker sends.


class Register(Request, frozen=True):
    """A worker joins (`POST /worker/`) with the tags it runs; its token must allow them."""

    host: Annotated[str, Meta(min_length=1, max_length=200)]
    pid: Pid
    tags: Annotated[tuple[Tag, ...], Meta(max_length=100)] = ()
    id: WorkerId | None = None  # the server makes one when none is asked for


class AttemptReport(Request, frozen=True):
    """A report on an attempt that says nothing but which one: a heartbeat, a release."""

    token: Token


class Started(Request, frozen=True):
    """The attempt's process started."""

    token: Token
    pid: Pid | None = None
    directory: Directory | None = None
    at: Annotated[float, Meta(ge=0, le=LATEST_TIME,
                              description="when the process started (Unix seconds; the "
                                          "server's clock rules)")] | None = None


class LateStart(Request, frozen=True):
    """A short task's start, carried by its end report to save a round trip."""

    at: Seconds | None = None
    pid: Pid | None = None
    directory: Directory | None = None


class Finished(Request, frozen=True):
    """The attempt ended. With `claim_next` the answer brings the next task (1), or the next
    task and a reserve (2); `running` says the worker now runs its reserve, that task."""

    token: Token
    state: EndState
    exit_code: Annotated[int, Meta(ge=-INT32, le=INT32)] | None = None
    error: Text | None = None
    handback: bool = False  # stopped to be queued again, not ended
    started: LateStart | None = None
    claim_next: Literal[0, 1, 2] | bool = 0  # true is taken as 1
    running: Annotated[int, Meta(ge=1, le=INT64)] | None = None

    @property
    def wants(self) -> int:
        """How many tasks the answer should bring."""
        return int(self.claim_next)


class SlotReport(Finished, frozen=True, kw_only=True):
    """One attempt's end in an exchange: a Finished report with the task it is about and the
    worker (one slot of a worker process) whose next claims its answer brings."""

    task: Annotated[int, Meta(ge=1, le=INT64)]
    worker: WorkerId


MAX_EXCHANGE = 64  # end reports in one exchange


class Exchange(Request, frozen=True):
    """The end reports of a worker process's slots that were ready together, in one request
    and one transaction; each may ask for its slot's next task and reserve."""

    reports: Annotated[tuple[SlotReport, ...], Meta(min_length=1, max_length=MAX_EXCHANGE)]


class Progress(Request, frozen=True):
    """A running task's progress; the task itself sends its attempt token."""

    progress: Annotated[float, Meta(ge=0, le=100)]
    message: Text | None = None
    token: Token | None = None


# Answers: what the server sends back.


class Registered(Answer, frozen=True):
    """The worker's record as the server keeps it, how often to heartbeat, and the id of
    the server's data dir (a worker finding the same id in its own shares the files)."""

    id: str
    tags: tuple[str, ...]
    host: str
    pid: int
    state: str
    registered: float
    heartbeat: float
    task: int | None = None
    stop_mode: str | None = None
    owner: str | None = None
    extra: dict[str, Any] = {}
    heartbeat_interval: float = 2.0
    server_id: str | None = None

    @classmethod
    def of(cls, worker: Worker, heartbeat_interval: float, server_id: str) -> Registered:
        return cls(id=worker.id, tags=worker.tags, host=worker.host, pid=worker.pid,
                   state=worker.state, registered=worker.registered,
                   heartbeat=worker.heartbeat, task=worker.task, stop_mode=worker.stop_mode,
                   owner=worker.owner, extra=worker.extra,
                   heartbeat_interval=heartbeat_interval, server_id=server_id)


class Claimed(Answer, frozen=True):
    """A claimed task: the task with its attempt token and secret values, its type in the
    catalog's JSON form, and where to fetch the type version's bundle."""

    task: Task
    type: dict[str, Any]
    bundle: str

    @classmethod
    def of(cls, task: Task, task_type: TaskType) -> Claimed:
        return cls(task=task, type=task_type.to_json(), bundle=bundle_path(task.version or ""))


class Leave(Answer, frozen=True):
    """A claim's answer (410) when the worker was asked to stop: finish or handback."""

    stop: str


class Orders(Answer, frozen=True):
    """A heartbeat's answer: whether the attempt must stop, and whether to hand it back."""

    stop: bool
    handback: bool
    state: str


class Ended(Answer, frozen=True):
    """An end report's answer when it asked for more: the ended task as everyone sees it,
    and the claims it brought (None: nothing came)."""

    task: dict[str, Any]
    next: Claimed | None = None
    reserve: Claimed | None = None

    @property
    def state(self) -> str:
        return str(self.task.get("state"))


class SlotEnded(Answer, frozen=True):
    """An exchange's answer to one report: the task's state now (QUEUED when the retry
    policy queued it again) and the claims it brought, or why it was refused (the attempt
    was superseded, or the caller may not report it): the other reports still count."""

    task: int
    state: str | None = None
    next: Claimed | None = None
    reserve: Claimed | None = None
    refused: str | None = None
    status: int = 200  # the refusal's HTTP status, as the single report's route would answer


class Exchanged(Answer, frozen=True):
    """An exchange's answers, in the order of its reports."""

    ended: list[SlotEnded]


class LogTaken(Answer, frozen=True):
    """How much of the log the server has: where the next chunk starts."""

    size: int


class OutputsTaken(Answer, frozen=True):
    """The files the server unpacked from an outputs archive."""

    task: int
    files: list[str]


# The routes, in the Bottle form the server declares and the paths the worker asks for.


_PARAM = re.compile(r"<(\w+)(?::[^>]*)?>")  # Bottle: <name> or <name:filter>


@dataclass(frozen=True)
class Route:
    """One route of the protocol: what goes in and out, and who may call it."""

    method: str
    rule: str
    request: str
    answer: str
    callers: str | tuple[str, ...] = "worker"

    def path(self, **params: object) -> str:
        """The route's path with its `<name>` parts filled in."""
        return _PARAM.sub(lambda m: quote(str(params[m.group(1)]), safe=""), self.rule)


REGISTER = Route("POST", "/worker/", "Register", "Registered (201)")
CLAIM = Route("POST", "/worker/<worker_id>/claim", "?wait=S&key=K",
              "Claimed; 204 none came; Leave (410) when told to stop")
LEAVE = Route("DELETE", "/worker/<worker_id>", "?mode=finish or handback",
              "the worker record (202 stopping)", ("operator", "worker"))
STARTED = Route("POST", "/task/<task_id>/started", "Started", "the task")
HEARTBEAT = Route("POST", "/task/<task_id>/heartbeat", "AttemptReport, ?wait=S", "Orders")
FINISHED = Route("POST", "/task/<task_id>/finished", "Finished",
                 "the task; Ended when it asked for claims")
RELEASE = Route("POST", "/task/<task_id>/release", "AttemptReport", "the task")
EXCHANGE = Route("POST", "/exchange", "Exchange", "Exchanged")
PROGRESS = Route("POST", "/task/<task_id>/progress",
                 "Progress (a task sends its attempt token instead of a role)", "the task",
                 "operator")
LOG = Route("POST", "/task/<task_id>/log/<stream>", "bytes, ?offset=N, Blanket-Token",
            "LogTaken")
OUTPUTS = Route("POST", "/task/<task_id>/outputs", "tar.gz, Blanket-Token", "OutputsTaken")
INPUT = Route("GET", "/task/<task_id>/files/<name:path>", "", "the file",
              ("viewer", "worker"))
BUNDLE = Route("GET", "/version/<name>", "", "the version's tar.gz", ("admin", "worker"))
ROUTES = (REGISTER, CLAIM, LEAVE, BUNDLE, INPUT, STARTED, HEARTBEAT, PROGRESS, LOG, OUTPUTS,
          FINISHED, EXCHANGE, RELEASE)


def bundle_path(version: str) -> str:
    return BUNDLE.path(name=f"{version}.tar.gz")


def routes_table() -> str:
    """The routes as the Markdown table docs/architecture.md shows (a test keeps it current)."""
    rows = ["| method | path | message in | message out | who may call |", "|---|---|---|---|---|"]
    for route in ROUTES:
        callers = route.callers if isinstance(route.callers, str) else " or ".join(route.callers)
        rows.append(f"| {route.method} | `{route.rule}` | {route.request or '-'} | "
                    f"{route.answer} | {callers} |")
    return "\n".join(rows) + "\n"
