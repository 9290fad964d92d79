"""Schedules through a running server (and worker), in real time; and not_before on tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from blanket.client import ClientError
from tests.conftest import ServerProcess, wait_until

TYPES = {"echo": 'command = "echo hi"\ntags = ["unix"]\n'}
EVERY_SECOND = 'type = "echo"\ncron = "*/1 * * * * *"\noverlap = "allow"\n'
NEVER_SOON = 'type = "echo"\ncron = "0 0 1 1 *"\n'


def runs(server: ServerProcess, name: str) -> list[dict]:
    """The tasks of schedule `name`, oldest first."""
    return server.client.get(f"/task/?schedule={name}&order=oldest&limit=10000")


def fire_times(server: ServerProcess, name: str) -> list[str]:
    return [t["environment"]["BLANKET_FIRE_TIME"] for t in runs(server, name)]


def at_least(server: ServerProcess, name: str, count: int, timeout: float = 15) -> list[dict]:
    return wait_until(lambda: (found := runs(server, name)) and len(found) >= count and found,
                      timeout=timeout)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def shown(server: ServerProcess, name: str) -> dict | None:
    """GET /schedule/NAME, or None until the server has loaded the file."""
    status, data = server.client.request("GET", f"/schedule/{name}", ok=(404,))
    return data if status == 200 else None


@pytest.fixture
def server(make_server):
    return make_server(types=TYPES)


@pytest.fixture
def start_worker():
    """Start a `blanket worker` for a server. (make_server.worker passes --server after
    `worker`, which the worker command does not accept yet.)"""
    started: list[subprocess.Popen] = []

    def start(server: ServerProcess, tags: str = "unix", processes: int = 1) -> subprocess.Popen:
        command = [sys.executable, "-m", "blanket", "--server", server.url, "worker",
                   "-t", tags, "-n", str(processes), "--data-dir", str(server.data_dir)]
        with open(server.base / f"worker-{len(started)}.log", "ab") as log:
            started.append(subprocess.Popen(command, cwd=server.base, env=server.env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        return started[-1]

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_six_field_cron_schedule_fires_every_second_and_a_worker_runs_it(server, start_worker):
    server.write_schedule("tick", EVERY_SECOND)
    start_worker(server)
    done = wait_until(lambda: [t for t in runs(server, "tick") if t["state"] == "SUCCESS"][2:])
    stamps = fire_times(server, "tick")
    assert len(set(stamps)) == len(stamps)
    assert all(t["schedule"] == "tick" and t["type"] == "echo" for t in done)


def test_a_command_schedule_runs_its_own_command_on_a_worker(server, start_worker):
    server.write_schedule("hello", 'command = "echo scheduled $GREETING"\nevery = "1s"\n'
                                    'tags = ["unix"]\n[environment]\nGREETING = "hi"\n')
    start_worker(server)
    [task] = at_least(server, "hello", 1)[:1]
    ended = server.wait_for_task(task["id"])
    assert (ended["state"], ended["type"]) == ("SUCCESS", "schedule.hello")
    assert server.client.get(f"/task/{task['id']}/log/stdout").strip() == "scheduled hi"


def test_overlap_queue_runs_one_at_a_time_each_as_soon_as_the_last_ends(server, start_worker):
    server.write_schedule("slow", 'command = "sleep 2.5"\nevery = "1s"\noverlap = "queue"\n'
                                   'tags = ["unix"]\n')
    start_worker(server, processes=2)  # room for two runs at once, had they been submitted
    waiting = wait_until(lambda: (found := shown(server, "slow")) and found["pending_fire"],
                         timeout=10)
    assert seconds(waiting) > time.time() - 3
    wait_until(lambda: len([t for t in runs(server, "slow") if t["finished"]]) >= 3, timeout=30)
    started = sorted((t for t in runs(server, "slow") if t["started"]), key=lambda t: t["started"])
    for before, after in pairwise(started):
        assert before["finished"] is not None and after["started"] >= before["finished"]
        # It fired while the one before ran (so it was not skipped), was submitted only once
        # that one ended, and started at once.
        assert seconds(after["environment"]["BLANKET_FIRE_TIME"]) < before["finished"]
        assert after["added"] >= before["finished"]
        assert after["started"] - before["finished"] < 1.0


def test_across_a_restart_runs_are_neither_repeated_nor_dropped(server):
    server.write_schedule("tick", 'type = "echo"\nevery = "1s"\nmissed = "all"\n'
                                   'overlap = "allow"\n')
    at_least(server, "tick", 2)
    server.stop()
    stopped = time.time()
    time.sleep(3)  # the outage itself: fires fall while no server runs
    server.start()
    wait_until(lambda: seconds(fire_times(server, "tick")[-1]) > stopped + 4, timeout=15)
    fires = [seconds(s) for s in fire_times(server, "tick")]
    assert fires == [fires[0] + i for i in range(len(fires))]


def test_editing_the_file_changes_the_cadence(server):
    server.write_schedule("tick", NEVER_SOON)
    wait_until(lambda: (found := shown(server, "tick")) and found["next_fire"])
    assert runs(server, "tick") == []
    server.write_schedule("tick", EVERY_SECOND)
    at_least(server, "tick", 2)
    assert server.client.get("/schedule/tick")["definition"]["cron"] == "*/1 * * * * *"


def fenced(server: ServerProcess, before: int) -> None:
    """Wait until schedule `fence` (every second) fired twice more than `before` times, so
    at least one of its fire seconds passed after the caller's change."""
    at_least(server, "fence", before + 2)


