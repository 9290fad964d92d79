"""Every metric the server exports at `/metrics`, in a registry of its own (never the global
default one: tests, and several servers in one process, stay apart). The rest of the server
calls the small verbs below where the event happens; figures that are state (tasks by state,
queued by type, workers by state, config problems) are read when Prometheus scrapes.

Label values are bounded: task types and schedule names come from the catalog (a request
naming an unknown type is refused before anything counts it), HTTP routes are Bottle's route
templates (`/task/<task_id>`, never the path asked for), methods and kinds are from fixed
lists."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from blanket.models import FINAL_STATES, Task, TaskState

# The `_created` series would double what every counter and histogram exports, and no
# dashboard here reads them.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4
NOTIFICATION_KINDS = ("webhook", "command")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNROUTED = "unrouted"  # the route label of a request no route took (404, or refused before)

# Seconds. Queue waits and runs go from milliseconds (a backlog of echo tasks) to a day.
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400)
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60)
COMMIT_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class StateReaders:
    """Where the scrape-time gauges come from (each a call into a service)."""

    def __init__(self, tasks_by_state: Callable[[], Mapping[TaskState, int]],
                 queued_by_type: Callable[[], Mapping[str, int]],
                 workers_by_state: Callable[[], Mapping[str, int]],
                 config_problems: Callable[[], int]):
        self.tasks_by_state = tasks_by_state
        self.queued_by_type = queued_by_type
        self.workers_by_state = workers_by_state
        self.config_problems = config_problems


class _StateCollector(Collector):
    """The gauges that are state, read from the store and the registry at each scrape."""

    def __init__(self, readers: StateReaders):
        self.readers = readers

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        r = self.readers
        return list(self._families(r.tasks_by_state(), r.queued_by_type(),
                                   r.workers_by_state(), r.config_problems()))

    @staticmethod
    def _families(tasks: Mapping[TaskState, int] | None = None,
                  queued: Mapping[str, int] | None = None,
                  workers: Mapping[str, int] | None = None,
                  problems: int | None = None) -> Iterator[Metric]:
        family = GaugeMetricFamily("blanket_tasks", "Tasks in the store by state.",
                                   labels=["state"])
        for state, count in (tasks or {}).items():
            family.add_metric([state.value], count)
        yield family
        family = GaugeMetricFamily("blanket_tasks_queued", "Queued tasks by type.",
                                   labels=["type"])
        for type_name, count in sorted((queued or {}).items()):
            family.add_metric([type_name], count)
        yield family
        family = GaugeMetricFamily(
            "blanket_workers", "Registered workers by state as shown (idle, busy, paused, "
            "stopping, gone, lost when silent).", labels=["state"])
        for state, count in sorted((workers or {}).items()):
            family.add_metric([state], count)
        yield family
        yield GaugeMetricFamily("blanket_config_problems", "Problems in the config directory.",
                                value=problems or 0)


class Metrics:
    """The server's metrics and the verbs that move them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._submitted = Counter(
            "blanket_tasks_submitted", "Tasks created, by type.", ["type"], registry=r)
        self._finished = Counter(
            "blanket_tasks_finished", "Tasks that reached a final state, by type and state.",
            ["type", "state"], registry=r)
        self._attempts = Counter(
            "blanket_attempts_ended", "Attempts that ended, by type and how (LOST: its worker "
            "died); a retried attempt counts here, its task only once it is final.",
            ["type", "state"], registry=r)
        self._wait = Histogram(
            "blanket_task_queue_wait_seconds", "From when a task could run (added, its "
            "not_before, its retry time) to its claim by a worker, by type.", ["type"],
            buckets=WAIT_BUCKETS, registry=r)
        self._run = Histogram(
            "blanket_task_run_seconds", "How long an attempt ran, from its start to its end, "
            "by type.", ["type"], buckets=RUN_BUCKETS, registry=r)
        self._lateness = Histogram(
            "blanket_schedule_lateness_seconds", "How long after its planned time a schedule's "
            "run was submitted, by schedule.", ["schedule"], buckets=LATENESS_BUCKETS,
            registry=r)
        self._delivered = Counter(
            "blanket_notifications_delivered", "Notifications delivered, by kind.", ["kind"],
            registry=r)
        self._undelivered = Counter(
            "blanket_notification_failures", "Notifications that could not be delivered, by "
            "kind.", ["kind"], registry=r)
        self._requests = Counter(
            "blanket_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=r)
        self._latency = Histogram(
            "blanket_http_request_seconds", "Time to answer an HTTP request (its body sent), "
            "by method and route template.", ["method", "route"], buckets=HTTP_BUCKETS,
            registry=r)
        self._commits = Histogram(
            "blanket_store_commit_seconds", "Time a store write takes to commit (and, when "
            "durable, to reach the disk).", ["durable"], buckets=COMMIT_BUCKETS, registry=r)
        self._checkpoints = Histogram(
            "blanket_store_checkpoint_seconds", "Time a WAL checkpoint of the SQLite store "
            "takes: passive (off the store's lock), finish or restart (under it).", ["kind"],
            buckets=COMMIT_BUCKETS, registry=r)
        self._checkpoint_kinds = {kind: self._checkpoints.labels(kind)  # shown at 0
                                  for kind in ("passive", "finish", "restart")}
        self._children: dict[tuple, Any] = {}  # label values are bounded: so is this
        self._durable = {True: self._commits.labels("true"), False: self._commits.labels("false")}
        for kind in NOTIFICATION_KINDS:  # shown at 0 before the first one
            self._delivered.labels(kind)
            self._undelivered.labels(kind)

    # ------------------------------------------------------------------ tasks

    def submitted(self, tasks: Iterable[Task]) -> None:
        """New tasks stored by intake."""
        for task in tasks:
            self._of(self._submitted, task.type).inc()

    def claimed(self, task: Task) -> None:
        """A worker took the task: its wait in the queue ends."""
        if task.claimed is None:
            return
        runnable = max(task.added, task.not_before or task.added)
        self._of(self._wait, task.type).observe(max(0.0, task.claimed - runnable))

    def attempt_ended(self, task: Task) -> None:
        """An attempt ended (`task` as it is just after, its last attempt the one that
        ended); counts the task too when it is final."""
        attempt = task.attempts[-1] if task.attempts else None
        if attempt is not None:
            self._of(self._attempts, task.type, attempt.get("state") or task.state.value).inc()
            started, finished = attempt.get("started"), attempt.get("finished")
            if started is not None and finished is not None:
                self._of(self._run, task.type).observe(max(0.0, finished - started))
        if task.state in FINAL_STATES:
            self._of(self._finished, task.type, task.state.value).inc()

    def ended_unrun(self, task: Task) -> None:
        """A task ended without an attempt ending (stopped while queued, its type gone)."""
        if task.state in FINAL_STATES:
            self._finished.labels(task.type, task.state.value).inc()

    # ------------------------------------------------------------- schedules

    def schedule_fired(self, schedule: str, planned: float, submitted: float) -> None:
        """A schedule's run for `planned` was submitted at `submitted`."""
        self._lateness.labels(schedule).observe(max(0.0, submitted - planned))

    # ---------------------------------------------------------- notifications

    def notification_delivered(self, kind: str) -> None:
        self._delivered.labels(_kind(kind)).inc()

    def notification_failed(self, kind: str) -> None:
        self._undelivered.labels(_kind(kind)).inc()

    # ------------------------------------------------------------ HTTP, store

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered. `route` must be a route template or UNROUTED."""
        method = method if method in HTTP_METHODS else "other"
        self._of(self._requests, method, route, status).inc()
        self._of(self._latency, method, route).observe(seconds)

    def skipped(self, types: list[str]) -> None:
        """Tasks skipped inside the store (one they waited for did not succeed): final
        without an attempt."""
        for type_name in types:
            self._of(self._finished, type_name, TaskState.SKIPPED.value).inc()

    def store_commit(self, seconds: float, durable: bool) -> None:
        self._durable[durable].observe(seconds)

    def store_checkpoint(self, seconds: float, kind: str) -> None:
        self._checkpoint_kinds[kind].observe(seconds)

    def _of(self, metric: Counter | Histogram, *values: object) -> Any:
        """The child of `metric` for these label values, kept: `labels()` takes a lock and
        checks its values each time, and the end of every task comes here."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # -------------------------------------------------------------- scraping

    def read_state(self, readers: StateReaders) -> None:
        """Read the state gauges through `readers` at each scrape (once per Metrics)."""
        self.registry.register(_StateCollector(readers))

    def exposition(self) -> bytes:
        """Everything, in Prometheus' text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every series name this server can export (a histogram's `_bucket`, `_sum` and
        `_count`, a counter's `_total`)."""
        own = (self._submitted, self._finished, self._attempts, self._wait, self._run,
               self._lateness, self._delivered, self._undelivered, self._requests,
               self._latency, self._commits, self._checkpoints)
        families = [*(f for metric in own for f in metric.describe()),
                    *_StateCollector._families()]
        return {name for family in families for name in _series_names(family)}


def _series_names(family: Metric) -> set[str]:
    if family.type == "counter":
        return {family.name + "_total"}
    if family.type == "histogram":
        return {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return {family.name}


def _kind(kind: str) -> str:
    if kind not in NOTIFICATION_KINDS:
        raise ValueError(f"notification kind {kind!r}: use one of {', '.join(NOTIFICATION_KINDS)}")
    return kind
