"""The tools the MCP endpoint offers an agent, each with its input schema (its limits), the
least role it needs, and a call that goes through the same service verbs and checks as the
REST routes: a submitter submits only the types its token allows and stops only its own
tasks; secret values are masked in records and logs as everywhere else."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import fastjsonschema

from blanket.auth import SUBMITTER, VIEWER, Forbidden, allows
from blanket.errors import DuplicateTask, NotFound
from blanket.models import AFTER_POLICIES, MAX_AFTER, Task, TaskFilter, TaskState
from blanket.server import idempotency
from blanket.server.api.access import identity, refusal
from blanket.server.api.schemas import SUBMISSION
from blanket.server.api.taskfiles import Masker, read_tail
from blanket.server.api.tasks import MAX_WAIT, TaskRoutes, has_ended
from blanket.server.api.workflows import WorkflowRoutes
from blanket.server.intake import parse_task_request
from blanket.server.services import Services

# One call holds a server thread at most this long: less than the minute after which
# clients and proxies commonly give up on a request (an agent polls wait_task for longer).
MAX_TOOL_WAIT = 50.0
MAX_LOG_LINES = 2000
MAX_LOG_BYTES = 256 * 1024
TASK_ID = {"type": "integer", "minimum": 1, "maximum": 2**53, "description": "the task's id"}
RUN_ID = {**TASK_ID, "description": "the workflow run's id"}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}


class ToolError(Exception):
    """A call the agent should correct (its arguments), worded to say how."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    role: str
    schema: dict[str, Any]
    read_only: bool = True
    destructive: bool = False

    def listed(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.schema,
                "annotations": {"readOnlyHint": self.read_only,
                                "destructiveHint": self.destructive,
                                "openWorldHint": False}}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def _wait_for(again: str) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": MAX_TOOL_WAIT,
            "description": f"wait for its end this long at most; call {again} again to wait "
                           "longer"}


TOOLS = (
    Tool("list_types", "The task types one can start: for each, its description, the "
         "variables it requires (name, type, description), its defaults (secret ones as "
         "***), tags and timeout.", VIEWER, _object({})),
    Tool("submit_task", "Start a task of a type with its variables. Answers the task's record "
         "(id, state, and while queued why it waits); with wait_seconds, answers once it ended "
         "or that time passed.", SUBMITTER, _object({
             "type": {**NAME, "description": "the task type (list_types names them)"},
             "environment": {**SUBMISSION.schema["properties"]["environment"],
                             "description": "the variables: NAME: value"},
             "priority": SUBMISSION.schema["properties"]["priority"],
             "not_before": {"type": "string", "maxLength": 64,
                            "description": "start no earlier: ISO 8601 time, or +10m"},
             "after": {"type": "array", "maxItems": MAX_AFTER,
                       "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                       "description": "ids of tasks it waits for: it runs once they all "
                                      "succeeded, else ends SKIPPED"},
             "after_policy": {"enum": list(AFTER_POLICIES),
                              "description": "always: run once they all ended, whatever "
                                             "their state"},
             "wait_seconds": _wait_for("wait_task"),
             "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255,
                                 "description": "the same key again (say, on a retry after "
                                                "a timeout) answers the task it made, and "
                                                "makes no second one"},
         }, ("type",)), read_only=False),
    Tool("get_task", "One task's record: state, exit code, times, worker, why it waits.",
         VIEWER, _object({"id": TASK_ID}, ("id",))),
    Tool("wait_task", "Wait for a task to end (SUCCESS, FAILED, TIMEDOUT, STOPPED) or for "
         "timeout_seconds (at most 50) to pass; answers its record either way: call it again "
         "while its state is not an end.", VIEWER, _object({
             "id": TASK_ID,
             "timeout_seconds": {"type": "number", "minimum": 0, "maximum": MAX_TOOL_WAIT},
         }, ("id",))),
    Tool("task_logs", "The last lines a task printed (secret values as ***): stdout, stderr, "
         "or output (both, for types that combine them).", VIEWER, _object({
             "id": TASK_ID,
             "stream": {"enum": ["stdout", "stderr", "output"]},
             "lines": {"type": "integer", "minimum": 1, "maximum": MAX_LOG_LINES},
         }, ("id",))),
    Tool("list_tasks", "Recent tasks, newest first, filtered by state and type.", VIEWER,
         _object({
             "state": {"enum": [s.value for s in TaskState]},
             "type": NAME,
             "limit": {"type": "integer", "minimum": 1, "maximum": 100},
         })),
    Tool("list_workflows", "The workflows one can run: for each, its description, the "
         "variables a run must give (required) and may give (with defaults), and its steps "
         "(name, type, the steps each waits for).", VIEWER, _object({})),
    Tool("run_workflow", "Start a run of a workflow with its variables. Answers the run "
         "(id, state: running, succeeded, failed or stopped; each step's state and tasks); "
         "with wait_seconds, once it ended or that time passed.", SUBMITTER, _object({
             "name": {**NAME, "description": "the workflow (list_workflows names them)"},
             "environment": {**SUBMISSION.schema["properties"]["environment"],
                             "description": "the run's variables: NAME: value"},
             "wait_seconds": _wait_for("get_run"),
         }, ("name",)), read_only=False),
    Tool("get_run", "One workflow run: its state, reason, and each step's state and tasks "
         "(task_logs reads a task's output); with wait_seconds, once it ended or that time "
         "passed.", VIEWER, _object({
             "id": RUN_ID,
             "wait_seconds": {"type": "number", "minimum": 0, "maximum": MAX_TOOL_WAIT},
         }, ("id",))),
    Tool("stop_run", "Stop a workflow run: no more steps start, and its tasks not ended are "
         "stopped. A submitter stops only the runs it started.", SUBMITTER,
         _object({"id": RUN_ID}, ("id",)),
         read_only=False, destructive=True),
    Tool("stop_task", "Stop a task: a queued one at once, a running one through its worker "
         "(its process group gets TERM, then KILL). A submitter stops only its own tasks.",
         SUBMITTER, _object({"id": TASK_ID}, ("id",)), read_only=False, destructive=True),
)


