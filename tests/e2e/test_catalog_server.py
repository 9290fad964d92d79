"""Task types from a watched config directory, observed over HTTP on a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blanket.client import ClientError
from tests.conftest import ROOT, wait_until

HELLO = ('description = "hi"\ncommand = "echo hello {{ NAME }}"\n'
         '[environment.defaults]\nNAME = "x"\n')


def type_info(server, name: str) -> dict | None:
    try:
        return server.client.get(f"/task_type/{name}")
    except ClientError as e:
        if e.status == 404:
            return None
        raise


def test_types_in_the_config_dir_are_served(make_server):
    server = make_server(types={"hello": HELLO})
    info = type_info(server, "hello")
    assert info["definition"]["command"] == "echo hello {{ NAME }}"
    assert len(info["version"]) == 64 and info["loaded_at"].endswith("Z")
    assert info["problems"] == []
    assert [t["name"] for t in server.client.get("/task_type/")] == ["hello"]


def test_an_added_type_is_served_without_a_restart(make_server):
    server = make_server(types={"hello": HELLO})
    server.write_type("second", 'command = "true"\n')
    wait_until(lambda: type_info(server, "second"), timeout=5)


def test_an_edit_changes_the_version(make_server):
    server = make_server(types={"hello": HELLO})
    first = type_info(server, "hello")["version"]
    server.write_type("hello", HELLO.replace("hello", "bonjour"))
    changed = wait_until(lambda: (t := type_info(server, "hello"))["version"] != first and t,
                         timeout=5)
    assert "bonjour" in changed["definition"]["command"]
    assert (server.data_dir / "versions" / f"{changed['version']}.tar.gz").is_file()


def test_a_broken_edit_keeps_the_last_good_version_and_shows_the_error(make_server):
    server = make_server(types={"hello": HELLO})
    good = type_info(server, "hello")["version"]
    server.write_type("hello", 'command = "echo"\ntimeout = "soon"\n')
    broken = wait_until(lambda: (t := type_info(server, "hello"))["problems"] and t, timeout=5)
    assert broken["version"] == good
    assert broken["problems"][0]["line"] == 2
    assert "not a duration" in broken["problems"][0]["message"]
    health = server.client.get("/health")
    assert health["config_problems"]
    task = server.client.post("/task/", {"type": "hello"})
    assert task["state"] == "QUEUED"
    server.write_type("hello", HELLO)
    fixed = wait_until(lambda: not (t := type_info(server, "hello"))["problems"] and t,
                       timeout=5)
    assert fixed["version"] == good


def test_a_deleted_type_is_gone(make_server):
    server = make_server(types={"hello": HELLO, "other": 'command = "true"\n'})
    (server.config_dir / "types" / "other.toml").unlink()
    wait_until(lambda: type_info(server, "other") is None, timeout=5)
    with pytest.raises(ClientError, match="unknown task type 'other'"):
        server.client.post("/task/", {"type": "other"})


def test_tasks_of_a_type_broken_while_the_server_was_down_wait_for_the_fix(make_server):
    """A type with no good definition since the start (its file saved broken while the
    server was down) holds its queued tasks, saying why, until the file is fixed; a deleted
    type's tasks fail, as nothing can run them."""
    server = make_server(types={"hello": HELLO, "other": 'command = "true"\n'})
    held = [server.client.post("/task/", {"type": "hello"})["id"] for _ in range(2)]
    gone = server.client.post("/task/", {"type": "other"})["id"]
    server.stop()
    server.write_type("hello", 'command = "echo"\ntimeout = "soon"\n')
    (server.config_dir / "types" / "other.toml").unlink()
    server.start()
    make_server.worker(server)
    # hello's tasks come first in line: had they been claimable, one would have gone first
    failed = server.wait_for_task(gone)
    assert failed["state"] == "FAILED" and "task type 'other' no longer exists" in str(failed)
    for task_id in held:
        task = server.client.get(f"/task/{task_id}")
        assert task["state"] == "QUEUED", task
        assert task["waiting"]["code"] == "type_broken", task
        assert "GET /task_type/hello" in task["waiting"]["message"]
    stats = server.client.get("/stats")  # the dashboard counts them as held
    assert (stats["queued_type_broken"], stats["queued_no_worker"]) == (2, 0)
    server.write_type("hello", HELLO)
    for task_id in held:
        assert server.wait_for_task(task_id, timeout=30)["state"] == "SUCCESS"
    assert server.client.get("/stats")["queued_type_broken"] == 0


