"""The project's oldest documented examples (issue 3), run verbatim through a shell against a
server started on a copy of the repository's conf.d."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CURL_LIST = "curl -s -X GET localhost:8773/task/ | python -mjson.tool"
CURL_BASH = ("curl -s -X POST localhost:8773/task/ -d'{\"type\": \"bash_task\", \"environment\": "
             "{\"PANDAS\": \"four\", \"Frogs\": 5, \"CATS\": 2}}'")
CURL_HELLO = ("curl -X POST localhost:8773/task/ -d'{\"type\": \"python_hello\", \"environment\": "
              "{\"frogs\": 5, \"CATS\": 2}}'")
CURL_FORM_DATA = ("curl -X POST localhost:8773/task/ -F data='{\"type\": \"python_hello\", "
                  "\"environment\": {\"frogs\": 5, \"CATS\": 2}}' -F blanket.json=@blanket.json")
ECHO_DATA = ("echo '{\"type\": \"python_hello\", \"environment\": {\"frogs\": 5, \"CATS\": 2}}' "
             "> data.json")
CURL_DATA_FILE = ("curl -X POST localhost:8773/task/ -F data=@data.json "
                  "-F blanket.json=@blanket.json")
CURL_DELETE = "curl -s -X DELETE localhost:8773/task/<id> | python -mjson.tool"
RM_NEWEST_FIVE = "blanket ps -q | tail -n5 | xargs -I {} blanket rm {}"
RM_ALL = "blanket ps -a -q | xargs -I {} blanket rm {}"
BLANKET_JSON = '{"note": "a file the task reads"}\n'


@pytest.fixture
def server(make_server, repo_copy):
    return make_server(base=repo_copy)


@pytest.fixture
def shell(server, repo_copy):
    """Run one documented command line in the repo copy, against the test server."""
    (repo_copy / "blanket.json").write_text(BLANKET_JSON)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
           "BLANKET_SERVER": server.url}

    def run(command: str, task_id: int | None = None) -> str:
        command = command.replace("localhost:8773", f"localhost:{server.port}")
        if task_id is not None:
            command = command.replace("<id>", str(task_id))
        done = subprocess.run(command, shell=True, cwd=repo_copy, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        return done.stdout
    return run


def task_dir(server, task: dict) -> Path:
    return server.data_dir / "tasks" / task["type"] / str(task["id"])


def test_listing_prints_a_json_list(server, shell):
    server.client.post("/task/", {"type": "bash_task"})
    listed = json.loads(shell(CURL_LIST))
    assert isinstance(listed, list)
    assert [t["type"] for t in listed] == ["bash_task"]


def test_form_encoded_json_creates_a_bash_task(server, shell):
    task = json.loads(shell(CURL_BASH))
    assert server.client.get(f"/task/{task['id']}")["type"] == "bash_task"
    assert task["environment"] == {"PANDAS": "four", "Frogs": "5", "CATS": "2"}


def test_form_encoded_json_creates_a_python_hello_task(server, shell):
    task = json.loads(shell(CURL_HELLO))
    assert task["state"] == "QUEUED"
    assert task["environment"] == {"frogs": "5", "CATS": "2"}


def test_multipart_data_field_puts_the_file_in_the_task_directory(server, shell):
    task = json.loads(shell(CURL_FORM_DATA))
    assert task["type"] == "python_hello"
    assert (task_dir(server, task) / "blanket.json").read_text() == BLANKET_JSON


def test_multipart_data_file_puts_the_file_in_the_task_directory(server, shell):
    shell(ECHO_DATA)
    task = json.loads(shell(CURL_DATA_FILE))
    assert task["environment"] == {"frogs": "5", "CATS": "2"}
    assert (task_dir(server, task) / "blanket.json").read_text() == BLANKET_JSON


def test_delete_removes_the_task_and_its_directory(server, shell):
    task = json.loads(shell(CURL_FORM_DATA))
    assert task_dir(server, task).is_dir()
    removed = json.loads(shell(CURL_DELETE, task_id=task["id"]))
    assert removed["id"] == task["id"]
    assert server.client.request("GET", f"/task/{task['id']}", ok=(404,))[0] == 404
    assert not task_dir(server, task).exists()


def test_rm_of_the_last_five_listed_removes_the_five_oldest_queued(server, shell):
    ids = [server.client.post("/task/", {"type": "bash_task"})["id"] for _ in range(7)]
    shell(RM_NEWEST_FIVE)
    left = [t["id"] for t in server.client.get("/task/?order=oldest")]
    assert left == ids[5:]


def test_rm_of_everything_listed_with_all_empties_the_queue(server, shell):
    for _ in range(3):
        server.client.post("/task/", {"type": "bash_task"})
    shell(CURL_FORM_DATA)
    shell(RM_ALL)
    assert server.client.get("/task/?count")["count"] == 0
    assert list((server.data_dir / "tasks").glob("*/*")) == []