def test_deleting_the_file_stops_the_schedule(server):
    server.write_schedule("fence", EVERY_SECOND)
    path = server.write_schedule("tick", EVERY_SECOND)
    at_least(server, "tick", 1)
    path.unlink()
    wait_until(lambda: [s["name"] for s in server.client.get("/schedule/")] == ["fence"])
    count, fence = len(runs(server, "tick")), len(runs(server, "fence"))
    fenced(server, fence)
    assert len(runs(server, "tick")) == count


def test_a_paused_schedule_stops_firing_and_fires_again_when_resumed(server):
    server.write_schedule("fence", EVERY_SECOND)
    server.write_schedule("tick", EVERY_SECOND)
    at_least(server, "tick", 1)
    paused = server.client.post("/schedule/tick/pause")
    assert (paused["state"], paused["paused"], paused["next_fire"]) == ("paused", True, None)
    count, fence = len(runs(server, "tick")), len(runs(server, "fence"))
    fenced(server, fence)
    assert len(runs(server, "tick")) == count
    assert server.client.post("/schedule/tick/resume")["state"] == "active"
    at_least(server, "tick", count + 1)


def test_get_schedule_shows_the_definition_and_next_fire_times(server):
    server.write_schedule("nightly", 'type = "echo"\ncron = "30 2 * * *"\n'
                                      'timezone = "Europe/Paris"\n')
    found = wait_until(lambda: (s := shown(server, "nightly")) and s["next_fire"] and s)
    paris = [datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(
        ZoneInfo("Europe/Paris")).strftime("%H:%M") for t in found["next_fires"]]
    assert len(paris) == 5
    assert all(t in ("02:30", "03:00") for t in paris)  # 03:00 on the night clocks go forward
    assert found["next_fire"] == found["next_fires"][0]
    assert (found["definition"]["timezone"], found["state"], found["problems"]) == \
        ("Europe/Paris", "active", [])
    [listed] = server.client.get("/schedule/")
    assert listed["next_fire"] == found["next_fire"]


def test_an_unknown_schedule_is_a_json_404(server):
    with pytest.raises(ClientError) as caught:
        server.client.post("/schedule/nope/run")
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_run_now_creates_a_task_of_the_schedule_at_once(server):
    server.write_schedule("nightly", NEVER_SOON)
    wait_until(lambda: shown(server, "nightly"))
    status, task = server.client.request("POST", "/schedule/nightly/run", body={})
    assert (status, task["schedule"], task["type"], task["state"]) == \
        (201, "nightly", "echo", "QUEUED")
    assert server.client.get("/schedule/nightly")["last_run"]["id"] == task["id"]


def blanket(*args: str, server: ServerProcess | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "blanket"]
    if server is not None:
        command += ["--server", server.url]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def test_cli_ls_schedules_shows_the_next_fire_time(server):
    server.write_schedule("nightly", 'type = "echo"\ncron = "30 2 * * *"\n')
    fire = wait_until(lambda: (found := shown(server, "nightly")) and found["next_fire"])
    local = datetime.fromisoformat(fire.replace("Z", "+00:00")).astimezone()
    out = blanket("ls", "schedules", server=server).stdout
    assert "nightly" in out and "30 2 * * *" in out
    assert local.strftime("%H:%M:%S") in out or local.strftime("%Y-%m-%d %H:%M") in out


def test_cli_schedule_run_pause_and_resume(server):
    server.write_schedule("nightly", NEVER_SOON)
    wait_until(lambda: shown(server, "nightly"))
    task_id = blanket("schedule", "run", "nightly", server=server).stdout.strip()
    assert server.client.get(f"/task/{task_id}")["schedule"] == "nightly"
    assert blanket("schedule", "pause", "nightly", server=server).stdout == "nightly: paused\n"
    assert server.client.get("/schedule/nightly")["paused"] is True
    assert blanket("schedule", "resume", "nightly", server=server).stdout == "nightly: active\n"


def test_validate_reports_a_bad_schedule_file_with_its_line_and_exits_1(tmp_path):
    (tmp_path / "types").mkdir()
    (tmp_path / "types" / "echo.toml").write_text('command = "echo hi"\n')
    (tmp_path / "schedules").mkdir()
    bad = tmp_path / "schedules" / "nightly.toml"
    bad.write_text('type = "echo"\n\ncron = "61 * * * *"\n')
    result = blanket("validate", str(tmp_path))
    assert result.returncode == 1
    assert f"{bad}:3" in result.stderr and "cron" in result.stderr


def test_a_task_with_not_before_waits_until_then(server, start_worker):
    status, task = server.client.request("POST", "/task/",
                                         body={"type": "echo", "not_before": "+2s"})
    assert status == 201 and task["not_before"] > task["added"] + 1.5
    start_worker(server)
    ended = server.wait_for_task(task["id"])
    assert ended["state"] == "SUCCESS"
    assert ended["claimed"] >= task["not_before"]


def test_not_before_accepts_iso_8601_with_an_offset(server):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    text = start.astimezone(timezone(timedelta(hours=2))).isoformat()
    task = server.client.post("/task/", {"type": "echo", "not_before": text})
    assert task["not_before"] == start.timestamp()
    assert server.client.get(f"/task/{task['id']}")["not_before"] == start.timestamp()
