"""Workflow files: conf.d/workflows/NAME.toml, named steps that run in order of their `after`.

```toml
description = "fetch, transform, publish"
required = ["DAY"]                 # a run must give these
[environment]                      # the run's other variables, with their defaults
SOURCE = "https://example.org"

[steps.fetch]
type = "fetch"                     # a task type ...
environment = { URL = "{{ SOURCE }}/{{ DAY }}" }

[steps.convert]
command = "convert {{ FILE }}"     # ... or a command of its own (run as `workflow.NAME.STEP`)
after = ["fetch"]
each = "{{ FILES }}"               # one task per item of FILES (a JSON list, or one per line)
environment = { FILE = "{{ ITEM }}" }

[steps.publish]
type = "publish"
after = ["convert"]                # waits for every item
```

A step's variables are the run's, then the results of the steps before it (the JSON object a
step writes to its `results` file, `results.json` by default, read when it succeeds; a fanned
step's results are lists, one value per item), then ITEM and ITEM_INDEX for a fanned step,
then its own `environment`, whose values may refer to any of these as `{{ NAME }}`.

A command step gets them all; a type step gets those its type declares or allows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from blanket.config.checker import (
    Checker,
    Line,
    header_line,
    key_line,
    parse_toml,
)
from blanket.config.problems import ConfigProblem, read_config_text
from blanket.config.tasktype import TYPE_NAME
from blanket.envnames import loader_name
from blanket.models import MAX_PRIORITY

STEP_TYPE_PREFIX = "workflow."  # a command step runs as the type `workflow.NAME.STEP`
STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
ITEM, ITEM_INDEX = "ITEM", "ITEM_INDEX"  # what a fanned step's task knows of its item
DEFAULT_RESULTS = "results.json"
MAX_STEPS = 200
MAX_ITEMS = 10_000  # tasks one fanned step may make
KEYS = ("description", "environment", "required", "steps")
STEP_KEYS = ("type", "command", "executor", "tags", "environment", "after", "each", "results",
             "priority", "timeout", "retries", "description")
EXECUTORS = ("bash", "sh", "python")


@dataclass(frozen=True)
class Step:
    """One step. `each` is the variable it fans out over; `environment` holds templates."""

    name: str
    type: str | None = None
    command: str | None = None
    executor: str = "bash"
    tags: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    each: str | None = None
    # The JSON file its tasks leave for the steps after it; None (`results = false`): none.
    # Named in the file, it must be there; by default a missing one sets nothing.
    results: str | None = DEFAULT_RESULTS
    results_named: bool = False
    priority: int = 0
    timeout: float | None = None
    retries: int | None = None
    description: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "command": self.command,
                "executor": self.executor if self.command else None, "tags": list(self.tags),
                "environment": dict(self.environment), "after": list(self.after),
                "each": self.each, "results": self.results, "priority": self.priority,
                "timeout": self.timeout, "retries": self.retries,
                "description": self.description}


@dataclass(frozen=True)
class Workflow:
    """A validated workflow: its steps in an order where each comes after those it waits for."""

    name: str
    steps: tuple[Step, ...]
    environment: dict[str, str] = field(default_factory=dict)  # the run's variables' defaults
    required: tuple[str, ...] = ()  # variables a run must give
    description: str = ""
    version: str = ""  # the hash of its file's bytes
    text: str = ""  # the file, as a run keeps it

    def step(self, name: str) -> Step | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, Step]:
        return {s.name: s for s in self.steps}

    @cached_property
    def order(self) -> tuple[Step, ...]:
        """The steps so that each comes after those it waits for (file order among equals),
        worked out once."""
        return tuple(_ordered(self.steps))

    @cached_property
    def ancestors(self) -> dict[str, tuple[str, ...]]:
        """For each step, every step it comes after, directly or not, in `order`."""
        position = {s.name: n for n, s in enumerate(self.order)}
        found: dict[str, set[str]] = {}
        for step in self.order:
            found[step.name] = set(step.after).union(*(found[a] for a in step.after))
        return {name: tuple(sorted(names, key=position.__getitem__))
                for name, names in found.items()}

    def step_type(self, step: Step) -> str:
        """The task type a step's tasks have."""
        return step.type or command_type_name(self.name, step.name)

    @property
    def variables(self) -> frozenset[str]:
        """The names a run may set."""
        return frozenset(self.environment) | frozenset(self.required)

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "version": self.version,
                "environment": dict(self.environment), "required": list(self.required),
                "steps": [s.to_json() for s in self.steps]}


