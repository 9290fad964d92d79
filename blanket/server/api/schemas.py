"""The request bodies and query parameters of the API, as JSON Schema: one definition that
both validates requests (compiled once by fastjsonschema) and describes them in
/openapi.json, so the two cannot drift. A route names its body with `body=` and its query
parameters with `query=` in its `app.route`; handlers still check what a schema cannot
(a type's own variables, the state of a task). The worker protocol's bodies are its messages'
schemas (blanket/protocol.py)."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import msgspec

from blanket import protocol
from blanket.envnames import ENV_NAME
from blanket.models import AFTER_POLICIES, MAX_AFTER, MAX_PRIORITY, SORT_COLUMNS, TaskState

SHORT_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
TAG = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", "maxLength": 100}
ENV_VALUE = {"type": ["string", "number", "boolean"], "maxLength": 1_000_000}
TIME = {"oneOf": [{"type": "number", "minimum": 0, "maximum": 253402300799},
                  {"type": "string", "maxLength": 100}, {"type": "null"}]}
TASK_STATES = [state.value for state in TaskState]
ROLE = {"type": "string", "enum": ["viewer", "submitter", "operator", "admin", "worker"]}
GLOBS = {"type": "array", "maxItems": 100, "items": {"type": "string", "minLength": 1,
                                                      "maxLength": 200}}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


class Body:
    """A route's request body: its JSON Schema and the validator compiled from it. (Not a
    dict: Bottle flattens dicts given as route config.)"""

    def __init__(self, properties: dict[str, Any], required: tuple[str, ...] = (),
                 extra: dict[str, Any] | None = None):
        """`extra`: the schema of any other property (none allowed without it)."""
        self.schema = _object(properties, required)
        if extra is not None:
            self.schema["additionalProperties"] = extra
            self.schema["maxProperties"] = 1000
            self.schema["propertyNames"] = {"pattern": f"^{ENV_NAME.pattern}$",
                                            "maxLength": 200}
        self.validate = fastjsonschema.compile(self.schema)


class MessageBody(Body):
    """The body of a worker protocol route: a message of blanket/protocol.py, whose handler
    decodes it (`message.from_json`); its schema is the message's own."""

    def __init__(self, message: type[protocol.Request]):
        self.schema = _inlined(msgspec.json.schema(message))
        self.validate = fastjsonschema.compile(self.schema)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's schema with each `$ref` to its `$defs` replaced by the definition, so the
    schema stands alone inside the OpenAPI document."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


DURATION = {"oneOf": [{"type": "number", "minimum": 0, "maximum": 10**9},
                      {"type": "string", "maxLength": 50}]}
SUBMISSION = Body({
    "type": {**SHORT_TEXT, "description": "the task type to run"},
    "environment": {"type": "object", "maxProperties": 1000,
                    "propertyNames": {"pattern": f"^{ENV_NAME.pattern}$", "maxLength": 200},
                    "additionalProperties": ENV_VALUE},
    "tags": {"oneOf": [{"type": "array", "maxItems": 100, "items": TAG},
                       {"type": "string", "maxLength": 10_000}]},
    "not_before": {**TIME, "description": "Unix seconds, ISO 8601 with an offset, or +2h"},
    "priority": {"type": "integer", "minimum": -MAX_PRIORITY, "maximum": MAX_PRIORITY},
    "timeout": {**DURATION, "description": "this task's timeout (seconds or 90s, 5m, 2h), "
                "within its type's max_timeout"},
    "retries": {"type": "integer", "minimum": 0, "maximum": 1000,
                "description": "this task's retries, within its type's max_retries"},
    "retry_delay": {**DURATION, "description": "seconds (or 30s, 5m) between its attempts"},
    # One schema for both forms (a list, or "12,13"): oneOf would only say that neither
    # matched; the intake words what is wrong with either.
    "after": {"type": ["array", "string"], "maxItems": MAX_AFTER,
              "maxLength": 20 * MAX_AFTER,
              "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
              "description": "ids of tasks it waits for (a list, or \"12,13\"): it is "
                             "WAITING until they end"},
    "after_policy": {"enum": list(AFTER_POLICIES),
                     "description": "success (default): SKIPPED if one of them did not "
                                    "succeed; always: runs once they all ended"},
}, ("type",))

# POST /workflow/NAME/run: the run's variables.
RUN_START = Body({
    "environment": {"type": "object", "maxProperties": 1000,
                    "propertyNames": {"pattern": f"^{ENV_NAME.pattern}$", "maxLength": 200},
                    "additionalProperties": ENV_VALUE},
})

# POST /tasks/TYPE/ (the seed's spelling): the body is the environment alone.
ENVIRONMENT_ONLY = Body({}, (), extra=ENV_VALUE)

PROGRESS = MessageBody(protocol.Progress)
REGISTER = MessageBody(protocol.Register)
ATTEMPT = MessageBody(protocol.AttemptReport)
STARTED = MessageBody(protocol.Started)
FINISHED = MessageBody(protocol.Finished)
EXCHANGE = MessageBody(protocol.Exchange)

