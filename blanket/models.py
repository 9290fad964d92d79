"""Records that cross boundaries (store, API, worker): tasks and workers, with their JSON
forms; which tasks a listing asks for; a schedule's saved progress."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import NamedTuple


class TaskState(StrEnum):
    WAITING = "WAITING"  # for the tasks in its `after` to end
    QUEUED = "QUEUED"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEDOUT = "TIMEDOUT"
    STOPPED = "STOPPED"
    LOST = "LOST"
    SKIPPED = "SKIPPED"  # a task in its `after` did not succeed: it never ran


SECRET_MASK = "***"
MAX_PRIORITY = 10_000  # minutes; bounded so that no priority outranks a waiting submission
ACTIVE_STATES = frozenset({TaskState.CLAIMED, TaskState.RUNNING})
FINAL_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.TIMEDOUT, TaskState.STOPPED,
     TaskState.SKIPPED}
)
AFTER_POLICIES = ("success", "always")  # run once all succeeded (default), or once all ended
MAX_AFTER = 1000  # tasks one task may wait for


@dataclass(frozen=True)
class Task:
    """One task. Times are Unix seconds (float) or None."""

    id: int
    type: str
    state: TaskState
    environment: dict[str, str]
    tags: tuple[str, ...]
    score: float
    added: float
    not_before: float | None = None
    version: str | None = None
    claimed: float | None = None
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    worker: str | None = None
    attempt: int = 0
    token: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    progress: int | None = None
    progress_message: str | None = None
    directory: str | None = None
    error: str | None = None
    schedule: str | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    stop_requested: bool = False
    priority: int = 0
    inputs: tuple[str, ...] = ()
    attempts: tuple[dict, ...] = ()
    submitted_by: str | None = None  # the token's name, or "anonymous", "schedule", "inbox"
    stopped_by: str | None = None
    secrets: tuple[str, ...] = ()  # environment names whose values are never shown
    after: tuple[int, ...] = ()  # the tasks it waits for (WAITING until they end)
    after_policy: str = "success"  # or "always": run even when one of them did not succeed

    def to_json(self, *, with_token: bool = False) -> dict:
        """The task's JSON form. Only the worker running the attempt (`with_token`) sees the
        attempt token and the values of secret variables; everyone else sees `***`."""
        data = {name: getattr(self, name) for name in _TASK_FIELDS}
        data["environment"] = dict(self.environment) if with_token else self.shown_environment()
        data["tags"] = list(self.tags)
        data["attempts"] = list(self.attempts)
        data["inputs"] = list(self.inputs)
        data["secrets"] = list(self.secrets)
        data["after"] = list(self.after)
        if not with_token:
            data.pop("token")
        return data

    def shown_environment(self) -> dict[str, str]:
        """The environment with every secret value replaced by `***`."""
        if not self.secrets:
            return dict(self.environment)
        return {name: SECRET_MASK if name in self.secrets else value
                for name, value in self.environment.items()}

    @classmethod
    def from_json(cls, data: dict) -> Task:
        """Inverse of `to_json` (workers receive tasks over HTTP); unknown keys are ignored."""
        values = {key: value for key, value in data.items() if key in _TASK_FIELD_SET}
        values["state"] = TaskState(values["state"])
        for key in ("tags", "inputs", "attempts", "secrets", "after"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


_TASK_FIELDS = tuple(f.name for f in fields(Task))
_TASK_FIELD_SET = frozenset(_TASK_FIELDS)


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a listing returns; newest first unless `oldest_first`."""

    states: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # tasks carrying all of these
    schedule: str | None = None
    added_after: float | None = None
    added_before: float | None = None
    worker: str | None = None  # tasks this worker ran or runs
    submitted_by: str | None = None
    # Text found in the id (exactly), the type, or an environment value that is not a
    # secret (a search must never tell what a secret value is).
    search: str | None = None
    limit: int = 100
    offset: int = 0
    oldest_first: bool = False  # ascending (by `sort`; by id: oldest first)
    sort: str = "id"  # one of SORT_COLUMNS


