"""Workflow runs: started from a workflow file (API, CLI, schedule, inbox), advanced as their
tasks end, stopped, and rerun from their failed steps.

A run is a row in the store with the file it started from; its steps' tasks are ordinary
tasks, made through intake with a dedupe key per (run, step, item, round), so that making a
step's tasks twice (a crash between making them and tying them to the run, two servers
advancing the same run) gives back the same tasks: every step runs once per round.

The advancer (a thread) waits for the end of any task of a running run (its wake-up
topics), then reads each running run's tasks, works out with `workflowplan.plan` what
comes next, makes it and ends the run when nothing is left. It also looks every few seconds,
so a run is advanced after a restart or a wake-up another server missed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from blanket.config.problems import ConfigInvalid
from blanket.config.tasktype import TaskType
from blanket.config.workflow import Step, Workflow, parse_workflow_text, secret_names
from blanket.envnames import ENV_NAME, FIRE_TIME_VARIABLE, loader_name
from blanket.errors import BlanketError, Conflict, InvalidInput, ItemsRefused, NotFound
from blanket.models import RUN_STATES, SECRET_MASK, Run, RunTask, Task
from blanket.server.api.taskfiles import open_task_file
from blanket.server.catalog import Catalog
from blanket.server.intake import Intake, TaskRequest, check_text
from blanket.server.queue import Queue
from blanket.server.workflowplan import (
    ACTIVE,
    Plan,
    as_variable,
    latest_by_item,
    plan,
    task_environment,
)
from blanket.store.base import Store
from blanket.wakeups import Wakeups, task_topic

log = structlog.get_logger("blanket.workflows")

# A step's tasks GET /run/ID shows; GET /run/ID/tasks pages through them all.
STEP_TASKS_SHOWN = 100
WORKFLOWS = "workflows"  # a run started, was rerun or stopped: the advancer looks again
LOOK_EVERY = 5.0  # seconds between looks without a wake-up
RESULTS_LIMIT = 1024 * 1024  # bytes of a step's results file at most
MAX_RESULT_NAMES = 1000
MAX_VALUE = 120 * 1024  # bytes of one variable a run or a result may set (a process takes
# less than 128 KiB as NAME=value)
RESULTS_CACHED = 100_000  # succeeded tasks whose results are kept in memory, at most
RESULTS_BYTES = 64 * 1024 * 1024  # and what they came to as read, at most


def step_key(run_id: int, step: str, item: int, round_: int) -> str:
    """The dedupe key of a step's task: one task per (run, step, item, round)."""
    return f"run:{run_id}:{step}:{item}:{round_}"