class Tools:
    def __init__(self, services: Services):
        self.s = services
        self.tasks = TaskRoutes(services)  # the REST routes' record shaping and checks
        self.runs = WorkflowRoutes(services)
        self.by_name = {tool.name: tool for tool in TOOLS}
        self.checks: dict[str, Callable[[Any], Any]] = {
            tool.name: fastjsonschema.compile(tool.schema) for tool in TOOLS}

    def exists(self, name: str) -> bool:
        return name in self.by_name

    def listed(self) -> list[dict[str, Any]]:
        """The tools the caller's role may call."""
        caller = identity()
        return [tool.listed() for tool in TOOLS if allows(caller, tool.role)]

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        tool = self.by_name[name]
        caller = identity()
        if not allows(caller, tool.role):
            raise refusal(caller, tool.role)
        try:
            self.checks[name](arguments)
        except fastjsonschema.JsonSchemaException as e:
            raise ToolError(f"{name}: {e.message.replace('data', 'arguments', 1)}") from None
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_{name}")
        return handler(arguments)

    def _list_types(self, _: dict[str, Any]) -> dict[str, Any]:
        types = []
        for loaded in self.s.catalog.types():
            if loaded.task_type is None:
                continue
            shown = loaded.task_type.shown_json()
            types.append({
                "name": loaded.name, "description": shown["description"],
                "required": [{"name": n, **spec} for n, spec in shown["required"].items()],
                "defaults": shown["defaults"], "tags": shown["tags"],
                "timeout_seconds": shown["timeout"], "version": loaded.version,
            })
        return {"types": types}

    def _submit_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        caller = identity()
        data = {k: v for k, v in arguments.items() if k not in ("wait_seconds",
                                                               "idempotency_key")}
        data["environment"] = {k: v if isinstance(v, str) else _plain(v)
                               for k, v in arguments.get("environment", {}).items()}
        request = parse_task_request(data, time.time())
        if not caller.may_submit(request.type):
            raise Forbidden(f"token {caller.name!r} may not submit tasks of type "
                            f"{request.type!r}")
        wait = float(arguments.get("wait_seconds") or 0)
        key = arguments.get("idempotency_key")
        request = replace(request, submitted_by=caller.name, front=wait > 0,
                          # per caller, as the REST route's Idempotency-Key
                          dedupe_key=f"client:{caller.name}:{key}" if key else None,
                          fingerprint=idempotency.fingerprint(data) if key else None)
        try:
            task = self.s.intake.submit(request)
        except DuplicateTask as taken:
            task = self.s.tasks.get(taken.task_id)
        if wait > 0:
            task = self.tasks.wait_until_ended(task, min(wait, MAX_WAIT))
        return self.tasks.shown([task], one=True)[0]

    def _get_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.tasks.shown([self.s.tasks.get(arguments["id"])], one=True)[0]

    def _wait_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task = self.s.tasks.get(arguments["id"])
        if not has_ended(task):
            task = self.tasks.wait_until_ended(task, float(arguments.get("timeout_seconds",
                                                                         60.0)))
        return self.tasks.shown([task], one=True)[0]

    def _task_logs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task = self.s.tasks.get(arguments["id"])
        stream = arguments.get("stream") or self._default_stream(task)
        path = self.s.logs.path(task, stream)
        try:  # as the REST route opens it: never through a link out of the task's folder
            data, size = read_tail(path.parent, path.name, Masker.of(task), MAX_LOG_BYTES)
        except NotFound:
            later = "" if has_ended(task) else " yet"
            return {"id": task.id, "state": task.state.value, "stream": stream, "text": "",
                    "note": f"task {task.id} has no {stream} log{later}"}
        lines = data.decode(errors="replace").splitlines()
        wanted = arguments.get("lines", 200)
        return {"id": task.id, "state": task.state.value, "stream": stream,
                "text": "\n".join(lines[-wanted:]), "bytes": size}

    def _default_stream(self, task: Task) -> str:
        """stdout, or output for a type that combines its streams there."""
        combined = self.s.logs.path(task, "output")
        return "output" if combined.is_file() else "stdout"

    def _list_tasks(self, arguments: dict[str, Any]) -> dict[str, Any]:
        found = self.s.tasks.list(TaskFilter(
            states=(arguments["state"],) if "state" in arguments else (),
            types=(arguments["type"],) if "type" in arguments else (),
            limit=arguments.get("limit", 20)))
        return {"tasks": self.tasks.shown(found)}

    def _list_workflows(self, _: dict[str, Any]) -> dict[str, Any]:
        found = []
        for loaded in self.s.catalog.workflows():
            workflow = loaded.workflow
            if workflow is None:
                continue
            found.append({
                "name": workflow.name, "description": workflow.description,
                "required": list(workflow.required), "defaults": dict(workflow.environment),
                "steps": [{"name": s.name, "type": workflow.step_type(s),
                           "after": list(s.after), "each": s.each} for s in workflow.steps],
                "version": workflow.version})
        return {"workflows": found}

    def _run_workflow(self, arguments: dict[str, Any]) -> dict[str, Any]:
        environment = {k: v if isinstance(v, str) else _plain(v)
                       for k, v in arguments.get("environment", {}).items()}
        run = self.runs.start_run(arguments["name"], environment)
        wait = float(arguments.get("wait_seconds") or 0)
        if wait > 0:
            run = self.runs.wait_until_ended(run, wait)
        return self.s.workflows.view(run)

    def _get_run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        run = self.s.workflows.get(arguments["id"])
        wait = float(arguments.get("wait_seconds") or 0)
        if wait > 0 and not run.ended:
            run = self.runs.wait_until_ended(run, wait)
        return self.s.workflows.view(run)

    def _stop_run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        run = self.s.workflows.get(arguments["id"])
        self.runs.may_change(identity(), run)  # as POST /run/ID/stop
        return self.s.workflows.view(self.s.workflows.stop(run.id, identity().name))

    def _stop_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.changeable_task(str(arguments["id"]))
        return self.s.queue.stop_task(task.id, identity().name).to_json()


def _plain(value: Any) -> str:
    """A number or boolean an agent sent for a variable, as the API takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