def command_type_name(workflow: str, step: str) -> str:
    return f"{STEP_TYPE_PREFIX}{workflow}.{step}"


def workflow_version(name: str, text: str) -> str:
    """A workflow's version: a hash of its name (its command steps' types carry it) and its
    file's bytes."""
    return hashlib.sha256(f"blanket-workflow-version 1\0{name}\0{text}".encode()).hexdigest()


def parse_workflow_file(path: Path, name: str) -> Workflow:
    """Read and validate one workflow file; ConfigInvalid lists every problem."""
    return parse_workflow_text(read_config_text(path), name, str(path))


def parse_workflow_text(text: str, name: str, file: str) -> Workflow:
    """Validate workflow TOML `text` (from `file`, for messages); raise ConfigInvalid."""
    checker = _WorkflowChecker(file, text)
    if not TYPE_NAME.fullmatch(name) or "." in name:
        checker.problem(None, f"{name!r} is not a workflow name: name the file with letters, "
                              "digits, '_' and '-' (such as nightly-report.toml)")
    workflow = checker.build(parse_toml(text, file), name)
    return checker.finish(workflow)


def references(template: str) -> list[str]:
    """The variable names `template` refers to as {{ NAME }}."""
    return REFERENCE.findall(template)


def render(template: str, variables: dict[str, str]) -> str:
    """`template` with each {{ NAME }} replaced by its value; KeyError names a missing one."""
    return REFERENCE.sub(lambda m: variables[m.group(1)], template)


