"""The server's parts wired together: settings, store, catalog, intake, queue, worker
registry, wake-ups, metrics.

Everything here can be rebuilt from the config directory and the store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from blanket import outputs
from blanket.config.schedule import parse_schedule_file
from blanket.config.settings import Settings
from blanket.server.catalog import Catalog
from blanket.server.currenttypes import CatalogTypes, CommandTypes, StepTypes
from blanket.server.deliveries import Deliveries
from blanket.server.intake import Intake
from blanket.server.metrics import Metrics, StateReaders
from blanket.server.notifyrules import NotifyRules
from blanket.server.queue import Queue
from blanket.server.registry import WorkerRegistry
from blanket.server.retention import RetentionRules
from blanket.server.schedulebook import ScheduleBook
from blanket.server.sweeper import Sweeper
from blanket.server.tasklogs import TaskLogs
from blanket.server.tasksview import TasksView
from blanket.server.tokens import Tokens
from blanket.server.waiting import WaitReasons, running_count
from blanket.server.workflows import Workflows
from blanket.store import open_store
from blanket.store.base import Store
from blanket.taskdir import DataDir
from blanket.wakeups import Wakeups


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
    schedules: ScheduleBook
    waiting: WaitReasons
    retention: Sweeper
    deliveries: Deliveries
    workflows: Workflows
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)

    @property
    def versions_dir(self) -> Path:
        return DataDir(self.settings.data_dir).versions

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
    metrics = Metrics()
    store.on_commit = metrics.store_commit
    store.on_skipped = metrics.skipped
    store.on_checkpoint = metrics.store_checkpoint
    catalog = Catalog(settings.config_dir, DataDir(settings.data_dir).versions,
                      record_version=store.record_version,
                      schedule_parser=schedule_parser or parse_schedule_file)
    catalog.scan()
    commands = CommandTypes(catalog, DataDir(settings.data_dir).versions, store.record_version)
    steps = StepTypes(catalog, DataDir(settings.data_dir).versions, store.record_version)
    types = CatalogTypes(catalog, lambda name: commands.get(name) or steps.get(name))
    # after CatalogTypes' own listener: a woken claim reads the new limits and versions
    catalog.add_listener(wakeups.notify)
    intake = Intake(store, types, settings.data_dir, metrics=metrics)
    queue = Queue(store, types.current, types.limits, types.versions, task_dir=intake.task_dir,
                  metrics=metrics)
    registry = WorkerRegistry(store, queue, wakeups, settings.lost_after)
    tasks = TasksView(store)
    waiting = WaitReasons(registry.listed, types.limits, running_count(tasks.count),
                          ahead=tasks.queued_ahead, held=types.held)
    metrics.read_state(StateReaders(tasks.count_by_state, tasks.queued_by_type,
                                    registry.count_by_state, lambda: len(catalog.problems())))
    rules = NotifyRules(catalog, settings.notify)
    store.notify_targets = rules.targets
    deliveries = Deliveries(store, wakeups, rules, intake.task_dir, _task_link(settings),
                            metrics=metrics)
    sweeper = Sweeper(store, lambda: retention_rules(settings, catalog), types.current_versions,
                      catalog.holding, intake.task_dir, queue.remove_folder,
                      DataDir(settings.data_dir).versions)
    workflows = Workflows(store, catalog, intake, queue, wakeups, types.current_type,
                          intake.task_dir)
    return Services(settings, store, catalog, intake, queue, wakeups, Tokens(store), registry,
                    tasks, TaskLogs(intake.task_dir),
                    ScheduleBook(store, catalog, intake, workflows),
                    waiting, sweeper, deliveries, workflows, metrics)


def _task_link(settings: Settings):
    """A task's page on the server's URL (None when that is a unix socket)."""
    base = settings.url
    if not base.startswith(("http://", "https://")):
        return lambda task_id: None
    return lambda task_id: f"{base}/#/task/{task_id}"


def retention_rules(settings: Settings, catalog: Catalog) -> RetentionRules:
    """The retention rules in force: the settings', each type file's, each schedule file's."""
    return RetentionRules.of(
        settings.keep_finished, settings.keep_failed, settings.keep_per_type,
        [(t.name, t.task_type) for t in catalog.types() if t.task_type is not None],
        [(s.name, s.schedule) for s in catalog.schedules() if s.schedule is not None])