NEW_TOKEN = Body({
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$"},
    "role": ROLE,
    "types": GLOBS,
    "tags": GLOBS,
    "expires": {"oneOf": [{"type": "string", "maxLength": 50},
                          {"type": "number", "exclusiveMinimum": 0, "maximum": 10**10}]},
}, ("name", "role"))

LOGIN = Body({"token": {"type": "string", "minLength": 1, "maxLength": 500}}, ("token",))


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _seconds(most: int) -> dict[str, Any]:
    """A wait in seconds; a bare `?wait` (or `?wait=true`) means the longest."""
    return {"oneOf": [{"type": "number", "minimum": 0, "maximum": most},
                      {"type": "string", "enum": ["", "true"]}]}


WAIT = [_param("wait", _seconds(86400), "hold the answer until the task ends, at most this "
                                        "many seconds"),
        _param("sync", _seconds(86400), "the same as wait (the seed's spelling)")]
POLL = [_param("wait", _seconds(60), "long poll up to this many seconds")]
CLAIM = [*POLL, _param("key", {"type": "string", "minLength": 1, "maxLength": 64},
                       "the claim's key (letters, digits, - and _): asked again with the key "
                       "of a claim whose answer never came, the answer is the task that "
                       "claim took")]
TASK_LIST = [
    _param("state", {"type": "string", "maxLength": 200}, f"comma separated: {TASK_STATES}"),
    _param("type", {"type": "string", "maxLength": 1000}, "comma separated type names"),
    _param("tags", {"type": "string", "maxLength": 1000}, "tasks carrying all these tags"),
    _param("schedule", {"type": "string", "maxLength": 200}, "tasks of this schedule"),
    _param("worker", {"type": "string", "maxLength": 200}, "tasks this worker ran last"),
    _param("by", {"type": "string", "maxLength": 200}, "tasks submitted by this token name"),
    _param("q", {"type": "string", "maxLength": 200},
           "text in the id, the type or an environment value (never a secret's)"),
    _param("added_after", {"type": "string", "maxLength": 100}, "Unix seconds, ISO, -2h"),
    _param("added_before", {"type": "string", "maxLength": 100}, "Unix seconds, ISO, -2h"),
    _param("limit", {"type": "integer", "minimum": 0},
           "at most this many (100 by default; more than 10,000 is taken as 10,000)"),
    _param("offset", {"type": "integer", "minimum": 0}, "skip this many"),
    _param("order", {"type": "string", "enum": ["newest", "oldest", "asc", "desc"]},
           "newest (desc) first by default"),
    _param("sort", {"type": "string", "enum": list(SORT_COLUMNS)},
           "the column to sort by (id by default; missing values last)"),
    _param("count", {"type": "boolean"}, "answer {count: N} instead"),
]
RUN_LIST = [
    _param("workflow", {"type": "string", "maxLength": 200}, "runs of this workflow only"),
    _param("state", {"type": "string", "enum": ["running", "succeeded", "failed", "stopped"]},
           "runs in this state only"),
    _param("before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
           "runs with a smaller id (the next page)"),
    _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many"),
]
RUN_TASKS = [
    _param("step", {"type": "string", "minLength": 1, "maxLength": 200},
           "the step whose tasks to list (required)"),
    _param("state", {"type": "string", "maxLength": 200},
           f"comma separated: {TASK_STATES}, removed"),
    _param("offset", {"type": "integer", "minimum": 0, "maximum": 10**12},
           "how many to skip"),
    _param("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
           "at most this many (100 by default)"),
]
STATS = [_param("window", {"type": "string", "enum": ["hour", "day"]},
                "what the per-type counts cover (the last hour by default)")]
FORCE = [_param("force", {"type": "boolean"}, "also remove a running task (it is stopped)")]
FOLLOW = [_param("follow", {"type": "boolean"}, "stream as server-sent events until it ends")]
OFFSET = [_param("offset", {"type": "integer", "minimum": 0, "maximum": 10**15},
                 "where this chunk starts in the log")]
PRUNE = [
    _param("dry_run", {"type": "boolean"}, "say what would go, and remove nothing"),
    _param("older_than", {"type": "string", "maxLength": 40},
           "every ended task that ended longer ago than this (\"30d\"), whatever the rules"),
    _param("type", {"type": "string", "maxLength": 200}, "tasks of this type only"),
]
REMOVE_WORKER = [_param("mode", {"type": "string", "enum": ["finish", "handback"]},
                        "let its task finish, or hand it back")]

# Path parameters: how each named part of a route is spelt.
PATH_PARAMETERS = {
    "task_id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
    "stream": {"type": "string", "enum": ["stdout", "stderr", "output"]},
    "worker_id": {"type": "string", "pattern": protocol.WORKER_ID_PATTERN},
}