class _WorkflowChecker(Checker):
    def build(self, data: dict, name: str) -> Workflow | None:
        self.unknown_keys(data, KEYS)
        description = self.optional_string(data, "description", self.top_line("description"))
        environment = self.defaults(data.get("environment", {}))
        required = self.required(data.get("required", []))
        steps = self.steps(data.get("steps"))
        if self.problems:
            return None
        return Workflow(name=name, steps=tuple(steps), environment=environment,
                        required=required, description=description or "",
                        version=workflow_version(name, self.text), text=self.text)

    def optional_string(self, data: dict, key: str, line: Line) -> str | None:
        if key not in data:
            return None
        return self.string(key, data[key], line)

    def defaults(self, table: object) -> dict[str, str]:
        line = self.top_line("environment")
        if not isinstance(table, dict):
            self.wrong_type("environment", "a table of NAME = \"default\"", table, line)
            return {}
        values: dict[str, str] = {}
        for key, value in table.items():
            where = self.env_line(key) or line
            if self.variable_name(f"environment.{key}", key, where):
                text = self.environment_value(f"environment.{key}", value, where)
                if text is not None:
                    values[key] = text
        return values

    def env_line(self, key: str) -> Line:
        header = header_line(self.text, "environment")
        return key_line(self.text, key, header) if header else None

    def variable_name(self, what: str, name: str, line: Line) -> bool:
        if not self.environment_name(what, name, line):
            return False
        if loader_name(name):
            self.problem(line, f"{what}: {name} is read by shells, the loader or interpreters "
                               "to find code; a workflow may not set it")
            return False
        return True

    def required(self, value: object) -> tuple[str, ...]:
        line = self.top_line("required")
        names = self.string_list("required", value, line) if value != [] else ()
        if names is None:
            return ()
        return tuple(n for n in names if self.variable_name("required", n, line))

    def steps(self, table: object) -> list[Step]:
        if table is None:
            self.problem(None, "no steps: add at least one [steps.NAME] table with a type or a "
                               "command")
            return []
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            self.problem(self.top_line("steps"), "steps: write each step as a [steps.NAME] "
                                                 "table")
            return []
        if len(table) > MAX_STEPS:
            self.problem(None, f"steps: {len(table)} steps is too many; the most is {MAX_STEPS}")
            return []
        steps = [s for s in (self.step(n, v) for n, v in table.items()) if s is not None]
        if len(steps) == len(table):
            self.check_graph(steps)
        return steps

    def step_lines(self, name: str) -> tuple[Line, Any]:
        """The line of a step's [steps.NAME] header, and a function giving the line of a key
        in it (`environment.KEY`: the variable's own line, else its table's)."""
        header = header_line(self.text, f"steps.{name}") or \
            header_line(self.text, f'steps."{name}"')

        def line(key: str) -> Line:
            if key.startswith("environment."):
                own = key_line(self.text, key.removeprefix("environment."), header) \
                    if header else None
                return own or line("environment")
            return (key_line(self.text, key, header) if header else None) or header
        return header, line

    def step(self, name: str, data: dict) -> Step | None:
        header, line = self.step_lines(name)
        before = len(self.problems)
        if not STEP_NAME.fullmatch(name):
            self.problem(header, f"steps.{name}: a step's name is letters, digits, '_' and "
                                 "'-' (at most 64), starting with a letter or digit")
        where = f"steps.{name}"
        self.unknown_keys(data, STEP_KEYS, f" in [{where}]", line)
        if ("type" in data) == ("command" in data):
            self.problem(header, f"{where}: set exactly one of 'type' (a task type) or "
                                 "'command' (a command of its own)")
        fields: dict[str, Any] = {"name": name}
        if "type" in data:
            type_name = self.string(f"{where}.type", data["type"], line("type"), nonempty=True)
            if type_name is not None and not TYPE_NAME.fullmatch(type_name):
                self.problem(line("type"), f"{where}.type: {type_name!r} is not a type name")
            fields["type"] = type_name
        if "command" in data:
            fields["command"] = self.string(f"{where}.command", data["command"],
                                            line("command"), nonempty=True)
        if "executor" in data:
            if "command" not in data:
                self.problem(line("executor"), f"{where}.executor: only a command step has an "
                                               "executor; a type step runs its type's")
            fields["executor"] = self.choice(f"{where}.executor", data["executor"],
                                             line("executor"), EXECUTORS)
        for key, check in (("tags", self.string_list), ("after", self.string_list)):
            if key in data:
                fields[key] = check(f"{where}.{key}", data[key], line(key))
        if "environment" in data:
            fields["environment"] = self.step_environment(where, data["environment"], line)
        if "each" in data:
            fields["each"] = self.each(where, data["each"], line("each"))
        if "results" in data:
            if data["results"] is False:
                fields["results"] = None
            else:
                fields["results"] = self.results_name(where, data["results"], line("results"))
                fields["results_named"] = True
        if "priority" in data:
            fields["priority"] = self.integer(f"{where}.priority", data["priority"],
                                              line("priority"), -MAX_PRIORITY, MAX_PRIORITY)
        if "timeout" in data:
            fields["timeout"] = self.duration(f"{where}.timeout", data["timeout"],
                                              line("timeout"), least=1.0)
        if "retries" in data:
            fields["retries"] = self.integer(f"{where}.retries", data["retries"],
                                             line("retries"), 0, 1000)
        if "description" in data:
            fields["description"] = self.string(f"{where}.description", data["description"],
                                                line("description"))
        if len(self.problems) > before:
            return None
        return Step(**fields)

    def step_environment(self, where: str, table: object, line: Any) -> dict[str, str]:
        if not isinstance(table, dict):
            self.wrong_type(f"{where}.environment", "a table of NAME = \"value\"", table,
                            line("environment"))
            return {}
        values: dict[str, str] = {}
        for key, value in table.items():
            at = line(f"environment.{key}")
            what = f"{where}.environment.{key}"
            if not self.variable_name(what, key, at):
                continue
            text = self.environment_value(what, value, at)
            if text is not None and self.template(what, text, at):
                values[key] = text
        return values

    def template(self, what: str, text: str, line: Line) -> bool:
        rest = REFERENCE.sub("", text)
        if "{{" in rest or "}}" in rest or "{%" in rest:
            self.problem(line, f"{what}: {text!r}: a value may refer to variables only as "
                               "{{ NAME }} (no expressions or filters)")
            return False
        return True

    def each(self, where: str, value: object, line: Line) -> str | None:
        text = self.string(f"{where}.each", value, line, nonempty=True)
        if text is None:
            return None
        match = REFERENCE.fullmatch(text.strip())
        if match is None:
            self.problem(line, f"{where}.each: {text!r}: name the list to fan out over as "
                               "\"{{ NAME }}\", a variable of the run or a result of an "
                               "earlier step")
            return None
        return match.group(1)

    def results_name(self, where: str, value: object, line: Line) -> str | None:
        if value is True or not isinstance(value, str):
            self.wrong_type(f"{where}.results", 'a file name such as "results.json", or false '
                            "for none", value, line)
            return None
        text = self.string(f"{where}.results", value, line, nonempty=True)
        if text is None:
            return None
        parts = text.split("/")
        if text.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in text:
            self.problem(line, f"{where}.results: {text!r}: name a file inside the task's "
                               "folder, such as \"results.json\" or \"out/results.json\"")
            return None
        return text

    def check_graph(self, steps: list[Step]) -> None:
        names = {s.name for s in steps}
        for step in steps:
            _header, line = self.step_lines(step.name)
            for wanted in step.after:
                if wanted == step.name:
                    self.problem(line("after"), f"steps.{step.name}.after: a step cannot wait "
                                                "for itself")
                elif wanted not in names:
                    known = ", ".join(sorted(names - {step.name})) or "none"
                    self.problem(line("after"), f"steps.{step.name}.after: no step named "
                                                f"{wanted!r}; steps: {known}")
        if self.problems:
            return
        cycle = find_cycle({s.name: s.after for s in steps})
        if cycle:
            _header, line = self.step_lines(cycle[0])
            self.problem(line("after"), "steps wait for each other in a cycle: "
                                        f"{' -> '.join([*cycle, cycle[0]])}; remove one of "
                                        "these 'after' entries")


