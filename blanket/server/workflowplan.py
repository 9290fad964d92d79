"""The rules of a workflow run, without side effects: from the run's file, its round and the
tasks its steps made, each step's state and what to create next, and whether the run ended.

A step runs once every step in its `after` succeeded. Its state:
- pending: a step it waits for has not ended yet;
- running: it has tasks not ended (or tasks to make now);
- succeeded: every item's latest task ended SUCCESS (and its results could be read);
- failed / stopped: one item's latest task did not succeed (stopped: it was stopped);
- skipped: a step it waits for did not succeed, so it never ran.

A rerun raises the run's round: an item whose latest task did not succeed, in a round
before the run's, gets a new task when its step's `after` all succeeded; items that
succeeded keep their task and results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from blanket.config.workflow import ITEM, ITEM_INDEX, MAX_ITEMS, Step, Workflow, render
from blanket.envnames import too_big, too_long
from blanket.errors import InvalidInput
from blanket.models import Run, RunTask, TaskState
from blanket.server.intake import check_text

ACTIVE = frozenset({TaskState.WAITING, TaskState.QUEUED, TaskState.CLAIMED, TaskState.RUNNING})
NOT_RUN = ("failed", "skipped", "stopped")

# read_results(step, task) -> the values a succeeded task's results file sets (JSON);
# ValueError says what is wrong with it.
ReadResults = Callable[[Step, RunTask], dict[str, Any]]
# takes(type_name, variable) -> whether the step's type takes that variable.
Takes = Callable[[str, str], bool]


@dataclass
class StepView:
    name: str
    state: str = "pending"
    reason: str | None = None
    tasks: list[RunTask] = field(default_factory=list)  # every task, all rounds
    results: dict[str, Any] | None = None  # once succeeded: what the steps after it get


@dataclass
class Plan:
    steps: dict[str, StepView]
    # (step, [(item, environment)]): tasks to make now, in the run's round
    create: list[tuple[Step, list[tuple[int, dict[str, str]]]]]
    outcome: tuple[str, str | None] | None = None  # the run ends: (state, reason)


class StepFailed(Exception):
    """A step cannot run as written (a missing variable, a bad list or results file)."""


def plan(workflow: Workflow, run: Run, tasks: list[RunTask],
         read_results: ReadResults) -> Plan:
    by_step: dict[str, list[RunTask]] = {}
    for task in tasks:
        by_step.setdefault(task.step, []).append(task)
    views: dict[str, StepView] = {}
    create: list[tuple[Step, list[tuple[int, dict[str, str]]]]] = []
    running = run.state == "running"
    for step in workflow.order:
        view = views[step.name] = StepView(step.name, tasks=by_step.get(step.name, []))
        before = [views[name] for name in step.after]
        blocked = next((v for v in before if v.state in NOT_RUN), None)
        ready = all(v.state == "succeeded" for v in before)
        latest = latest_by_item(view.tasks)
        if not latest:
            if blocked is not None:
                view.state, view.reason = "skipped", f"step {blocked.name} did not succeed"
            elif ready and running:
                try:
                    items = _environments(workflow, step, run, views)
                except StepFailed as failed:
                    view.state, view.reason = "failed", str(failed)
                    continue
                if items:
                    view.state = "running"
                    create.append((step, items))
                else:  # fanned out over an empty list: nothing to do
                    view.state, view.results = "succeeded", {}
            continue
        again = [t for t in latest.values() if t.state not in ACTIVE
                 and t.state != TaskState.SUCCESS and t.round < run.round]
        if again and ready and running:
            try:
                environments = dict(_environments(workflow, step, run, views))
                if set(environments) != set(latest):
                    raise StepFailed(f"the list it fans over ({step.each}) has "
                                     f"{len(environments)} items now, {len(latest)} when it "
                                     "first ran: start a new run")
            except StepFailed as failed:
                view.state, view.reason = "failed", str(failed)
                continue
            create.append((step, [(t.item, environments[t.item]) for t in again]))
            view.state = "running"
            continue
        _judge(step, view, latest, read_results)
    outcome = None
    if running and not create and not any(v.state in ("running", "pending")
                                          for v in views.values()):
        failed = next((v for v in views.values() if v.state in ("failed", "stopped")), None)
        outcome = ("succeeded", None) if failed is None else (
            "failed", f"step {failed.name}: {failed.reason}")
    return Plan(views, create, outcome)


def latest_by_item(tasks: list[RunTask]) -> dict[int, RunTask]:
    """Each item's task of the latest round it has."""
    latest: dict[int, RunTask] = {}
    for task in tasks:
        if task.item not in latest or task.round > latest[task.item].round:
            latest[task.item] = task
    return latest


