"""The worker protocol's messages: each goes out and comes back unchanged, keeps the JSON
form the routes have always had, and a bad one is refused naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blanket import protocol as P
from blanket.config.tasktype import TaskType
from blanket.models import Task, TaskState, Worker
from blanket.worker.backoff import Backoff

REQUESTS = [
    P.Register(host="here", pid=12, tags=("gpu", "linux"), id="w-1"),
    P.Register(host="here", pid=12),
    P.AttemptReport(token="t"),
    P.Started(token="t", pid=7, directory="/var/tasks/echo/1", at=1_700_000_000.5),
    P.Finished(token="t", state="SUCCESS", exit_code=0, claim_next=2),
    P.Finished(token="t", state="FAILED", error="boom", handback=True, running=9,
               started=P.LateStart(at=1.0, pid=3, directory="/d"), claim_next=1),
    P.Progress(progress=42.5, message="half", token="t"),
]


def task(**changes: object) -> Task:
    values: dict = dict(id=5, type="echo", state=TaskState.CLAIMED, environment={"A": "1"},
                        tags=("x",), score=3.0, added=1.5, version="ab" * 8, token="tok",
                        attempt=1, secrets=("A",), attempts=({"attempt": 1},))
    return Task(**{**values, **changes})


@pytest.mark.parametrize("message", REQUESTS, ids=lambda m: type(m).__name__)
def test_a_request_comes_back_as_it_went_out(message: P.Request):
    assert type(message).from_json(message.to_json()) == message


def test_a_request_leaves_out_what_it_does_not_say():
    assert json.loads(P.Register(host="h", pid=1).to_json()) == {"host": "h", "pid": 1}


@pytest.mark.parametrize(("raw", "words"), [
    (b'{"token": "t", "state": "DONE"}', "state: invalid enum value 'DONE'"),
    (b'{"token": "t", "state": "SUCCESS", "claim_next": 3}', "claim_next"),
    (b'{"token": "t", "state": "SUCCESS", "claim_next": "2"}', "claim_next"),
    (b'{"token": "t", "state": "SUCCESS", "running": true}', "running"),
    (b'{"token": "t", "state": "SUCCESS", "exit_code": 99999999999}', "exit_code"),
    (b'{"token": "t", "state": "SUCCESS", "started": {"pid": [1]}}', "started.pid"),
    (b'{"token": "t", "state": "SUCCESS", "colour": 1}',
     "unknown field `colour`; it takes claim_next, error, exit_code, handback, running, "
     "started, state, token"),
    (b'{"state": "SUCCESS"}', "missing required field `token`"),
    (b'{"token": "", "state": "SUCCESS"}', "token: expected `str` of length >= 1"),
    (b'[1, 2]', "the body: expected `object`, got `array`"),
])
def test_a_bad_end_report_is_refused_naming_the_field(raw: bytes, words: str):
    with pytest.raises(P.BadMessage) as refused:
        P.Finished.from_json(raw)
    assert words in str(refused.value) and not refused.value.malformed


def test_a_tag_out_of_pattern_is_refused_naming_it():
    with pytest.raises(P.BadMessage, match=r"tags\[0\]"):
        P.Register.from_json(b'{"host": "h", "pid": 1, "tags": ["a b"]}')


@pytest.mark.parametrize("raw", [b'{"token": NaN}', b'{"token": "\\ud800"}', b"{",
                                 b'{"token": "t"} x'])
def test_a_body_that_is_not_json_is_flagged_malformed(raw: bytes):
    with pytest.raises(P.BadMessage) as refused:
        P.AttemptReport.from_json(raw)
    assert refused.value.malformed


def test_true_asks_for_one_task():
    report = P.Finished.from_json(b'{"token": "t", "state": "SUCCESS", "claim_next": true}')
    assert report.wants == 1


def test_a_claim_carries_the_task_with_its_token_its_type_and_its_bundle():
    task_type = TaskType(name="echo", command="echo hi", tags=("x",))
    claimed = P.Claimed.of(task(), task_type)
    assert json.loads(claimed.to_json()) == {
        "task": json.loads(json.dumps(task().to_json(with_token=True))),
        "type": json.loads(json.dumps(task_type.to_json())),
        "bundle": f"/version/{'ab' * 8}.tar.gz"}
    back = P.Claimed.from_json(claimed.to_json())
    assert back.task == task() and TaskType.from_json(back.type) == task_type


def test_an_end_reports_answer_brings_its_claims_or_none():
    ended = P.Ended(task=task().to_json(), next=P.Claimed.of(task(id=6), TaskType("e", "true")))
    back = P.Ended.from_json(ended.to_json())
    assert back.state == "CLAIMED" and back.next is not None and back.next.task.id == 6
    assert back.reserve is None and json.loads(ended.to_json())["reserve"] is None


def test_registering_answers_the_worker_record_and_what_the_worker_needs():
    worker = Worker(id="w", tags=("x",), host="h", pid=1, state="idle", registered=1.0,
                    heartbeat=2.0, owner="ops")
    answer = P.Registered.of(worker, 2.5, "abc")
    assert json.loads(answer.to_json()) == {**worker.to_json(), "heartbeat_interval": 2.5,
                                            "server_id": "abc"}


def test_an_answer_ignores_fields_it_does_not_know():
    orders = P.Orders.from_json(b'{"stop": true, "handback": false, "state": "RUNNING", "x": 1}')
    assert orders == P.Orders(stop=True, handback=False, state="RUNNING")


def test_a_routes_path_fills_in_and_quotes_its_parts():
    assert P.FINISHED.path(task_id=7) == "/task/7/finished"
    assert P.INPUT.path(task_id=7, name="a b.txt") == "/task/7/files/a%20b.txt"
    assert P.bundle_path("ab12") == "/version/ab12.tar.gz"


def test_the_architecture_document_shows_every_worker_route():
    document = Path(__file__).parents[2] / "docs" / "architecture.md"
    assert P.routes_table() in document.read_text()


def test_a_backoff_doubles_up_to_its_cap_and_starts_again_after_a_success():
    backoff = Backoff(first=0.001, most=0.004)
    delays = []
    for _ in range(4):
        delays.append(backoff.delay)
        assert backoff.pause()
    assert delays == [0.001, 0.002, 0.004, 0.004]
    backoff.reset()
    assert backoff.delay == 0.001


def test_a_backoff_gives_up_when_its_patience_ends_or_its_event_is_set():
    assert not Backoff(first=1.0, patience=0.5).pause()
    stop = threading.Event()
    backoff = Backoff(first=10.0, until=stop)
    threading.Timer(0.05, stop.set).start()
    began = time.monotonic()
    backoff.pause()  # cut short by the event
    assert time.monotonic() - began < 5 and not backoff.pause()


def test_the_worker_imports_nothing_of_the_servers_routes_or_store():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, blanket.worker.loop; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith(("blanket.server.api", "blanket.store"))] == []


def test_a_claim_of_text_that_is_not_unicode_still_reaches_its_worker():
    # Intake refuses lone surrogates now; a task stored before still runs, and fails saying so.
    poison = task(environment={"MSG": "a\ud800b"})
    claimed = P.Claimed.from_json(P.Claimed.of(poison, TaskType("echo", "true")).to_json())
    assert claimed.task == poison
