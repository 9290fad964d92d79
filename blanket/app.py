"""The server's parts wired together: settings, store, catalog, intake, queue, worker
registry, wake-ups.

Everything here can be rebuilt from the config directory and the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from blanket import outputs
from blanket.auth import Tokens
from blanket.catalog import Catalog, LoadedType
from blanket.intake import Intake
from blanket.queue import Queue
from blanket.registry import WorkerRegistry
from blanket.schedule import parse_schedule_file
from blanket.scheduler import CommandTypes
from blanket.settings import Settings
from blanket.store import open_store
from blanket.store.base import Store
from blanket.tasklogs import TaskLogs
from blanket.tasks_view import TasksView
from blanket.tasktype import TaskType
from blanket.wakeups import Wakeups


class CatalogTypes:
    """Intake's and the queue's view of the catalog: the current good version of each type.
    `extra` finds types the catalog does not hold (command schedules' `schedule.NAME`)."""

    def __init__(self, catalog: Catalog,
                 extra: Callable[[str], LoadedType | None] = lambda _name: None):
        self.catalog = catalog
        self.extra = extra
        self._rules: tuple[dict[str, int], dict[str, str]] | None = None
        self._generation = 0
        catalog.add_listener(self.forget)

    def forget(self) -> None:
        """The catalog changed: claim rules are worked out again on the next claim."""
        self._generation += 1
        self._rules = None

    def _claim_rules(self) -> tuple[dict[str, int], dict[str, str]]:
        rules = self._rules
        if rules is None:
            generation = self._generation
            loaded = [t for t in self.catalog.types() if t.task_type is not None]
            rules = ({t.name: t.task_type.max_concurrent for t in loaded
                      if t.task_type.max_concurrent is not None},
                     {t.name: t.version for t in loaded if t.version is not None})
            if generation == self._generation:  # not computed from a catalog that changed since
                self._rules = rules
        return rules

    def limits(self) -> dict[str, int]:
        """max_concurrent of each capped type (cached until the catalog changes)."""
        return self._claim_rules()[0]

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


@dataclass
class Services:
    """The server's parts; the API's routes call these, never the store."""

    settings: Settings
    store: Store
    catalog: Catalog
    intake: Intake
    queue: Queue
    wakeups: Wakeups
    tokens: Tokens
    registry: WorkerRegistry
    tasks: TasksView
    logs: TaskLogs
    started: float = field(default_factory=time.time)

    @property
    def versions_dir(self) -> Path:
        return self.settings.data_dir / "versions"

    @cached_property
    def server_id(self) -> str:
        """The data directory's id (blanket.outputs): tells workers whether they share it."""
        return outputs.server_id(self.settings.data_dir)


def build_services(settings: Settings, schedule_parser=None) -> Services:
    """Open the store, load the catalog, and connect the parts (no threads started)."""
    # The data dir holds the store (with secret variables) and the admin token: owner only.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = open_store(settings.database_url)
    wakeups = Wakeups()
    store.on_change = wakeups.notify
    catalog = Catalog(settings.config_dir, settings.data_dir / "versions",
                      record_version=store.record_version,
                      schedule_parser=schedule_parser or parse_schedule_file)
    catalog.scan()
    catalog.add_listener(wakeups.notify)
    commands = CommandTypes(catalog, settings.data_dir / "versions", store.record_version)
    types = CatalogTypes(catalog, commands.get)
    intake = Intake(store, types, settings.data_dir)
    queue = Queue(store, types.current, types.limits, types.versions, task_dir=intake.task_dir)
    registry = WorkerRegistry(store, queue, wakeups, settings.lost_after)
    return Services(settings, store, catalog, intake, queue, wakeups, Tokens(store), registry,
                    TasksView(store), TaskLogs(intake.task_dir))