def _judge(step: Step, view: StepView, latest: dict[int, RunTask],
           read_results: ReadResults) -> None:
    """A step with tasks: running, failed, stopped, or succeeded with its results."""
    if any(t.state in ACTIVE for t in latest.values()):
        view.state = "running"
        return
    for item in sorted(latest):
        task = latest[item]
        if task.state == TaskState.SUCCESS:
            continue
        view.state = "stopped" if task.state == TaskState.STOPPED else "failed"
        view.reason = (f"task {task.task_id} was removed" if task.state is None
                       else f"task {task.task_id} ended {task.state.value}"
                       + (f" (exit code {task.exit_code})" if task.exit_code else ""))
        return
    if sorted(latest) != list(range(len(latest))):  # an item's record is gone
        view.state, view.reason = "failed", "items of this step are missing from the run"
        return
    try:
        if step.each is None:
            view.results = read_results(step, latest[0])
        else:
            view.results = _gathered([read_results(step, latest[i]) for i in sorted(latest)])
    except ValueError as bad:
        view.state, view.reason = "failed", str(bad)
        return
    view.state = "succeeded"


def _gathered(each: list[dict[str, Any]]) -> dict[str, Any]:
    """A fanned step's results: each name a list of its items' values, in item order (null
    where an item did not set it)."""
    names = sorted({name for results in each for name in results})
    return {name: [results.get(name) for results in each] for name in names}


def as_variable(value: Any) -> str:
    """A result as a variable: strings as they are, numbers and booleans as JSON writes
    them, lists and objects as JSON, null as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def variables(workflow: Workflow, step: Step, run: Run,
              views: dict[str, StepView]) -> dict[str, str]:
    """What a step's tasks start from: the run's variables, then the results of the steps
    it comes after, nearest last."""
    found = dict(run.environment)
    for name in workflow.ancestors[step.name]:
        found.update((key, as_variable(value))
                     for key, value in (views[name].results or {}).items())
    return found


def _environments(workflow: Workflow, step: Step, run: Run,
                  views: dict[str, StepView]) -> list[tuple[int, dict[str, str]]]:
    """(item, variables) of each task the step makes: one, or one per item of `each`."""
    base = variables(workflow, step, run, views)
    if step.each is None:
        return [(0, _sized(_own(step, base)))]
    if step.each not in base:
        raise StepFailed(f"each: {{{{ {step.each} }}}} is not set by the run or by the "
                         "results of the steps before it")
    items = split_list(base.pop(step.each), step.each)  # each item gets its own, not all
    return [(index, _sized(_own(step, {**base, ITEM: item, ITEM_INDEX: str(index)})))
            for index, item in enumerate(items)]


def _sized(values: dict[str, str]) -> dict[str, str]:
    """`values`, if a process can be started with them: Linux takes a NAME=value of less
    than 128 KiB; blanket takes 1 MiB of them in all (envnames.too_big)."""
    for name, value in values.items():
        problem = too_long(name, value)
        if problem is not None:
            raise StepFailed(f"variable {problem}")
    if (problem := too_big(values)) is not None:
        raise StepFailed(problem)
    return values


def _own(step: Step, base: dict[str, str]) -> dict[str, str]:
    values = dict(base)
    for name, template in step.environment.items():
        try:
            values[name] = render(template, base)
        except KeyError as missing:
            raise StepFailed(f"environment {name}: {{{{ {missing.args[0]} }}}} is not set by "
                             "the run or by the results of the steps before it") from None
    return values


def split_list(text: str, name: str) -> list[str]:
    """A list to fan out over: a JSON array (items that are not strings as JSON), or else
    one item per non-empty line."""
    stripped = text.strip()
    items: list[str]
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except ValueError as bad:
            raise StepFailed(f"each: {name} is not a JSON list ({bad})") from None
        if not isinstance(parsed, list):
            raise StepFailed(f"each: {name} is not a JSON list")
        items = [p if isinstance(p, str) else json.dumps(p) for p in parsed]
    else:
        items = [line.strip() for line in stripped.splitlines() if line.strip()]
    for item in items:
        try:
            check_text(item, f"each: an item of {name}")
        except InvalidInput as bad:
            raise StepFailed(bad.message) from None
    if len(items) > MAX_ITEMS:
        raise StepFailed(f"each: {name} has {len(items)} items; a step fans out over "
                         f"{MAX_ITEMS} at most")
    return items


def task_environment(workflow: Workflow, step: Step, values: dict[str, str],
                     takes: Takes, run: Run) -> dict[str, str]:
    """What a step's task is submitted with: a command step takes every variable; a type
    step its own `environment` (checked as a submission) and the run's variables its type
    takes. Results and ITEM reach a type step only through {{ NAME }} in its environment:
    what a task wrote never overrides another type's default by its name alone."""
    if step.type is None:
        return values
    type_name = workflow.step_type(step)
    given = {name: value for name, value in run.environment.items() if takes(type_name, name)}
    given.update((name, values[name]) for name in step.environment)
    return given
