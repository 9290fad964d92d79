"""The rules of the server's metrics: what each verb counts, where the queue and intake call
them (retries, lost workers, stops, a type gone), bounded labels, a registry per server, and
the HTTP meter's route templates."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import bottle
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blanket.config.tasktype import TaskType
from blanket.errors import DuplicateTask, InvalidInput, ItemsRefused
from blanket.models import Task, TaskState
from blanket.server.api.meter import RequestMeter
from blanket.server.intake import Intake, TaskRequest
from blanket.server.metrics import UNROUTED, Metrics, StateReaders
from blanket.server.queue import AttemptEnd, Queue
from blanket.store.base import NewTask
from blanket.store.sqlite import SQLiteStore

ECHO = TaskType(name="echo", command="echo hi")
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "examples" / "grafana" / "blanket-dashboard.json"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def task(**fields) -> Task:
    values = {"id": 1, "type": "echo", "state": TaskState.QUEUED, "environment": {},
              "tags": (), "score": 1.0, "added": 100.0, **fields}
    return Task(**values)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    store = SQLiteStore(tmp_path / "b.db")
    return Queue(store, lambda name: (ECHO, "v" * 64) if name == "echo" else None,
                 dict, lambda: {"echo": "v" * 64},
                 task_dir=lambda type_name, task_id: tmp_path / type_name / str(task_id),
                 metrics=Metrics())


def add(queue: Queue, type_name: str = "echo", retries: int = 0, added: float = 1.0,
        not_before: float | None = None) -> int:
    return queue.store.add_task(NewTask(type=type_name, environment={}, tags=(), score=10.0,
                                        added=added, retries=retries,
                                        not_before=not_before)).id


def test_the_queue_wait_runs_from_when_a_task_could_run_to_its_claim():
    metrics = Metrics()
    metrics.claimed(task(claimed=130.0))  # added at 100
    metrics.claimed(task(claimed=130.0, not_before=125.0))
    metrics.claimed(task(claimed=130.0, not_before=50.0))  # a not_before already past
    assert sample(metrics, "blanket_task_queue_wait_seconds_count", type="echo") == 3
    assert sample(metrics, "blanket_task_queue_wait_seconds_sum", type="echo") == 30 + 5 + 30
    assert sample(metrics, "blanket_task_queue_wait_seconds_bucket", type="echo",
                  le="5.0") == 1


def test_a_retried_attempt_counts_as_an_attempt_and_a_run_but_not_as_a_finished_task(
        queue: Queue):
    task_id = add(queue, retries=1)
    claimed, _ = queue.claim_once("w", frozenset())
    queue.report_started(task_id, claimed.token, 1, None, at=claimed.claimed)
    again, _ = queue.finish_and_claim(task_id, claimed.token, TaskState.FAILED, 1, "boom")
    assert again.state is TaskState.QUEUED
    m = queue.metrics
    assert sample(m, "blanket_attempts_ended_total", type="echo", state="FAILED") == 1
    assert sample(m, "blanket_task_run_seconds_count", type="echo") == 1
    assert sample(m, "blanket_tasks_finished_total", type="echo", state="FAILED") == 0
    second, _ = queue.claim_once("w", frozenset())
    ended, _ = queue.finish_and_claim(task_id, second.token, TaskState.FAILED, 1, "boom")
    assert ended.state is TaskState.FAILED
    assert sample(m, "blanket_attempts_ended_total", type="echo", state="FAILED") == 2
    assert sample(m, "blanket_tasks_finished_total", type="echo", state="FAILED") == 1
    # The second attempt never reported a start: it counts no run time.
    assert sample(m, "blanket_task_run_seconds_count", type="echo") == 1
    assert sample(m, "blanket_task_queue_wait_seconds_count", type="echo") == 2


def test_a_batch_of_end_reports_counts_each_and_its_claims(queue: Queue):
    for _ in range(3):
        add(queue)
    held = [queue.claim_once(f"w{n}", frozenset())[0] for n in range(2)]
    answers = queue.end_attempts([
        AttemptEnd(held[0].id, held[0].token, TaskState.SUCCESS),
        AttemptEnd(held[1].id, "stale", TaskState.SUCCESS),  # refused: counts nothing
    ])
    assert isinstance(answers[0][0], Task) and not isinstance(answers[1][0], Task)
    m = queue.metrics
    assert sample(m, "blanket_tasks_finished_total", type="echo", state="SUCCESS") == 1
    assert sample(m, "blanket_attempts_ended_total", type="echo", state="SUCCESS") == 1
    assert sample(m, "blanket_task_queue_wait_seconds_count", type="echo") == 2


def test_a_lost_worker_counts_a_lost_attempt_and_then_a_failed_task(queue: Queue):
    add(queue)
    claimed, _ = queue.claim_once("w", frozenset())
    queue.report_started(claimed.id, claimed.token, 1, None)
    [lost] = queue.reap_lost_tasks(lost_after=10, now=claimed.claimed + 60)
    assert lost.state is TaskState.FAILED
    m = queue.metrics
    assert sample(m, "blanket_attempts_ended_total", type="echo", state="LOST") == 1
    assert sample(m, "blanket_tasks_finished_total", type="echo", state="FAILED") == 1


def test_a_task_stopped_while_queued_ends_stopped_without_an_attempt(queue: Queue):
    task_id = add(queue)
    assert queue.stop_task(task_id, by="me").state is TaskState.STOPPED
    m = queue.metrics
    assert sample(m, "blanket_tasks_finished_total", type="echo", state="STOPPED") == 1
    assert sample(m, "blanket_attempts_ended_total", type="echo", state="STOPPED") == 0


def test_a_claimed_task_whose_type_is_gone_ends_failed(queue: Queue):
    add(queue, type_name="gone")
    assert queue.claim_once("w", frozenset()) is None
    assert sample(queue.metrics, "blanket_tasks_finished_total", type="gone",
                  state="FAILED") == 1


class OneType:
    def current_type(self, name: str) -> TaskType | None:
        return ECHO if name == "echo" else None

    def type_names(self) -> list[str]:
        return ["echo"]

    def base_names(self) -> list[str]:
        return []


def test_intake_counts_new_tasks_only(tmp_path: Path):
    intake = Intake(SQLiteStore(tmp_path / "b.db"), OneType(), tmp_path, metrics=Metrics())
    intake.submit(TaskRequest(type="echo", environment={}))
    with pytest.raises(InvalidInput):
        intake.submit(TaskRequest(type="nope", environment={}))  # never a label
    intake.submit(TaskRequest(type="echo", environment={}, dedupe_key="k"))
    with pytest.raises(DuplicateTask):
        intake.submit(TaskRequest(type="echo", environment={}, dedupe_key="k"))
    with pytest.raises(ItemsRefused):
        intake.submit_all([TaskRequest(type="echo", environment={}),
                           TaskRequest(type="nope", environment={})])
    intake.submit_many([TaskRequest(type="echo", environment={}, dedupe_key="k"),
                        TaskRequest(type="echo", environment={}, dedupe_key="m"),
                        TaskRequest(type="nope", environment={})])
    assert sample(intake.metrics, "blanket_tasks_submitted_total", type="echo") == 3
    assert sample(intake.metrics, "blanket_tasks_submitted_total", type="nope") == 0


def test_two_servers_in_one_process_keep_their_own_figures():
    one, two = Metrics(), Metrics()
    one.submitted([task()])
    assert sample(one, "blanket_tasks_submitted_total", type="echo") == 1
    assert sample(two, "blanket_tasks_submitted_total", type="echo") == 0


def test_labels_from_outside_are_bounded():
    metrics = Metrics()
    metrics.request("BREW", "/task/<task_id>", 405, 0.01)
    assert sample(metrics, "blanket_http_requests_total", method="other",
                  route="/task/<task_id>", status="405") == 1
    metrics.notification_delivered("webhook")
    metrics.notification_failed("command")
    assert sample(metrics, "blanket_notifications_delivered_total", kind="webhook") == 1
    assert sample(metrics, "blanket_notification_failures_total", kind="command") == 1
    with pytest.raises(ValueError, match="webhook, command"):
        metrics.notification_failed("carrier pigeon")


def exercised() -> Metrics:
    """A Metrics with every series holding a sample."""
    metrics = Metrics()
    metrics.read_state(StateReaders(lambda: {TaskState.QUEUED: 2}, lambda: {"echo": 2},
                                    lambda: {"idle": 1}, lambda: 3))
    metrics.submitted([task()])
    metrics.claimed(task(claimed=101.0))
    metrics.attempt_ended(task(state=TaskState.SUCCESS, attempts=(
        {"state": "SUCCESS", "started": 101.0, "finished": 102.0},)))
    metrics.schedule_fired("nightly", 100.0, 100.5)
    metrics.notification_delivered("webhook")
    metrics.notification_failed("webhook")
    metrics.request("GET", "/health", 200, 0.001)
    metrics.store_commit(0.001, True)
    return metrics


def exported(metrics: Metrics) -> dict[str, set[str]]:
    """Each series name in the exposition, with its label names."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            found.setdefault(s.name, set()).update(s.labels)
    return found


