"""`/metrics` through a real server and worker: the counters, histograms and gauges move by
what happened (tasks that succeed and fail, a schedule's fires, requests), HTTP series are
labelled by route template, and the log file gets an info line per task end and schedule
fire (and, at debug, an access line per request)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, wait_until

pytestmark = pytest.mark.timeout(120)

TYPES = {"ok": 'command = "echo ok"\n', "bad": 'command = "exit 3"\n',
         "later": 'command = "true"\n'}
TICK = 'command = "true"\nevery = "1s"\n'  # a command schedule: its type is schedule.tick
Samples = dict[tuple[str, frozenset], float]


def scrape(server: ServerProcess) -> tuple[str, Samples]:
    """(content type, every sample by (name, labels))."""
    request = urllib.request.Request(f"{server.url}/metrics",
                                     headers={"Authorization": f"Bearer {server.admin_token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        kind, text = answer.headers["Content-Type"], answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return kind, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series is not there yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """A series' values summed by one of its labels."""
    found: dict[str, float] = defaultdict(float)
    for (sample, labels), number in samples.items():
        if sample == name:
            found[dict(labels)[label]] += number
    return dict(found)


def log_events(server: ServerProcess) -> list[dict]:
    """The JSON lines of the server's log file in its data dir."""
    path = server.data_dir / "log" / "blanket.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(server: ServerProcess, type_name: str) -> dict:
    """Submit a task and wait until the server has counted its end: its end is visible as
    soon as it commits, its count follows (and the log line after the count)."""
    task = server.client.post("/task/", {"type": type_name})
    ended = server.wait_for_task(task["id"])
    wait_until(lambda: any(e.get("event") == "task ended" and e.get("task") == task["id"]
                           for e in log_events(server)))
    return ended


@pytest.fixture
def server(make_server) -> ServerProcess:
    started = make_server(types=TYPES)
    make_server.worker(started)
    return started


def test_tasks_skipped_for_a_failure_count_as_finished(server: ServerProcess) -> None:
    """A skip happens inside the store, in the transaction that ends what the task waited
    for (or that stops it, or at submission): each skipped task counts once, cascades too,
    and only there, never as an attempt."""
    bad = server.client.post("/task/", {"type": "bad"})
    first = server.client.post("/task/", {"type": "ok", "after": [bad["id"]]})
    second = server.client.post("/task/", {"type": "later", "after": [first["id"]]})
    assert server.wait_for_task(second["id"], states=("SKIPPED",))["state"] == "SKIPPED"
    late = server.client.post("/task/", {"type": "ok", "after": [bad["id"]]})  # at submission
    assert late["state"] == "SKIPPED"
    _, after = scrape(server)
    assert value(after, "blanket_tasks_finished_total", type="ok", state="SKIPPED") == 2
    assert value(after, "blanket_tasks_finished_total", type="later", state="SKIPPED") == 1
    assert value(after, "blanket_tasks_finished_total", type="bad", state="FAILED") == 1
    assert value(after, "blanket_attempts_ended_total", type="ok", state="SKIPPED") == 0


def test_metrics_move_by_what_the_server_did(server: ServerProcess) -> None:
    kind, before = scrape(server)
    assert kind.startswith("text/plain; version=0.0.4")
    assert value(before, "blanket_config_problems") == 0
    assert value(before, "blanket_notifications_delivered_total", kind="webhook") == 0
    assert value(before, "blanket_notification_failures_total", kind="command") == 0

    ended = [run(server, "ok") for _ in range(3)] + [run(server, "bad") for _ in range(2)]
    assert [t["state"] for t in ended] == ["SUCCESS"] * 3 + ["FAILED"] * 2
    held = server.client.post("/task/", {"type": "later", "not_before": time.time() + 3600})
    server.client.request("GET", "/task/999999999", ok=(404,))
    server.client.request("GET", "/no/such/page/12345", ok=(404,))
    (server.config_dir / "types" / "broken.toml").write_text("command = [\n")
    wait_until(lambda: server.client.get("/health")["config_problems"])

    _, after = scrape(server)
    assert value(after, "blanket_tasks_submitted_total", type="ok") == 3
    assert value(after, "blanket_tasks_submitted_total", type="bad") == 2
    assert value(after, "blanket_tasks_submitted_total", type="later") == 1
    assert value(after, "blanket_tasks_finished_total", type="ok", state="SUCCESS") == 3
    assert value(after, "blanket_tasks_finished_total", type="bad", state="FAILED") == 2
    assert value(after, "blanket_tasks_finished_total", type="bad", state="SUCCESS") == 0
    assert value(after, "blanket_attempts_ended_total", type="bad", state="FAILED") == 2
    for type_name, count in (("ok", 3), ("bad", 2)):
        assert value(after, "blanket_task_queue_wait_seconds_count", type=type_name) == count
        assert value(after, "blanket_task_run_seconds_count", type=type_name) == count
        assert value(after, "blanket_task_run_seconds_bucket", type=type_name, le="+Inf") == count
        runs = sum(t["finished"] - t["started"] for t in ended if t["type"] == type_name)
        assert value(after, "blanket_task_run_seconds_sum", type=type_name) == pytest.approx(
            runs, abs=0.01)
    assert value(after, "blanket_task_queue_wait_seconds_count", type="later") == 0

    # The gauges are read at the scrape: the held task is queued, the failures are there.
    assert value(after, "blanket_tasks_queued", type="later") == 1
    assert value(after, "blanket_tasks", state="QUEUED") == 1
    assert value(after, "blanket_tasks", state="FAILED") == 2
    assert value(after, "blanket_tasks", state="SUCCESS") == 3
    assert sum(by_label(after, "blanket_workers", "state").values()) == 1
    assert value(after, "blanket_config_problems") == 1

    # HTTP series by route template, never by the path asked for.
    routes = by_label(after, "blanket_http_requests_total", "route")
    assert routes["/task/<task_id>"] >= 5  # each task waited for, and the missing one
    assert value(after, "blanket_http_requests_total", method="GET", route="/task/<task_id>",
                 status="404") == 1
    assert value(after, "blanket_http_requests_total", method="GET", route="unrouted",
                 status="404") == 1
    assert value(after, "blanket_http_requests_total", method="POST", route="/task/",
                 status="201") == 6
    assert all(route == "unrouted" or route.startswith("/") for route in routes)
    assert not [route for route in routes if any(part.isdigit() for part in route.split("/"))]
    assert f"/task/{held['id']}" not in routes
    for (name, labels), count in after.items():
        if name == "blanket_http_request_seconds_count":
            labels = dict(labels)
            assert count == sum(v for (n, lab), v in after.items()
                                if n == "blanket_http_requests_total"
                                and dict(lab)["route"] == labels["route"]
                                and dict(lab)["method"] == labels["method"])
    assert value(after, "blanket_http_request_seconds_count", method="GET",
                 route="/metrics") == 1  # the first scrape: this one is still being answered

    # Every submission and end was a durable commit.
    assert value(after, "blanket_store_commit_seconds_count", durable="true") >= 6 + 5

    # Counters move by exactly what happens next.
    run(server, "ok")
    _, again = scrape(server)
    assert value(again, "blanket_tasks_submitted_total", type="ok") == 4
    assert value(again, "blanket_tasks_finished_total", type="ok", state="SUCCESS") == 4
    assert value(again, "blanket_http_request_seconds_count", method="GET",
                 route="/metrics") == 2


