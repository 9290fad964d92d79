"""Nothing a task or a crash does kills a worker for good or runs a task twice at once: a
task's processes die with the worker that started them, before the task's retry starts; a
task that breaks its worker ends FAILED saying why; one that keeps killing its workers stops
after its retries."""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from blanket.store import open_store
from blanket.store.base import NewTask
from tests.conftest import ServerProcess, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)

# Writes "ATTEMPT TIME" to beats.log every 50 ms for 6 s, from bash and from a background
# child; at its start it notes whether the child an earlier attempt left is still alive.
BEATING = '''command = """
if [ -e child.pid ] && kill -0 "$(cat child.pid)" 2>/dev/null; then
  echo "$BLANKET_ATTEMPT earlier-child-alive" >> beats.log
fi
(for i in $(seq 120); do echo "$BLANKET_ATTEMPT $EPOCHREALTIME" >> beats.log; sleep 0.05; done) &
echo $! > child.pid
for i in $(seq 120); do echo "$BLANKET_ATTEMPT $EPOCHREALTIME" >> beats.log; sleep 0.05; done
wait
"""
retries = 1
'''


def task_dir(server: ServerProcess, task: dict) -> Path:
    return server.data_dir / "tasks" / task["type"] / str(task["id"])


def attempt_intervals(beats: Path) -> dict[int, tuple[float, float]]:
    """Each attempt's first and last beat; fails on a note that an earlier child lived on."""
    times: dict[int, list[float]] = {}
    for line in beats.read_text().splitlines():
        attempt, what = line.split()
        assert what != "earlier-child-alive", f"attempt {attempt} started beside the last one"
        times.setdefault(int(attempt), []).append(float(what))
    return {attempt: (min(t), max(t)) for attempt, t in times.items()}


def assert_no_overlap(intervals: dict[int, tuple[float, float]]) -> None:
    ordered = [intervals[a] for a in sorted(intervals)]
    for (_, end), (start, _) in pairwise(ordered):
        assert end < start, f"attempts overlap: {intervals}"


def worker_pid(server: ServerProcess, worker_id: str) -> int:
    return server.client.get(f"/worker/{worker_id}")["pid"]


def killed_mid_task(server: ServerProcess, kill: Callable[[dict], None]) -> dict:
    """Run a BEATING task, `kill` its worker once it beats, let the retry run to its end."""
    task = server.client.post("/task/", {"type": "beating"})
    running = server.wait_for_task(task["id"], states=("RUNNING",))
    beats = task_dir(server, task) / "beats.log"
    wait_until(lambda: beats.is_file() and beats.read_text().count("\n") > 4)
    kill(running)
    done = server.wait_for_task(task["id"], states=("SUCCESS", "FAILED"), timeout=60)
    assert done["state"] == "SUCCESS", (done["error"], done["attempts"])
    assert [a["state"] for a in done["attempts"]] == ["LOST", "SUCCESS"]
    assert_no_overlap(attempt_intervals(beats))
    return done


def test_a_sigkilled_worker_childs_task_dies_before_its_retry_starts(make_server):
    server = make_server(types={"beating": BEATING})
    make_server.worker(server, processes=2)

    def kill(running: dict) -> None:
        os.kill(worker_pid(server, running["worker"]), signal.SIGKILL)

    killed_mid_task(server, kill)


def test_a_sigkilled_supervisor_and_its_workers_leave_no_task_running(make_server):
    server = make_server(types={"beating": BEATING})
    supervisor = make_server.worker(server, processes=2)
    rescuer: list[WorkerProcess] = []

    def kill(running: dict) -> None:
        # A worker that was started before the crash takes the retry: only what dies with
        # the killed workers can end their task in time.
        rescuer.append(make_server.worker(server, args=("--id", "rescuer")))
        wait_until(lambda: any(w["id"] == "rescuer" for w in server.client.get("/worker/")))
        os.killpg(supervisor.proc.pid, signal.SIGKILL)  # the supervisor and its children

    done = killed_mid_task(server, kill)
    assert done["worker"] == "rescuer"


def test_tasks_that_break_their_worker_fail_with_the_reason_and_the_worker_goes_on(
        make_server, tmp_path: Path):
    assets = tmp_path / "assets" / "task.json"
    assets.mkdir(parents=True)
    (assets / "keep").write_text("a folder where the task's record goes\n")
    interpreter = tmp_path / "interpreter"  # there when the type is read, gone when it runs
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o755)
    server = make_server(types={
        "echo": 'command = "echo {{ MSG }}"\n[environment.defaults]\nMSG = "hi"\n',
        "no_executor": f'command = "true"\nexecutor = "{interpreter}"\n',
        "no_record": f'command = "echo ran"\n[[files]]\nsrc = "{tmp_path / "assets"}/"\n'
                     'dest = "."\n',
    })
    interpreter.unlink()
    worker = make_server.worker(server, args=("--id", "steady"))
    # Intake refuses such text now; a task stored before, or by another way in, has it.
    store = open_store(f"sqlite:///{server.data_dir / 'blanket.db'}")
    try:
        poison = store.add_task(NewTask(type="echo", environment={"MSG": "a\ud800b"},
                                        tags=(), score=0.0, added=0.0))
    finally:
        store.close()
    cases = [(poison.id, "cannot be encoded as UTF-8")]
    for type_name, reason in (("no_executor", "could not start executor"),
                              ("no_record", "could not write task.json")):
        cases.append((server.client.post("/task/", {"type": type_name})["id"], reason))
    for task_id, reason in cases:
        ended = server.wait_for_task(task_id, timeout=30)
        assert ended["state"] == "FAILED" and reason in ended["error"], ended
        assert ended["worker"] == "steady"
    after = server.client.post("/task/", {"type": "echo"})
    assert server.wait_for_task(after["id"])["state"] == "SUCCESS"
    assert server.client.get(f"/task/{after['id']}")["worker"] == "steady"
    assert worker.proc.poll() is None


def test_a_task_that_keeps_killing_its_worker_fails_after_its_retries(make_server):
    server = make_server(types={"deadly": 'command = "kill -9 $PPID; sleep 30"\nretries = 1\n'})
    make_server.worker(server, processes=2)
    task = server.client.post("/task/", {"type": "deadly"})
    ended = server.wait_for_task(task["id"], timeout=60)
    assert ended["state"] == "FAILED"
    assert ended["error"].startswith("its worker died 2 times")
    assert [a["state"] for a in ended["attempts"]] == ["LOST", "LOST"]


@pytest.mark.parametrize("content_type", ["application/json",
                                          "application/x-www-form-urlencoded"])
def test_a_submission_with_a_lone_surrogate_is_refused_naming_the_field(
        make_server, content_type: str):
    server = make_server(types={"echo": 'command = "echo {{ MSG }}"\n'
                                        '[environment.defaults]\nMSG = "hi"\n'})
    body = b'{"type": "echo", "environment": {"MSG": "a\\ud800b"}}'
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/task/", body, {
            "Authorization": f"Bearer {server.admin_token}", "Content-Type": content_type})
        response = conn.getresponse()
        status, answer = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert status == 400
    assert "environment.MSG" in answer["error"]["message"]
    assert server.client.get("/task/") == []