class Workflows:
    """Starts, advances, stops and reruns workflow runs. `takes(type, name)` says whether a
    type takes a variable; `task_dir(type, id)` is a task's folder."""

    def __init__(self, store: Store, catalog: Catalog, intake: Intake, queue: Queue,
                 wakeups: Wakeups, types: Callable[[str], TaskType | None],
                 task_dir: Callable[[str, int], Path]):
        self.store = store
        self.catalog = catalog
        self.intake = intake
        self.queue = queue
        self.wakeups = wakeups
        self.types = types
        self.task_dir = task_dir
        self.stopping = threading.Event()
        self._kicked = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one advance at a time in this server
        self._parsed: dict[str, Workflow] = {}  # version -> the file a run started from
        # (task id, file) -> the results a succeeded task wrote: an ended task's folder no
        # longer changes, so each file is read once, not at every look at its run.
        self._results: OrderedDict[tuple[int, str], dict[str, Any] | ValueError] = \
            OrderedDict()
        self._cached_bytes = 0  # what the cached results came to, as read

    # ---------------------------------------------------------------- starting

    def workflow(self, name: str) -> Workflow:
        """The current good definition of workflow `name`; NotFound or InvalidInput says
        why there is none."""
        loaded = self.catalog.workflow(name)
        if loaded is None:
            known = ", ".join(w.name for w in self.catalog.workflows()) or "none yet"
            raise NotFound(f"no workflow named {name!r}; known workflows: {known}")
        if loaded.workflow is None:
            problems = "; ".join(str(p) for p in loaded.problems[:3])
            raise InvalidInput(f"workflow {name!r} has problems and no earlier good version: "
                               f"{problems}")
        return loaded.workflow

    def start(self, name: str, environment: Any, submitted_by: str | None, *,
              schedule: str | None = None, dedupe_key: str | None = None,
              now: float | None = None, given: dict[str, str] | None = None) -> Run:
        """Start a run of workflow `name` with `environment` (its variables). The first
        steps' tasks are checked before anything is stored: InvalidInput says what to fix.
        A `dedupe_key` used before (a schedule's fire, an inbox file, started before a crash)
        gives back that run, as it is, whatever the file says now."""
        if dedupe_key is not None:
            earlier = self.store.run_for_key(dedupe_key)
            if earlier is not None:
                return earlier
        workflow = self.workflow(name)
        values = {**run_environment(workflow, environment), **(given or {})}  # given: blanket's
        now = time.time() if now is None else now
        trial = Run(id=0, workflow=name, version=workflow.version, definition=workflow.text,
                    environment=values, state="running", round=1, added=now,
                    submitted_by=submitted_by, schedule=schedule)
        first = plan(workflow, trial, [], self._read_results)
        failed = next((v for v in first.steps.values() if v.state == "failed"), None)
        if failed is not None:
            raise InvalidInput(f"step {failed.name}: {failed.reason}")
        self.intake.check_all([request for _step, _item, request
                               in self._requests(workflow, trial, first)], now)
        run = self.store.add_run(name, workflow.version, workflow.text, values, now,
                                 submitted_by, schedule, dedupe_key)
        if run.version == workflow.version:  # not a run another server started with the key
            self._parsed.setdefault(run.version, workflow)
        self.advance(run)
        self._kick()
        log.info("workflow run started", workflow=name, run=run.id, by=submitted_by)
        return self.store.get_run(run.id) or run

    # ---------------------------------------------------------------- operator's verbs

    def start_scheduled(self, schedule: str, workflow: str, environment: dict[str, str],
                        dedupe_key: str | None, fire_time: str | None = None) -> Task | None:
        """A schedule's run of `workflow` (once per `dedupe_key`); the task that stands for
        it in the schedule's state: the run's first task (None when it made none). A fired
        run's command steps get its fire time as BLANKET_FIRE_TIME, as a schedule's task
        does (a type step cannot declare a BLANKET_ name)."""
        run = self.start(workflow, dict(environment), "schedule", schedule=schedule,
                         dedupe_key=dedupe_key,
                         given={FIRE_TIME_VARIABLE: fire_time} if fire_time else None)
        return self.first_task(run)

    def first_task(self, run: Run) -> Task | None:
        first = self.store.run_first_task(run.id)
        return None if first is None else self.store.get_task(first)

    def run_for_key(self, key: str) -> Run | None:
        return self.store.run_for_key(key)

    def run_of_task(self, task_id: int) -> dict | None:
        """The run a task belongs to (its id, step, item and round), or None."""
        found = self.store.run_of_task(task_id)
        if found is None:
            return None
        run_id, step, item, round_ = found
        return {"id": run_id, "step": step, "item": item, "round": round_}

    def list_runs(self, workflow: str | None = None, state: str | None = None,
                  before: int | None = None, limit: int = 100,
                  schedule: str | None = None) -> list[Run]:
        return self.store.list_runs(workflow, state, before, limit, schedule)

    def get(self, run_id: int) -> Run:
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"no workflow run {run_id}")
        return run

    def stop(self, run_id: int, by: str | None) -> Run:
        """Stop a running run: it makes no more tasks, and its tasks not ended are stopped."""
        run = self.get(run_id)
        ended = self.store.end_run(run_id, "stopped", f"stopped by {by or 'anonymous'}",
                                   time.time())
        if ended is None:
            now = self.get(run_id).state
            raise Conflict(f"workflow run {run_id} has ended ({now}); only a running run "
                           "can be stopped")
        self._stop_tasks(ended, by)
        self._kick()
        log.info("workflow run stopped", workflow=run.workflow, run=run_id, by=by)
        return ended

    def rerun(self, run_id: int) -> Run:
        """Run a failed or stopped run's failed steps again (and those after them); steps
        that succeeded keep their tasks and results."""
        run = self.get(run_id)
        again = self.store.rerun_run(run_id)
        if again is None:
            raise Conflict(f"workflow run {run_id} is {run.state}; only a failed or stopped "
                           "run can be rerun")
        self.advance(again)
        self._kick()
        log.info("workflow run rerun", workflow=run.workflow, run=run_id, round=again.round)
        return self.get(run_id)

    def secrets(self, workflow: Workflow) -> frozenset[str]:
        """The variables some type of the workflow calls secret: their values are never
        shown, in the run or in any of its tasks."""
        return secret_names(workflow, self._secrets_of)

    def _secrets_of(self, type_name: str) -> frozenset[str]:
        task_type = self.types(type_name)
        return task_type.secrets if task_type is not None else frozenset()

    def summary(self, run: Run, workflow: Workflow | None = None) -> dict:
        """The run's fields as the API shows them (secret values as ***)."""
        try:
            hidden = self.secrets(workflow or self._definition(run))
        except InvalidInput:
            hidden = frozenset(run.environment)  # cannot tell: show none
        return run_json(run, hidden)

    def view(self, run: Run) -> dict:
        """The run as the API shows it: its fields, and each step with its state, its items
        counted by the state of their latest task, and its first STEP_TASKS_SHOWN tasks
        (`step_tasks` pages through the rest: a wide fan-out has thousands)."""
        workflow = self._definition(run)
        tasks = self.store.run_tasks(run.id)
        steps = plan(workflow, run, tasks, self._read_results).steps
        return {**self.summary(run, workflow), "steps": [
            {"name": s.name, "type": workflow.step_type(s), "command": s.command is not None,
             "after": list(s.after), "each": s.each, "state": steps[s.name].state,
             "reason": steps[s.name].reason, **_item_states(steps[s.name].tasks),
             "task_count": len(steps[s.name].tasks),
             "tasks": [_task_json(t) for t in steps[s.name].tasks[:STEP_TASKS_SHOWN]]}
            for s in workflow.steps]}

    def step_tasks(self, run: Run, step: str, states: frozenset[str] = frozenset(),
                   offset: int = 0, limit: int = STEP_TASKS_SHOWN) -> dict:
        """One step's tasks, every round's, in item and round order: those in `states`
        (task states, or "removed") if given, `limit` of them from `offset`, with how many
        there are in all."""
        workflow = self._definition(run)
        if workflow.step(step) is None:
            names = ", ".join(s.name for s in workflow.steps)
            raise NotFound(f"run {run.id}'s workflow has no step {step!r}; its steps: {names}")
        count, found = self.store.run_step_tasks(run.id, step, states, offset, limit)
        return {"step": step, "count": count, "offset": offset, "limit": limit,
                "tasks": [_task_json(t) for t in found]}

    # ---------------------------------------------------------------- advancing

    def advance(self, run: Run) -> Plan | None:
        """Make what comes next in `run` and end it when nothing is left."""
        with self._lock:
            return self._advance(run)

    def _advance(self, seen: Run) -> Plan | None:
        # Read again: a stop or a rerun (here or on another server) since `seen` was read
        # must not be judged by an older round.
        run = self.store.get_run(seen.id)
        if run is None or run.state != "running":
            return None
        try:
            workflow = self._definition(run)
        except InvalidInput as broken:  # its stored file no longer parses: a bug
            self._end(run, "failed", broken.message)
            return None
        tasks = self.store.run_tasks(run.id)
        decided = plan(workflow, run, tasks, self._read_results)
        if decided.create:
            refused = self._create(workflow, run, decided)
            if refused is not None:
                self._end(run, "failed", refused)
                return decided
            current = self.store.get_run(run.id)
            if current is None or current.state != "running" or current.round != run.round:
                self._stop_tasks(run, "workflow stop", round_=run.round)  # ended meanwhile
        elif decided.outcome is not None:
            self._end(run, *decided.outcome)
        return decided

    def _end(self, run: Run, state: str, reason: str | None) -> None:
        if self.store.end_run(run.id, state, reason, time.time(), run.round) is not None:
            self._kick()
            log.info("workflow run ended", workflow=run.workflow, run=run.id, state=state,
                     reason=reason)

    def _create(self, workflow: Workflow, run: Run, decided: Plan) -> str | None:
        """Make the tasks `decided` names and tie them to the run; or why they cannot be."""
        for step, _items in decided.create:
            if step.command is not None and self.types(workflow.step_type(step)) is None:
                return (f"step {step.name}: workflows/{workflow.name}.toml no longer has this "
                        "step's command (its tasks run the file's current command); put it "
                        "back, then rerun this run")
        made = self._requests(workflow, run, decided)
        try:  # each task tied to the run as it is stored, in the one transaction
            self.intake.submit_all([request for _s, _i, request in made])
        except ItemsRefused as refused:
            index, message = refused.problems[0]
            return f"step {made[index][0]}: {message}"
        except InvalidInput as refused:
            return refused.message
        return None

    def _requests(self, workflow: Workflow, run: Run,
                  decided: Plan) -> list[tuple[str, int, TaskRequest]]:
        return [(step.name, item, TaskRequest(
            type=workflow.step_type(step),
            environment=task_environment(workflow, step, values, self._takes, run),
            tags=step.tags, priority=step.priority, timeout=step.timeout,
            retries=step.retries, schedule=run.schedule,
            dedupe_key=step_key(run.id, step.name, item, run.round),
            submitted_by=run.submitted_by or "workflow",
            run=(run.id, step.name, item, run.round),
            # A command step takes every variable, each checked already: the run's (no
            # loader names), results (none either), the file's (none), and blanket's own.
            trusted_environment=step.type is None))
            for step, items in decided.create for item, values in items]

    def _takes(self, type_name: str, variable: str) -> bool:
        task_type = self.types(type_name)
        return task_type is not None and task_type.takes(variable)

    def _stop_tasks(self, run: Run, by: str | None, round_: int | None = None) -> None:
        """Stop the run's tasks not ended (of one round, when given)."""
        for task in self.store.run_tasks(run.id):
            if task.state in ACTIVE and (round_ is None or task.round == round_):
                with contextlib.suppress(BlanketError):  # ended meanwhile
                    self.queue.stop_task(task.task_id, by)

    def definition(self, run: Run) -> Workflow:
        """The workflow file the run started from."""
        return self._definition(run)

    def _definition(self, run: Run) -> Workflow:
        """The workflow file the run started from (parsed once per version)."""
        workflow = self._parsed.get(run.version)
        if workflow is None:
            try:
                workflow = parse_workflow_text(run.definition, run.workflow,
                                               f"run {run.id} of {run.workflow}")
            except ConfigInvalid as invalid:
                raise InvalidInput(f"the workflow file run {run.id} started from cannot be "
                                   f"read again: {invalid}") from None
            self._parsed[run.version] = workflow
        return workflow

    def _read_results(self, step: Step, task: RunTask) -> dict[str, Any]:
        """The values a succeeded task's results file sets (none when it wrote none)."""
        if step.results is None:
            return {}
        key = (task.task_id, step.results)
        found = self._results.get(key)
        if found is None:
            try:
                found = self._results_file(step, task)
            except ValueError as bad:
                found = bad
            except Exception as bad:  # whatever a task wrote, its trouble is the step's
                found = ValueError(f"results of task {task.task_id} cannot be read: "
                                   f"{type(bad).__name__}: {bad}"[:500])
            self._results[key] = found
            self._cached_bytes += _size(found)
            while len(self._results) > RESULTS_CACHED or self._cached_bytes > RESULTS_BYTES:
                self._cached_bytes -= _size(self._results.popitem(last=False)[1])
        if isinstance(found, ValueError):
            raise found
        return found

    def _results_file(self, step: Step, task: RunTask) -> dict[str, Any]:
        assert step.results is not None
        if task.type is None:
            return {}
        root = self.task_dir(task.type, task.task_id)
        try:
            opened, info = open_task_file(root, step.results)
        except NotFound:
            if step.results_named:  # the file says the step leaves it: its absence is news
                raise ValueError(f"task {task.task_id} left no {step.results}, which the "
                                 f"step names as its results") from None
            return {}
        except InvalidInput as bad:
            raise ValueError(f"results of task {task.task_id}: {bad.message}") from None
        with opened:
            if info.st_size > RESULTS_LIMIT:
                raise ValueError(f"results of task {task.task_id}: {step.results} is "
                                 f"{info.st_size} bytes; the most is {RESULTS_LIMIT}")
            data = opened.read(RESULTS_LIMIT + 1)
        return parse_results(data, f"results of task {task.task_id} ({step.results})")

    # ---------------------------------------------------------------- the loop

    def start_advancing(self) -> None:
        self._thread = threading.Thread(target=self._run, name="workflows", daemon=True)
        self._thread.start()

    def stop_advancing(self) -> None:
        self.stopping.set()
        self._kick()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        # By run: the steps it had tasks running in at its last whole look, and those tasks.
        seen: dict[int, tuple[frozenset[str], list[str]]] = {}
        whole = True
        while not self.stopping.is_set():
            topics = [WORKFLOWS]
            began = time.monotonic()
            made = False
            try:
                looked: dict[int, tuple[frozenset[str], list[str]]] = {}
                for run in self.store.running_runs():
                    try:
                        active = self.store.active_steps(run.id)
                    except Exception:
                        log.exception("workflow run not advanced", run=run.id)
                        continue
                    if not whole and run.id in seen and seen[run.id][0] == active:
                        # A task ended in a step that has others still running: nothing
                        # can start or end until its last one ends (a wide fan-out's ends
                        # cost one query each, not a look at every task of the run).
                        looked[run.id] = seen[run.id]
                        topics.extend(seen[run.id][1])
                        continue
                    try:
                        decided = self.advance(run)
                    except Exception:  # one run's trouble must not hold the others back
                        log.exception("workflow run not advanced", run=run.id)
                        decided = None
                    watched = [] if decided is None else [
                        task_topic(t.task_id) for v in decided.steps.values()
                        for t in v.tasks if t.state in ACTIVE]
                    if decided is not None and decided.create:
                        made = True  # its new tasks are watched from the next look
                    else:
                        looked[run.id] = (active, watched)
                    topics.extend(watched)
                seen = looked
                took = time.monotonic() - began
                whole = made
                if made:
                    continue
                whole = not self._wait(topics, looked) or self._kicked.is_set()
                self._kicked.clear()
                # Woken: rest as long as the last look took, so that a wide fan-out's ends,
                # coming fast, are taken a batch at a time (the look reads every task of the
                # run anyway) and the advancer never holds more than half a CPU.
                self.stopping.wait(min(1.0, took))
            except Exception:
                log.exception("workflow advance failed")
                self.stopping.wait(1.0)

    def _wait(self, topics: list[str],
              looked: dict[int, tuple[frozenset[str], list[str]]]) -> bool:
        """Wait for the end of a task among `topics` (or WORKFLOWS); False when LOOK_EVERY
        passed first. A change between the look and the wait's start (a task that ended in
        between: its wake-up came before anyone waited for it) ends the wait at once."""
        checked = [False]

        def check() -> bool | None:
            if checked[0] or self.stopping.is_set() or self._kicked.is_set():
                return True
            checked[0] = True
            changed = any(self.store.active_steps(run_id) != active
                          for run_id, (active, _topics) in looked.items())
            return True if changed else None
        return self.wakeups.wait_for(check, LOOK_EVERY, topics=topics) is not None

    def _kick(self) -> None:
        """A run started, ended, was stopped or rerun here: the next look is a whole one."""
        self._kicked.set()
        self.wakeups.notify(WORKFLOWS)