def test_a_renamed_type_moves_to_its_new_name(make_server):
    server = make_server(types={"hello": HELLO})
    types = server.config_dir / "types"
    (types / "hello.toml").rename(types / "greet.toml")
    wait_until(lambda: type_info(server, "greet") and type_info(server, "hello") is None,
               timeout=5)


def test_editor_swap_files_are_not_types(make_server):
    server = make_server(types={"hello": HELLO})
    types = server.config_dir / "types"
    (types / ".hello.toml.swp").write_text("garbage = ")
    (types / "hello.toml~").write_text("garbage = ")
    server.write_type("marker", 'command = "true"\n')
    wait_until(lambda: type_info(server, "marker"), timeout=5)
    assert sorted(t["name"] for t in server.client.get("/task_type/")) == ["hello", "marker"]
    assert server.client.get("/health")["config_problems"] == []


def test_asset_changes_change_the_version_but_ignored_files_do_not(make_server, tmp_path):
    server = make_server(start=False)
    assets = server.config_dir / "types" / "assets"
    assets.mkdir()
    (assets / "a.txt").write_text("one")
    (assets / "scratch.log").write_text("noise")
    (server.config_dir / "types" / ".blanketignore").write_text("*.log\n")
    server.write_type("withfiles", 'command = "cat a.txt"\n[[files]]\nsrc = "assets/"\n')
    server.start()
    first = type_info(server, "withfiles")["version"]
    (assets / "scratch.log").write_text("more noise")
    server.write_type("marker", 'command = "true"\n')
    wait_until(lambda: type_info(server, "marker"), timeout=5)
    assert type_info(server, "withfiles")["version"] == first
    (assets / "a.txt").write_text("two")
    wait_until(lambda: type_info(server, "withfiles")["version"] != first, timeout=5)


def test_versions_are_recorded_once(make_server):
    server = make_server(types={"hello": HELLO})
    server.stop()
    server.start()
    bundles = list((server.data_dir / "versions").glob("*.tar.gz"))
    assert len(bundles) == 1


def test_unknown_type_name_is_a_json_404(make_server):
    server = make_server(types={"hello": HELLO})
    with pytest.raises(ClientError) as error:
        server.client.get("/task_type/nope")
    assert error.value.status == 404 and "no task type 'nope'" in error.value.message


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "blanket", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=60)


def test_validate_passes_the_shipped_config_and_examples():
    for folder in ("conf.d", "examples"):
        result = run_cli("validate", str(ROOT / folder))
        assert result.returncode == 0, result.stderr


def test_validate_lists_every_problem_and_exits_1(tmp_path: Path):
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    (types / "a.toml").write_text('command = "x"\ntimout = "5m"\n')
    (types / "b.toml").write_text('command = "{{ unclosed"\n')
    (types / "c.toml").write_text("command = \n")
    result = run_cli("validate", str(tmp_path / "conf.d"))
    assert result.returncode == 1
    assert "a.toml:2" in result.stderr and "timout" in result.stderr
    assert "b.toml" in result.stderr
    assert "c.toml:1" in result.stderr
    assert "3 problem(s)" in result.stderr


def test_validate_reports_a_missing_directory(tmp_path: Path):
    result = run_cli("validate", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "nowhere" in result.stderr


def test_ls_types_shows_versions_and_problems(make_server):
    server = make_server(types={"hello": HELLO, "bad": 'command = "x"\nretries = -1\n'})
    result = run_cli("--server", server.url, "ls", "types")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "DESCRIPTION"]
    assert any(line.startswith("hello") and " ok " in line for line in lines)
    assert any(line.startswith("bad") and "error" in line for line in lines)


def test_the_server_starts_without_a_settings_file_or_config_dir(make_server, tmp_path):
    server = make_server(start=False)
    (server.config_dir / "types").rmdir()
    (server.config_dir / "schedules").rmdir()
    server.config_dir.rmdir()
    server.start()
    assert server.client.get("/task_type/") == []
