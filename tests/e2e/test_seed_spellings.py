"""The seed's own spellings, run as its documentation writes them: ?sync, POST /tasks/TYPE/,
max_concurrent_tasks, blanket task stop TYPE ID, blanket rm task ID, blanket ls tasks and
blanket ls tasktypes."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_cli import blanket

TYPES = {
    "echo": 'command = "echo {{ WORD }}"\ntags = ["unix"]\n[environment.defaults]\nWORD = "hi"\n',
    "parked": 'command = "true"\ntags = ["gpu"]\nmax_concurrent_tasks = 1\n',
}


@pytest.fixture
def server(make_server):
    running = make_server(types=TYPES)
    make_server.worker(running, tags="unix")
    return running


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sync_waits_like_wait(server):
    task = json.loads(curl("-X", "POST", f"{server.url}/task/?sync",
                           "-d", '{"type": "echo"}'))
    assert task["state"] == "SUCCESS"


def test_post_tasks_type_takes_the_environment_as_its_body(server):
    task = json.loads(curl("-X", "POST", f"{server.url}/tasks/echo/?sync", "-d",
                           '{"WORD": "seed"}'))
    assert task["state"] == "SUCCESS" and task["environment"]["WORD"] == "seed"
    refused = json.loads(curl("-X", "POST", f"{server.url}/tasks/echo/", "-d", '["x"]'))
    assert "error" in refused


def test_max_concurrent_tasks_is_read_as_max_concurrent(server):
    shown = server.client.get("/task_type/parked")
    assert shown["problems"] == [] and shown["definition"]["max_concurrent"] == 1


def test_the_seeds_command_lines(server):
    queued = server.client.post("/task/", {"type": "parked"})
    out = blanket("task", "stop", "parked", str(queued["id"]), server=server).stdout
    assert out.split() == [str(queued["id"]), "STOPPED"]
    wrong = blanket("task", "stop", "echo", str(queued["id"]), server=server, ok=False)
    assert wrong.returncode == 2 and "not 'echo'" in wrong.stderr
    assert blanket("rm", "task", str(queued["id"]), server=server).stdout.strip() == \
        str(queued["id"])
    assert server.client.get("/task/?count")["count"] == 0
    done = server.client.post("/task/?wait=30", {"type": "echo"})
    assert str(done["id"]) in blanket("ls", "tasks", server=server).stdout
    assert "parked" in blanket("ls", "tasktypes", server=server).stdout