def run_environment(workflow: Workflow, given: Any) -> dict[str, str]:
    """A run's variables: the file's defaults, then `given`, which may set only the names
    the workflow declares; every required name set."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidInput("environment: give an object of NAME: value")
    values = dict(workflow.environment)
    declared = ", ".join(sorted(workflow.variables)) or "none"
    for name, value in given.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise InvalidInput(f"environment name {name!r} is not valid; use letters, digits "
                               "and _, not starting with a digit")
        if name not in workflow.variables:
            raise InvalidInput(f"environment {name}: workflow {workflow.name!r} does not take "
                               f"this variable (it takes: {declared}); declare it in its "
                               "[environment] or required", code="undeclared_variable")
        values[name] = _text(value, f"environment {name}")
    missing = [n for n in workflow.required if n not in values]
    if missing:
        raise InvalidInput(f"workflow {workflow.name!r} needs {', '.join(missing)}: add "
                           f"{'it' if len(missing) == 1 else 'them'} to \"environment\"")
    return values


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        raise InvalidInput(f"{what}: give a string, number or boolean, not "
                           f"{type(value).__name__}")
    if "\x00" in text:
        raise InvalidInput(f"{what}: a NUL byte cannot be passed to a process")
    text = check_text(text, what)
    if len(text.encode()) > MAX_VALUE:
        raise InvalidInput(f"{what}: {len(text.encode())} bytes is too long; the most is "
                           f"{MAX_VALUE}")
    return text


def parse_results(data: bytes, what: str) -> dict[str, Any]:
    """A results file's values: a JSON object of NAME: value, the names checked (the steps
    after see each as a variable: see `workflowplan.as_variable`)."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as bad:
        raise ValueError(f"{what} is not JSON that can be read: {bad}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{what} must be a JSON object of NAME: value")
    if len(parsed) > MAX_RESULT_NAMES:
        raise ValueError(f"{what} sets {len(parsed)} names; the most is {MAX_RESULT_NAMES}")
    values: dict[str, Any] = {}
    for name, value in parsed.items():
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{what}: {name!r} is not a variable name (letters, digits and "
                             "_, not starting with a digit)")
        if loader_name(name):
            raise ValueError(f"{what}: {name} is read by shells, the loader or interpreters; "
                             "a result may not set it")
        try:
            _text(as_variable(value), f"{what}: {name}")
        except InvalidInput as bad:
            raise ValueError(bad.message) from None
        values[name] = value
    return values