def test_names_lists_exactly_the_series_exported():
    metrics = exercised()
    shown = exported(metrics)
    assert set(shown) == metrics.names()
    assert shown["blanket_tasks"] == {"state"}
    assert shown["blanket_config_problems"] == set()
    assert sample(metrics, "blanket_tasks_queued", type="echo") == 2


def test_the_grafana_dashboard_asks_only_for_what_the_server_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    labels = exported(exercised())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used: set[str] = set()
    for expr in exprs:
        names = re.findall(r"\bblanket_\w+", expr)
        assert names, f"an expression names no blanket series: {expr}"
        for name in names:
            assert name in labels, f"the dashboard asks for {name}, which is not exported"
        used.update(names)
        for name, selector in re.findall(r"\b(blanket_\w+)\{([^}]*)\}", expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in labels[name] | {"le"}, f"{name} has no label {label}"
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in grouping.split(",")):
                assert any(label in labels[n] for n in names), f"no series has {label}: {expr}"
    # The questions it answers: throughput by state, queue wait, run time, backlog, workers,
    # HTTP latency and failures.
    assert {"blanket_tasks_finished_total", "blanket_task_queue_wait_seconds_bucket",
            "blanket_task_run_seconds_bucket", "blanket_tasks_queued", "blanket_workers",
            "blanket_http_request_seconds_bucket", "blanket_attempts_ended_total"} <= used


