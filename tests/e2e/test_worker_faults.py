"""Faults: workers and servers that die or are told to stop mid-run never lose a task and
never run one twice at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from blanket.client import ClientError
from tests.conftest import ServerProcess, wait_until
from tests.e2e.lossy_proxy import LossyProxy
from tests.e2e.test_metrics import scrape, value

# Runs until the test creates `go` in its directory; each run adds a line to runs.log.
HOLD = ('command = "echo $BLANKET_ATTEMPT >> runs.log; while [ ! -e go ]; do sleep 0.02; done"\n'
        'retries = 1\n')
pytestmark = pytest.mark.timeout(90)


def task_dir(server: ServerProcess, task: dict) -> Path:
    return server.data_dir / "tasks" / task["type"] / str(task["id"])


def running(server: ServerProcess, task_id: int) -> dict:
    return server.wait_for_task(task_id, states=("RUNNING",))


def test_a_task_whose_worker_is_killed_is_lost_then_run_to_success_by_another(make_server):
    server = make_server(types={"hold": HOLD})
    doomed = make_server.worker(server, args=("--id", "doomed"))
    task = server.client.post("/task/", {"type": "hold"})
    running(server, task["id"])
    make_server.worker(server, args=("--id", "survivor"))
    doomed.proc.send_signal(signal.SIGKILL)
    (task_dir(server, task) / "go").touch()
    done = server.wait_for_task(task["id"], states=("SUCCESS", "FAILED"), timeout=30)
    assert (done["state"], done["worker"]) == ("SUCCESS", "survivor")
    assert [(a["worker"], a["state"]) for a in done["attempts"]] == [
        ("doomed", "LOST"), ("survivor", "SUCCESS")]


def test_a_late_report_from_a_superseded_attempt_is_refused(make_server):
    server = make_server(types={"quick": 'command = "true"\nretries = 1\n'})
    client = server.client
    client.post("/worker/", {"id": "vanishes", "tags": [], "host": "h", "pid": 1})
    task = client.post("/task/", {"type": "quick"})
    claim = client.post("/worker/vanishes/claim?wait=5")
    old_token = claim["task"]["token"]
    make_server.worker(server)  # the claimant never heartbeats: its attempt is lost, then retried
    done = server.wait_for_task(task["id"], states=("SUCCESS",), timeout=30)
    assert [a["state"] for a in done["attempts"]] == ["LOST", "SUCCESS"]
    for report, body in (("finished", {"state": "SUCCESS", "exit_code": 0}), ("heartbeat", {}),
                         ("started", {"pid": 1})):
        with pytest.raises(ClientError) as refused:
            client.post(f"/task/{task['id']}/{report}", {"token": old_token, **body})
        assert (refused.value.status, refused.value.code) == (409, "stale_attempt")
    assert client.get(f"/task/{task['id']}")["state"] == "SUCCESS"


def test_a_task_running_while_the_server_is_killed_ends_once_after_a_restart(make_server):
    server = make_server(types={"hold": HOLD})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "hold"})
    running(server, task["id"])
    server.kill()
    (task_dir(server, task) / "go").touch()  # it ends while the server is down
    server.start()
    done = server.wait_for_task(task["id"], timeout=30)
    assert done["state"] == "SUCCESS"
    assert len(done["attempts"]) == 1
    assert (task_dir(server, task) / "runs.log").read_text() == "1\n"


def test_sigterm_lets_the_running_task_finish_and_takes_no_new_one(make_server):
    server = make_server(types={"hold": HOLD})
    worker = make_server.worker(server)
    first = server.client.post("/task/", {"type": "hold"})
    running(server, first["id"])
    second = server.client.post("/task/", {"type": "hold"})
    worker.proc.send_signal(signal.SIGTERM)
    (task_dir(server, first) / "go").touch()
    assert server.wait_for_task(first["id"])["state"] == "SUCCESS"
    assert worker.proc.wait(10) == 0
    assert server.client.get(f"/task/{second['id']}")["state"] == "QUEUED"


def test_sigterm_hands_the_task_back_after_the_grace_time(make_server):
    server = make_server(types={"hold": HOLD}, env={"BLANKET_WORKER_GRACE": "0.5"})
    worker = make_server.worker(server, args=("--id", "leaving"))
    task = server.client.post("/task/", {"type": "hold"})
    running(server, task["id"])
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(10) == 0
    handed_back = server.client.get(f"/task/{task['id']}")
    assert handed_back["state"] == "QUEUED"
    assert handed_back["attempts"][0]["worker"] == "leaving"
    (task_dir(server, task) / "go").touch()
    make_server.worker(server, args=("--id", "next"))
    done = server.wait_for_task(task["id"])
    assert (done["state"], done["worker"]) == ("SUCCESS", "next")


def test_a_daemon_worker_detaches_writes_its_pid_file_and_removes_it_on_sigterm(make_server):
    server = make_server()
    pid_file = server.base / "worker.pid"
    log_file = server.base / "worker-daemon.log"
    launcher = make_server.worker(server, args=("--daemon", "--pid-file", str(pid_file),
                                                "--log-file", str(log_file)))
    assert launcher.proc.wait(10) == 0
    pid = int(wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip()))
    [listed] = wait_until(lambda: server.client.get("/worker/"))
    assert (listed["pid"], listed["host"]) == (pid, socket.gethostname())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_file.exists())
    assert "worker registered" in log_file.read_text()


def run_through_a_lossy_proxy(server: ServerProcess, swallow, count: int,
                              slots: int = 1) -> tuple[LossyProxy, list[dict]]:
    """A worker talking to `server` through a LossyProxy that swallows one answer; `count`
    tasks of type `once` submitted, and each as it ended."""
    proxy = LossyProxy(server.port, swallow)
    try:
        env = {**server.env, "BLANKET_TOKEN": server.admin_token}
        worker = subprocess.Popen(
            [sys.executable, "-m", "blanket", "worker", "--server", proxy.url,
             "--data-dir", str(server.data_dir), "-n", str(slots)],
            cwd=server.base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            wait_until(lambda: len(server.client.get("/worker/")) == slots, timeout=20)
            tasks = [server.client.post("/task/", {"type": "once"}) for _ in range(count)]
            return proxy, [server.wait_for_task(t["id"], timeout=30) for t in tasks]
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    finally:
        proxy.close()


ONCE = 'command = "echo ran >> runs.log"\nretries = 0\n'


def test_a_claim_whose_answer_was_lost_runs_once_spending_no_attempt(make_server):
    """The server stores a claim and answers it, but the answer never reaches the worker
    (a proxy between them swallows it, as a server killed at that moment would). The
    worker asks again with the same claim key and is answered the same task: it runs once,
    as its first attempt, rather than sitting claimed until it counts as lost."""
    server = make_server(types={"once": ONCE})
    proxy, (done,) = run_through_a_lossy_proxy(server, lambda request, answer: (
        b"/claim?" in request.split(b"\r\n")[0] and answer.startswith(b"HTTP/1.1 200")), 1)
    assert proxy.swallowed is not None  # it did lose one
    assert (done["state"], done["attempt"], len(done["attempts"])) == ("SUCCESS", 1, 1), done
    assert (server.data_dir / "tasks" / "once" / str(done["id"]) / "runs.log").read_text() \
        == "ran\n"
    # claimed once, so its wait in the queue is counted once (the claim asked again is not)
    samples = scrape(server)[1]
    assert value(samples, "blanket_task_queue_wait_seconds_count", type="once") == 1


def test_an_end_report_whose_answer_was_lost_gets_its_claims_when_sent_again(make_server):
    """The answer to an end report, which brings the slot's next task and a reserve, is
    lost: the worker sends the report again, and is answered the tasks the first claimed.
    Each task runs once, as its first attempt."""
    server = make_server(types={"once": ONCE})
    proxy, done = run_through_a_lossy_proxy(server, lambda request, answer: (
        request.startswith(b"POST /exchange ") and answer.startswith(b"HTTP/1.1 200")), 5)
    assert proxy.swallowed is not None
    assert [(t["state"], t["attempt"], len(t["attempts"])) for t in done] == [
        ("SUCCESS", 1, 1)] * 5, done
    for task in done:
        folder = server.data_dir / "tasks" / "once" / str(task["id"])
        assert (folder / "runs.log").read_text() == "ran\n"


def test_a_claim_answer_lost_as_its_worker_stops_goes_back_to_the_queue_at_once(make_server):
    """The answer to a claim is lost just as its worker gets SIGTERM. Before it leaves, the
    worker asks once more with the claim's key, and the server, which knows it is stopping,
    gives the task back to the queue at once with its attempt unspent, rather than leave it
    claimed until it counts as lost (a minute here). On the code before, the task stayed
    CLAIMED by a worker that had gone."""
    server = make_server(types={"once": ONCE}, env={"BLANKET_LOST_AFTER": "60"})
    worker: list[subprocess.Popen] = []

    def swallow(request: bytes, answer: bytes) -> bool:
        if b"/claim?" in request.split(b"\r\n")[0] and answer.startswith(b"HTTP/1.1 200"):
            worker[0].send_signal(signal.SIGTERM)  # before the answer is dropped
            return True
        return False

    proxy = LossyProxy(server.port, swallow)
    try:
        env = {**server.env, "BLANKET_TOKEN": server.admin_token}
        worker.append(subprocess.Popen(
            [sys.executable, "-m", "blanket", "worker", "--server", proxy.url,
             "--data-dir", str(server.data_dir)],
            cwd=server.base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
        try:
            wait_until(lambda: len(server.client.get("/worker/")) == 1, timeout=20)
            task = server.client.post("/task/", {"type": "once"})
            assert worker[0].wait(30) == 0
        finally:
            if worker[0].poll() is None:
                os.killpg(worker[0].pid, signal.SIGKILL)
                worker[0].wait()
    finally:
        proxy.close()
    assert proxy.swallowed is not None
    after = server.client.get(f"/task/{task['id']}")
    assert (after["state"], after["attempt"], after["worker"]) == ("QUEUED", 0, None), after
    assert not (server.data_dir / "tasks" / "once" / str(task["id"]) / "runs.log").exists()
    make_server.worker(server)  # another worker runs it, as its first attempt
    done = server.wait_for_task(task["id"], timeout=30)
    assert (done["state"], done["attempt"]) == ("SUCCESS", 1), done


def test_an_end_report_sent_again_by_a_worker_paused_meanwhile_gets_its_claims(make_server):
    """The answer to an end report (the slot's next task and a reserve) is lost, and the
    worker is paused before it sends the report again: it is still answered the tasks the
    first claimed (claimed before the pause, as a claim asked again is), and runs them.
    On the code before, a paused worker's report claimed nothing, even again, and those
    tasks sat claimed until they counted as lost."""
    server = make_server(types={"once": ONCE})

    def swallow(request: bytes, answer: bytes) -> bool:
        if request.startswith(b"POST /exchange ") and answer.startswith(b"HTTP/1.1 200"):
            (worker,) = server.client.get("/worker/")
            server.client.post(f"/worker/{worker['id']}/pause")
            threading.Timer(1.5, server.client.post,
                            [f"/worker/{worker['id']}/resume"]).start()
            return True
        return False

    proxy, done = run_through_a_lossy_proxy(server, swallow, 5)
    assert proxy.swallowed is not None
    assert [(t["state"], t["attempt"], len(t["attempts"])) for t in done] == [
        ("SUCCESS", 1, 1)] * 5, done
