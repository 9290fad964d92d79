"""What a dead worker left running is found by pid *and* start time, and killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blanket.worker.leftovers import (
    Ledger,
    ProcStat,
    is_running,
    parse_stat,
    read_stat,
    records,
    session_members,
    sweep,
)
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def stat_line(pid: int, comm: str, state: str, session: int, start: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice threads itrealvalue starttime ...
    return (f"{pid} ({comm}) {state} 1 {session} {session} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 "
            f"{start} 1000 100 0")


def test_a_stat_line_is_read_whatever_its_command_name_holds():
    stat = parse_stat(stat_line(42, "a) (b c", "S", 40, 12345))
    assert stat == ProcStat(pid=42, state="S", session=40, start=12345)


def test_this_process_has_a_start_time_and_is_running():
    me = read_stat(os.getpid())
    assert me is not None and is_running(os.getpid(), me.start)


def test_a_pid_with_another_start_time_is_not_the_recorded_process():
    me = read_stat(os.getpid())
    assert me is not None and not is_running(os.getpid(), me.start + 1)


def test_the_members_of_a_recorded_session_are_found():
    stats = [ProcStat(100, "S", 100, 500), ProcStat(101, "S", 100, 510),
             ProcStat(102, "S", 7, 510)]
    assert session_members(100, 500, stats) == [100, 101]


def test_a_session_whose_leader_pid_now_has_another_start_time_is_not_killed():
    stats = [ProcStat(100, "S", 100, 900), ProcStat(101, "S", 100, 910)]
    assert session_members(100, 500, stats) == []


def test_members_left_after_the_leader_died_are_found():
    assert session_members(100, 500, [ProcStat(101, "S", 100, 510)]) == [101]


def test_processes_started_before_the_leader_and_zombies_are_not_members():
    stats = [ProcStat(101, "S", 100, 400), ProcStat(102, "Z", 100, 510)]
    assert session_members(100, 500, stats) == []


def session(tmp_path: Path) -> subprocess.Popen:
    """A session leader with a child of its own, as a task's bash and its sleep."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 60 & echo $! > child; wait"],
                            cwd=tmp_path, start_new_session=True)


def test_a_ledger_records_a_session_until_it_is_removed(tmp_path: Path):
    ledger = Ledger(tmp_path)
    proc = session(tmp_path)
    try:
        name = ledger.add(proc.pid)
        assert os.listdir(records(tmp_path)) == [name]
        ledger.remove(name)
        assert os.listdir(records(tmp_path)) == []
    finally:
        proc.kill()
        proc.wait()


def test_a_sweep_kills_the_whole_session_of_a_dead_worker(tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    ledger = Ledger(tmp_path)
    dead_pid = int(dead.stdout)
    ledger.owner = f"{dead_pid}-1"  # recorded by a worker that is gone
    proc = session(tmp_path)
    child = int(wait_until(lambda: (tmp_path / "child").is_file()
                           and (tmp_path / "child").read_text().strip()))
    ledger.add(proc.pid)
    assert sweep(tmp_path) >= 2
    proc.wait(5)
    wait_until(lambda: read_stat(child) is None or not read_stat(child).alive)  # type: ignore[union-attr]
    assert os.listdir(records(tmp_path)) == []


def test_a_sweep_leaves_the_sessions_of_a_running_worker(tmp_path: Path):
    ledger = Ledger(tmp_path)  # this process: running
    proc = session(tmp_path)
    try:
        name = ledger.add(proc.pid)
        assert sweep(tmp_path) == 0
        assert proc.poll() is None
        assert os.listdir(records(tmp_path)) == [name]
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_a_slot_record_is_written_in_place_for_each_session(tmp_path: Path):
    slot = Ledger(tmp_path).slot(2)
    first, second = session(tmp_path), session(tmp_path)
    try:
        name = slot.add(first.pid)
        path = records(tmp_path) / name
        assert name.endswith(".slot2") and path.read_text().split()[0].startswith(
            f"{first.pid}-")
        slot.remove(name)
        assert path.read_text().strip() == ""
        inode = path.stat().st_ino
        slot.add(second.pid)
        assert path.stat().st_ino == inode  # the same file: none made per task
        assert path.read_text().split()[0].startswith(f"{second.pid}-")
        slot.close()
        assert os.listdir(records(tmp_path)) == []
    finally:
        for proc in (first, second):
            os.killpg(proc.pid, 9)
            proc.wait()


def test_a_sweep_kills_the_session_a_dead_workers_slot_recorded(tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    ledger = Ledger(tmp_path)
    ledger.owner = f"{int(dead.stdout)}-1"  # recorded by a worker that is gone
    idle = ledger.slot(1)  # a slot between tasks: a blank record
    idle.remove(idle.add(os.getpid()))
    proc = session(tmp_path)
    child = int(wait_until(lambda: (tmp_path / "child").is_file()
                           and (tmp_path / "child").read_text().strip()))
    ledger.slot(2).add(proc.pid)
    assert sweep(tmp_path) >= 2
    proc.wait(5)
    wait_until(lambda: read_stat(child) is None or not read_stat(child).alive)  # type: ignore[union-attr]
    assert os.listdir(records(tmp_path)) == []