# What a listing may be sorted by (ties, and tasks without the value, by id).
SORT_COLUMNS = ("id", "added", "started", "finished", "type", "state", "priority", "exit_code",
                "worker")


@dataclass(frozen=True)
class Worker:
    """A registered worker process."""

    id: str
    tags: tuple[str, ...]
    host: str
    pid: int
    state: str  # idle | busy | paused | stopping | gone (shown as lost when silent)
    registered: float
    heartbeat: float
    task: int | None = None
    stop_mode: str | None = None  # None, "finish" or "handback"
    owner: str | None = None  # the name of the token that registered it
    extra: dict = field(default_factory=dict)

    @property
    def takes_tasks(self) -> bool:
        """Whether a claim may give this worker a task (not paused, not going away)."""
        return self.state not in ("paused", "stopping")

    def to_json(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class Token:
    """An API token or a web session (`parent` names the token it was opened with). Only a
    hash of the secret is kept."""

    id: str
    name: str
    role: str
    hash: str
    created: float
    types: tuple[str, ...] = ()  # globs of the types it may submit; empty: any
    tags: tuple[str, ...] = ()  # globs of the tags a worker token may claim for; empty: any
    expires: float | None = None
    revoked: float | None = None
    parent: str | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        del data["hash"]
        data["types"], data["tags"] = list(self.types), list(self.tags)
        return data


@dataclass(frozen=True)
class ScheduleState:
    """A schedule's saved progress; `pending_fire` is the fire of a run that waits for the
    previous run to end (overlap = "queue")."""

    name: str
    next_fire: float | None = None
    last_fire: float | None = None
    last_task: int | None = None
    paused: bool = False
    pending_fire: float | None = None


@dataclass(frozen=True)
class Delivery:
    """A notification of a task's end to one [[notify]] target: made with the end, sent by
    the server's delivery loop until delivered or a day has passed (then `failed`)."""

    id: int
    task_id: int
    task_type: str
    event: str  # failed | timedout | lost | success | stopped
    target_key: str
    target: dict  # what config/notify.py's NotifyTarget.stored() kept
    state: str  # pending | delivered | failed
    attempts: int
    created: float
    next_at: float
    finished: float | None = None
    result: str | None = None

    def to_json(self) -> dict:
        """As the API shows it: the target by its label (a URL's path may be a credential)."""
        return {"id": self.id, "task": self.task_id, "event": self.event,
                "kind": self.target.get("kind"), "target": self.target.get("label"),
                "origin": self.target.get("origin"), "state": self.state,
                "attempts": self.attempts, "created": self.created,
                "next_at": self.next_at if self.state == "pending" else None,
                "finished": self.finished, "result": self.result}


RUN_STATES = ("running", "succeeded", "failed", "stopped")


@dataclass(frozen=True)
class Run:
    """A workflow run: the file it started from (`definition`, whose hash is `version`), its
    variables and its state. `round` counts its starts: 1, then one more per rerun."""

    id: int
    workflow: str
    version: str
    definition: str
    environment: dict[str, str]
    state: str  # one of RUN_STATES
    round: int
    added: float
    finished: float | None = None
    reason: str | None = None  # why it failed or stopped
    submitted_by: str | None = None
    schedule: str | None = None

    @property
    def ended(self) -> bool:
        return self.state != "running"


class RunTask(NamedTuple):
    """A task a run's step made: for `item` of a fanned step (else 0), in `round`. The task's
    fields are None when it was removed. A tuple: a wide run's view and its advancer read
    tens of thousands of them (a frozen dataclass took 4 times as long to make)."""

    step: str
    item: int
    round: int
    task_id: int
    state: TaskState | None = None
    type: str | None = None
    version: str | None = None
    exit_code: int | None = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