def test_a_schedule_fire_records_its_lateness_and_logs_it(server: ServerProcess) -> None:
    path = server.write_schedule("tick", TICK)
    first = wait_until(lambda: server.client.get("/task/?schedule=tick&order=oldest"),
                       timeout=20)[0]
    fired = wait_until(lambda: value(scrape(server)[1],
                                     "blanket_schedule_lateness_seconds_count",
                                     schedule="tick") >= 2, timeout=20)
    assert fired
    path.unlink()
    _, samples = scrape(server)
    count = value(samples, "blanket_schedule_lateness_seconds_count", schedule="tick")
    late = value(samples, "blanket_schedule_lateness_seconds_sum", schedule="tick")
    assert 0 <= late < count * 5  # submitted within seconds of each planned time
    assert value(samples, "blanket_schedule_lateness_seconds_bucket", schedule="tick",
                 le="+Inf") == count
    assert value(samples, "blanket_tasks_submitted_total", type="schedule.tick") >= count

    fire_line = wait_until(lambda: [e for e in log_events(server)
                                    if e["event"] == "schedule fired"
                                    and e.get("task") == first["id"]])[0]
    assert fire_line["level"] == "info"
    assert fire_line["schedule"] == "tick" and fire_line["type"] == "schedule.tick"
    assert fire_line["fire"] == first["environment"]["BLANKET_FIRE_TIME"]
    assert 0 <= fire_line["lateness"] < 5


def test_the_log_file_has_an_info_line_for_each_task_end(server: ServerProcess) -> None:
    good, failed = run(server, "ok"), run(server, "bad")
    events = wait_until(lambda: [e for e in log_events(server) if e["event"] == "task ended"
                                 and e["task"] in (good["id"], failed["id"])][1:] and
                        log_events(server))
    lines = {e["task"]: e for e in events if e["event"] == "task ended"}
    for task in (good, failed):
        line = lines[task["id"]]
        assert line["level"] == "info" and line["logger"] == "blanket.queue"
        assert (line["type"], line["state"], line["worker"]) == (
            task["type"], task["state"], task["worker"])
        assert line["duration"] == pytest.approx(task["finished"] - task["started"], abs=0.002)
    assert lines[failed["id"]]["exit_code"] == 3
    # Access lines are debug: at the default level (info) the file has none.
    assert not [e for e in events if e["event"] == "request"]


def test_at_debug_each_request_gets_an_access_line(make_server) -> None:
    server = make_server(types=TYPES, env={"BLANKET_LOG_LEVEL": "debug"})
    task = server.client.post("/task/", {"type": "later", "not_before": time.time() + 3600})
    server.client.get(f"/task/{task['id']}")
    server.client.request("GET", "/no/such/page", ok=(404,))

    def access_lines() -> list[dict]:
        return [e for e in log_events(server) if e["event"] == "request"]

    lines = wait_until(lambda: [e for e in access_lines() if e["path"] == "/no/such/page"]
                       and access_lines())
    shown = next(e for e in lines if e["path"] == f"/task/{task['id']}")
    assert shown["level"] == "debug" and shown["logger"] == "blanket.http"
    assert (shown["method"], shown["route"], shown["status"]) == ("GET", "/task/<task_id>", 200)
    assert shown["caller"].startswith("local-admin") and shown["seconds"] >= 0
    missing = next(e for e in lines if e["path"] == "/no/such/page")
    assert (missing["route"], missing["status"]) == ("unrouted", 404)
    posted = next(e for e in lines if e["method"] == "POST")
    assert (posted["route"], posted["status"]) == ("/task/", 201)

