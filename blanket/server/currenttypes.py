"""The current version of every type a task may have, as intake and the queue see it: the
catalog's types, and the synthetic `schedule.NAME` types of schedules that carry their own
`command`."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from blanket.config.bundles import write_bundle
from blanket.config.schedule import Schedule
from blanket.config.tasktype import TaskType
from blanket.config.workflow import STEP_TYPE_PREFIX, secret_names
from blanket.server.catalog import Catalog, LoadedType
from blanket.server.intake import SCHEDULE_PREFIX

COMMAND_TYPE_PREFIX = SCHEDULE_PREFIX  # one spelling, shared with intake
# What a claim needs from the catalog: limits by type, versions by type, the held types.
_Rules = tuple[dict[str, int], dict[str, str], frozenset[str]]


def task_type_of(schedule: Schedule) -> str:
    """The type a schedule's runs have: its `type`, or its synthetic `schedule.NAME` (a
    workflow schedule's runs are workflow runs: see `Schedule.workflow`)."""
    return schedule.type or f"{COMMAND_TYPE_PREFIX}{schedule.name}"


class CatalogTypes:
    """Intake's and the queue's view of the catalog: the current good version of each type.
    `extra` finds types the catalog does not hold (command schedules' `schedule.NAME`)."""

    def __init__(self, catalog: Catalog,
                 extra: Callable[[str], LoadedType | None] = lambda _name: None):
        self.catalog = catalog
        self.extra = extra
        self._rules: _Rules | None = None
        self._generation = 0
        catalog.add_listener(self.forget)

    def forget(self) -> None:
        """The catalog changed: claim rules are worked out again on the next claim."""
        self._generation += 1
        self._rules = None

    def _claim_rules(self) -> _Rules:
        rules = self._rules
        if rules is None:
            generation = self._generation
            everything = self.catalog.types()
            loaded = [t for t in everything if t.task_type is not None]
            # A type whose file has had no good definition since the server started (saved
            # broken while it was down): its queued tasks wait for the file to be fixed,
            # instead of failing as a deleted type's do.
            held = frozenset(t.name for t in everything if t.task_type is None)
            limits = {t.name: t.task_type.max_concurrent for t in loaded
                      if t.task_type.max_concurrent is not None} | dict.fromkeys(held, 0)
            rules = (limits, {t.name: t.version for t in loaded if t.version is not None},
                     held)
            if generation == self._generation:  # not computed from a catalog that changed since
                self._rules = rules
        return rules

    def limits(self) -> dict[str, int]:
        """max_concurrent of each capped type, 0 for each `held` one (cached until the
        catalog changes)."""
        return self._claim_rules()[0]

    def held(self) -> frozenset[str]:
        """The types whose file has had no good definition since the server started: their
        tasks wait (a limit of 0 in `limits`) until it is fixed (cached likewise)."""
        return self._claim_rules()[2]

    def versions(self) -> dict[str, str]:
        """The current version of each type (cached until the catalog changes)."""
        return self._claim_rules()[1]

    def _loaded(self, name: str) -> LoadedType | None:
        return self.catalog.get(name) or self.extra(name)

    def current_type(self, name: str) -> TaskType | None:
        loaded = self._loaded(name)
        return loaded.task_type if loaded else None

    def current(self, name: str) -> tuple[TaskType, str] | None:
        loaded = self._loaded(name)
        if loaded is None or loaded.task_type is None or loaded.version is None:
            return None
        return loaded.task_type, loaded.version

    def type_names(self) -> list[str]:
        return [t.name for t in self.catalog.types() if t.task_type is not None]

    def base_names(self) -> list[str]:
        """The abstract types: only bases others extend, never submitted."""
        return self.catalog.bases()

    def current_versions(self) -> set[str]:
        """The current version of every type: the catalog's, command schedules' and
        workflows' command steps'."""
        found = {t.version for t in self.catalog.types() if t.version is not None}
        for loaded_workflow in self.catalog.workflows():
            workflow = loaded_workflow.workflow
            for step in workflow.steps if workflow is not None else ():
                if step.command is not None:
                    extra = self.extra(workflow.step_type(step))
                    if extra is not None and extra.version is not None:
                        found.add(extra.version)
        for loaded in self.catalog.schedules():
            if loaded.schedule is not None and loaded.schedule.command is not None:
                extra = self.extra(task_type_of(loaded.schedule))
                if extra is not None and extra.version is not None:
                    found.add(extra.version)
        return found