# ---------------------------------------------------------------- the HTTP meter

def metered_app(metrics: Metrics) -> RequestMeter:
    app = bottle.Bottle()
    app.route("/task/<task_id>", "GET", lambda task_id: "a task")
    app.route("/boom", "GET", lambda: 1 / 0)

    def refusing(environ, start_response):  # a middleware refusing before any route
        if environ["PATH_INFO"] == "/refused":
            start_response("413 Payload Too Large", [("Content-Type", "text/plain")])
            return [b"too large"]
        if environ["PATH_INFO"] == "/crash":
            raise RuntimeError("a middleware failed")
        return app(environ, start_response)

    return RequestMeter(refusing, metrics)


def environ(path: str, method: str = "GET") -> dict:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "x",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO()}


def call(app: RequestMeter, path: str, method: str = "GET") -> tuple[str, bytes]:
    seen = []
    body = app(environ(path, method), lambda status, headers, exc_info=None: seen.append(status))
    try:
        data = b"".join(body)
    finally:
        body.close()
    return seen[0], data


def test_requests_are_counted_by_route_template_and_status():
    metrics = Metrics()
    app = metered_app(metrics)
    for task_id in ("1", "2", "12345"):
        assert call(app, f"/task/{task_id}")[0].startswith("200")
    call(app, "/no/such/path")
    call(app, "/refused", "POST")
    call(app, "/boom")
    with pytest.raises(RuntimeError):
        call(app, "/crash")
    requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                for family in text_string_to_metric_families(metrics.exposition().decode())
                for s in family.samples if s.name == "blanket_http_requests_total"}
    assert requests == {("GET", "/task/<task_id>", "200"): 3, ("GET", UNROUTED, "404"): 1,
                        ("POST", UNROUTED, "413"): 1, ("GET", "/boom", "500"): 1,
                        ("GET", UNROUTED, "500"): 1}
    assert sample(metrics, "blanket_http_request_seconds_count", method="GET",
                  route="/task/<task_id>") == 3


def test_a_request_is_timed_until_its_answer_is_closed():
    metrics = Metrics()
    app = metered_app(metrics)
    body = app(environ("/task/1"), lambda status, headers, exc_info=None: None)
    list(body)
    assert sample(metrics, "blanket_http_request_seconds_count", method="GET",
                  route="/task/<task_id>") == 0
    body.close()
    assert sample(metrics, "blanket_http_request_seconds_count", method="GET",
                  route="/task/<task_id>") == 1
