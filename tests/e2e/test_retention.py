"""Retention through a real server and worker: the background sweep removes ended tasks and
their folders as the rules say, never queued or running ones; failed tasks outlive the
count; a version a kept task uses stays while an unused one goes; `blanket prune --dry-run`
reports and removes nothing; bad keep values are named with file:line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, wait_until

SLEEPER = ('command = "sleep {{ SECONDS }}"\ntags = ["unix"]\nkeep_last = 2\n'
           'keep_failed = "1h"\n[environment.defaults]\nSECONDS = "0"\nCODE = "0"\n')
FAILING = 'command = "exit 3"\ntags = ["unix"]\n'
NOWHERE = 'command = "true"\ntags = ["nowhere"]\n'


def blanket(server: ServerProcess, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BLANKET_SERVER", "BLANKET_SETTINGS", "BLANKET_TOKEN")}
    done = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url, *args],
                          env={**environ, "BLANKET_TOKEN": server.admin_token},
                          capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def submit(server: ServerProcess, type_name: str, **environment: str) -> int:
    return server.client.post("/task/", {"type": type_name, "environment": environment})["id"]


def ran(server: ServerProcess, type_name: str, **environment: str) -> dict:
    return server.wait_for_task(submit(server, type_name, **environment))


def exists(server: ServerProcess, task: dict) -> bool:
    answer = server.client.request("GET", f"/task/{task['id']}", ok=(404,))[0]
    return answer == 200


def folder(server: ServerProcess, task: dict) -> Path:
    return server.data_dir / "tasks" / task["type"] / str(task["id"])


@pytest.fixture
def swept(make_server):
    """A server sweeping every second, its settings keeping 3 ended tasks per type, and a
    worker with two slots."""
    server = make_server(types={"sleeper": SLEEPER, "failing": FAILING, "nowhere": NOWHERE},
                         start=False, env={"BLANKET_PRUNE_INTERVAL": "1",
                                           "BLANKET_KEEP_PER_TYPE": "3"})
    server.start()
    make_server.worker(server, tags="unix", slots=2)
    return server


def test_the_sweep_removes_ended_tasks_and_folders_past_the_count(swept: ServerProcess):
    running = swept.wait_for_task(submit(swept, "sleeper", SECONDS="60"), states=("RUNNING",))
    queued = swept.client.get(f"/task/{submit(swept, 'nowhere')}")
    failed = ran(swept, "sleeper", SECONDS="0; exit 1")
    assert failed["state"] == "FAILED"
    done = [ran(swept, "sleeper") for _ in range(4)]
    assert all(folder(swept, t).is_dir() for t in done)
    # A batch's records go in one transaction, then their folders, oldest first.
    wait_until(lambda: not folder(swept, done[1]).exists(), timeout=20)
    # keep_last = 2 (the type's, over the settings' 3): the two oldest went, folders too.
    assert not exists(swept, done[0]) and not folder(swept, done[0]).exists()
    assert not folder(swept, done[1]).exists()
    assert all(exists(swept, t) and folder(swept, t).is_dir() for t in done[2:])
    # A failure outlives the count (keep_failed = "1h"); queued and running tasks stay.
    assert exists(swept, failed) and folder(swept, failed).is_dir()
    assert swept.client.get(f"/task/{queued['id']}")["state"] == "QUEUED"
    assert swept.client.get(f"/task/{running['id']}")["state"] == "RUNNING"


def test_the_settings_count_applies_to_types_that_say_nothing(swept: ServerProcess):
    failures = [ran(swept, "failing") for _ in range(5)]
    wait_until(lambda: not exists(swept, failures[1]), timeout=20)
    assert [exists(swept, t) for t in failures] == [False, False, True, True, True]


def test_a_version_still_used_stays_and_an_unused_one_goes(swept: ServerProcess):
    versions = swept.data_dir / "versions"
    kept = ran(swept, "sleeper")
    old = swept.client.get(f"/task/{kept['id']}")["version"]
    unused_type = swept.client.get("/task_type/nowhere")["version"]
    swept.write_type("sleeper", SLEEPER + "# edited\n")
    swept.write_type("nowhere", NOWHERE + "# edited\n")
    wait_until(lambda: swept.client.get("/task_type/nowhere")["version"] != unused_type)
    wait_until(lambda: swept.client.get("/task_type/sleeper")["version"] != old)
    # The old "nowhere" version: no task ran with it (the queued one has none yet).
    wait_until(lambda: not (versions / f"{unused_type}.tar.gz").exists(), timeout=20)
    assert (versions / f"{old}.tar.gz").is_file()
    assert exists(swept, kept)
    current = swept.client.get("/task_type/sleeper")["version"]
    assert (versions / f"{current}.tar.gz").is_file()


def test_prune_dry_run_reports_and_removes_nothing(make_server):
    server = make_server(types={"sleeper": SLEEPER})
    make_server.worker(server, tags="unix")
    tasks = [ran(server, "sleeper") for _ in range(4)]
    sizes = {t["id"]: sum(f.stat().st_size for f in folder(server, t).rglob("*")
                          if f.is_file() and not f.is_symlink()) for t in tasks[:2]}
    report = json.loads(blanket(server, "prune", "--dry-run", "--json").stdout)
    assert report["dry_run"] and report["tasks"] == 2
    assert report["types"]["sleeper"]["ids"] == [t["id"] for t in tasks[:2]]
    assert report["types"]["sleeper"]["bytes"] == sum(sizes.values())
    assert all(exists(server, t) and folder(server, t).is_dir() for t in tasks)
    text = blanket(server, "prune", "--dry-run", "--older-than", "0s").stdout
    assert "sleeper: 4 task(s)" in text and "would remove 4 task(s)" in text
    assert all(exists(server, t) for t in tasks)
    unknown = blanket(server, "prune", "--older-than", "0s", "--type", "other", ok=False)
    assert unknown.returncode != 0 and "no such type, and no task of it" in unknown.stderr
    assert "known types: sleeper" in unknown.stderr
    done = blanket(server, "prune").stdout
    assert "removed 2 task(s)" in done
    assert [exists(server, t) for t in tasks] == [False, False, True, True]


def test_prune_refuses_a_bad_duration_and_viewers(make_server):
    server = make_server(types={"sleeper": SLEEPER})
    bad = blanket(server, "prune", "--older-than", "soon", ok=False)
    assert bad.returncode != 0 and "older_than" in bad.stderr and "not a duration" in bad.stderr
    viewer = server.token("looker", "viewer")
    status = server.client.request("POST", "/prune?dry_run=1", ok=(403,))[0]
    assert status == 200
    from blanket.client import Client
    looker = Client(server.url, token=viewer)
    assert looker.request("POST", "/prune?dry_run=1", body={}, ok=(403,))[0] == 403


def test_bad_keep_values_are_named_with_file_and_line(make_server, tmp_path: Path):
    server = make_server(types={"sleeper": SLEEPER}, start=False)
    server.write_type("sloppy", 'command = "true"\nkeep = "30"\nkeep_last = 0\n')
    server.write_schedule("nightly", 'type = "sleeper"\nevery = "1h"\nkeep_failed = "later"\n')
    done = subprocess.run([sys.executable, "-m", "blanket", "validate", str(server.config_dir)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "types/sloppy.toml:2: keep: '30' is too short" in done.stderr
    assert "types/sloppy.toml:3: keep_last: 0 is too small" in done.stderr
    assert "schedules/nightly.toml:3: keep_failed: 'later' is not a duration" in done.stderr
    server.start()
    problems = server.client.get("/task_type/sloppy")
    assert "keep" in json.dumps(problems)