class _SyntheticTypes:
    """Types made from another config file (a schedule's or a workflow step's own command):
    each built once per definition, versioned by a hash of what it came from, bundled with
    its file and recorded like any type, so its runs are traced to the exact definition."""

    def __init__(self, catalog: Catalog, versions_dir: Path,
                 record_version: Callable[[str, str, float], bool] | None = None):
        self.catalog = catalog
        self.versions_dir = Path(versions_dir)
        self.record_version = record_version
        self._built: dict[str, tuple[object, LoadedType]] = {}
        self._lock = threading.Lock()

    def _cached(self, name: str, basis: object, build: Callable[[], LoadedType]) -> LoadedType:
        """The type `name` built from `basis` (built again when the basis changed)."""
        with self._lock:
            built = self._built.get(name)
            if built is None or built[0] != basis:
                built = (basis, build())
                self._built[name] = built
        return built[1]

    def _recorded(self, task_type: TaskType, kind: str, content: bytes, path: Path,
                  toml: bytes, source: str | None = None) -> LoadedType:
        """The type recorded under a version: a hash of `content` and `source` (the name of
        what it came from, which the version is recorded for; the type's own by default).
        Its bundle holds `toml`, the file as it was parsed: the file at `path` may have
        been edited or removed since, and the next scan is what notices that."""
        source = task_type.name if source is None else source
        digest = hashlib.sha256(f"blanket-{kind}-version 1\0{source}\0".encode())
        digest.update(content)
        version = digest.hexdigest()
        write_bundle(self.versions_dir, version, toml, [])
        now = time.time()
        if self.record_version is not None:
            self.record_version(version, source, now)
        return LoadedType(task_type.name, path, task_type, version, now)


class CommandTypes(_SyntheticTypes):
    """Synthetic task types `schedule.NAME` for schedules that carry their own `command`,
    versioned by a hash of the schedule's file."""

    def get(self, type_name: str) -> LoadedType | None:
        """The synthetic type called `type_name`, or None."""
        if not type_name.startswith(COMMAND_TYPE_PREFIX):
            return None
        loaded = self.catalog.schedule(type_name.removeprefix(COMMAND_TYPE_PREFIX))
        if loaded is None or loaded.schedule is None or loaded.schedule.command is None:
            return None
        schedule, path = loaded.schedule, loaded.path
        # Its version is the file's text's, comments too: the text is part of the basis
        # (a Schedule compares without it).
        return self._cached(loaded.name, (schedule, schedule.text),
                            lambda: self._build(schedule, path))

    def _build(self, schedule: Schedule, path: Path) -> LoadedType:
        assert schedule.command is not None
        task_type = TaskType(name=task_type_of(schedule), command=schedule.command,
                             executor=schedule.executor or "bash", tags=schedule.tags,
                             description=schedule.description)
        text = schedule.text.encode()
        return self._recorded(task_type, "schedule", text, path, text)


class StepTypes(_SyntheticTypes):
    """Synthetic task types `workflow.NAME.STEP` for workflow steps that carry their own
    `command`, versioned by the workflow file's bytes and the step's name."""

    def get(self, type_name: str) -> LoadedType | None:
        """The synthetic type called `type_name`, or None."""
        if not type_name.startswith(STEP_TYPE_PREFIX):
            return None
        workflow_name, _, step_name = type_name.removeprefix(STEP_TYPE_PREFIX).rpartition(".")
        loaded = self.catalog.workflow(workflow_name)
        workflow = loaded.workflow if loaded is not None else None
        step = workflow.step(step_name) if workflow is not None else None
        if loaded is None or workflow is None or step is None or step.command is None:
            return None
        # A value some type of the workflow calls secret reaches a command step (it gets
        # every variable): it is secret there too, shown as *** wherever the task is.
        hidden = tuple(sorted(secret_names(workflow, self._secrets_of)))
        task_type = TaskType(name=type_name, command=step.command, executor=step.executor,
                             tags=step.tags, description=step.description,
                             timeout=step.timeout, retries=step.retries or 0,
                             extra_environment=("*",), secret_defaults=hidden)
        # Every command step of one file shares its version (the file's hash): a worker
        # fetches the file's bundle once for all of them. The type's name tells them apart.
        # The secrets are part of the definition a worker caches by version: in the hash too.
        text = workflow.text.encode()
        content = text + b"\0" + ",".join(hidden).encode()
        return self._cached(type_name, (workflow.version, hidden), lambda: self._recorded(
            task_type, "step", content, loaded.path, text, f"workflow.{workflow.name}"))

    def _secrets_of(self, type_name: str) -> frozenset[str]:
        loaded = self.catalog.get(type_name)
        return loaded.task_type.secrets if loaded is not None and loaded.task_type else \
            frozenset()