def _size(results: dict[str, Any] | ValueError) -> int:
    """About what cached results hold (their variables' sizes)."""
    if isinstance(results, ValueError):
        return 200
    return sum(len(name) + len(as_variable(value)) for name, value in results.items()) + 100


def run_json(run: Run, hidden: frozenset[str] = frozenset()) -> dict:
    shown = {name: SECRET_MASK if name in hidden else value
             for name, value in run.environment.items()}
    return {"id": run.id, "workflow": run.workflow, "version": run.version,
            "state": run.state, "round": run.round, "environment": shown,
            "added": run.added, "finished": run.finished,
            "reason": run.reason, "submitted_by": run.submitted_by, "schedule": run.schedule}


def _state_name(task: RunTask) -> str:
    return task.state.value if task.state is not None else "removed"


def _item_states(tasks: list[RunTask]) -> dict:
    """How many items a step has, and how many by the state of each one's latest task
    ("removed" for a task that was removed)."""
    latest = latest_by_item(tasks)
    return {"item_count": len(latest),
            "item_states": dict(Counter(_state_name(t) for t in latest.values()))}


def _task_json(task: RunTask) -> dict:
    return {"id": task.task_id, "item": task.item, "round": task.round,
            "state": task.state.value if task.state is not None else None,
            "version": task.version, "exit_code": task.exit_code}


def check_run_state(state: str | None) -> str | None:
    if state is not None and state not in RUN_STATES:
        raise InvalidInput(f"state: {state!r} is not a run state; use one of: "
                           f"{', '.join(RUN_STATES)}")
    return state