def find_cycle(after: dict[str, tuple[str, ...]]) -> list[str] | None:
    """Steps that wait for each other in a cycle (each waits for the next), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for wanted in after.get(node, ()):
            if state.get(wanted) == 1:
                return path[path.index(wanted):]
            if wanted not in state:
                found = visit(wanted)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in after:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _ordered(steps: tuple[Step, ...]) -> list[Step]:
    """Kahn's order, in waves: each wave the steps whose `after` all came before, in file
    order. A file with a cycle never gets here (its checker refuses it)."""
    waiting = {s.name: len(set(s.after)) for s in steps}
    followers: dict[str, list[str]] = {}
    for step in steps:
        for wanted in set(step.after):
            followers.setdefault(wanted, []).append(step.name)
    position = {s.name: n for n, s in enumerate(steps)}
    by_name = {s.name: s for s in steps}
    wave = [s.name for s in steps if not waiting[s.name]]
    result: list[Step] = []
    while wave:
        result.extend(by_name[name] for name in wave)
        following = []
        for name in wave:
            for follower in followers.get(name, ()):
                waiting[follower] -= 1
                if not waiting[follower]:
                    following.append(follower)
        wave = sorted(following, key=position.__getitem__)
    return result


def type_problems(workflow: Workflow, file: str, text: str, types: dict[str, Any],
                  abstract: set[str]) -> list[ConfigProblem]:
    """Problems of a workflow against the loaded types (`types`: name -> TaskType): a type
    step naming a type that is missing or abstract, or setting a variable its type does not
    take."""
    problems: list[ConfigProblem] = []
    checker = _WorkflowChecker(file, text)
    known = ", ".join(sorted(types)) or "none yet"
    for step in workflow.steps:
        if step.type is None:
            continue
        _header, line = checker.step_lines(step.name)
        task_type = types.get(step.type)
        if task_type is None:
            why = (f"{step.type!r} is abstract, only a base other types extend" if step.type
                   in abstract else f"no task type named {step.type!r}")
            problems.append(ConfigProblem(file, f"steps.{step.name}.type: {why}; name one of: "
                                                f"{known}", line("type")))
            continue
        for name in step.environment:
            if not task_type.takes(name):
                problems.append(ConfigProblem(
                    file, f"steps.{step.name}.environment.{name}: task type {step.type!r} "
                          "does not take this variable; declare it in the type's "
                          "[environment] or allow it with allow_extra_environment",
                    line(f"environment.{name}")))
    if not problems:
        problems.extend(_secret_problems(workflow, file, checker, types))
    return problems


def secret_names(workflow: Workflow, secrets_of: Callable[[str], frozenset[str]]
                 ) -> frozenset[str]:
    """The variables of a run that hold secrets: those a step's type calls secret, the run
    variables and results fed to them (`PASS = "{{ DB_PASS }}"`), and every variable a
    step's environment makes from one of these (`URL = "https://u:{{ PASS }}@h"`). Their
    values are shown as *** in the run and in every task they reach."""
    found: set[str] = set()
    for step in workflow.steps:
        if step.type is not None:
            found |= secrets_of(step.type)
    while True:
        before = len(found)
        for step in workflow.steps:
            hidden = secrets_of(step.type) if step.type is not None else frozenset()
            for name, template in step.environment.items():
                used = set(references(template))
                if name in hidden or name in found:
                    found |= used
                if used & found:
                    found.add(name)
        if len(found) == before:
            return frozenset(found)


def _secret_problems(workflow: Workflow, file: str, checker: _WorkflowChecker,
                     types: dict[str, Any]) -> list[ConfigProblem]:
    """A workflow file (kept in git, shown to viewers) never holds a secret value: no
    default for a secret variable, no literal value for one, and a secret passed on only to
    a variable its type keeps secret."""
    def secrets_of(name: str) -> frozenset[str]:
        task_type = types.get(name)
        return task_type.secrets if task_type is not None else frozenset()

    hidden = secret_names(workflow, secrets_of)
    problems = [ConfigProblem(file, f"environment.{name}: this variable holds a secret (a type "
                                    "of this workflow keeps it secret): a workflow file may "
                                    "not hold its value; list it in required so that each run "
                                    "gives it", checker.env_line(name) or
                              checker.top_line("environment"))
                for name in workflow.environment if name in hidden]
    for step in workflow.steps:
        if step.type is None:
            continue
        _header, line = checker.step_lines(step.name)
        kept = secrets_of(step.type)
        for name, template in step.environment.items():
            used = sorted(set(references(template)) & hidden)
            if name in kept and not references(template) and template:
                problems.append(ConfigProblem(
                    file, f"steps.{step.name}.environment.{name}: type {step.type!r} keeps "
                          "this variable secret: a workflow file may not hold its value; "
                          f"write {{{{ NAME }}}} and list NAME in required",
                    line(f"environment.{name}")))
            elif used and name not in kept:
                problems.append(ConfigProblem(
                    file, f"steps.{step.name}.environment.{name}: it would hold the secret "
                          f"{{{{ {used[0]} }}}}, but type {step.type!r} does not keep {name} "
                          "secret (it would be shown): pass a secret only to a variable its "
                          "type marks secret = true", line(f"environment.{name}")))
    return problems
