"""The inbox through a real server process: files and folders dropped in `inbox/` become
tasks exactly once, complete or not, many at a time, and across a crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, wait_until

REPORT = """\
command = "echo {{ TARGET }}"

[environment.required]
TARGET = "what to report on"
"""
GOOD = 'type = "report"\n[environment]\nTARGET = "sales"\n'


def report_server(make_server, **kwargs) -> ServerProcess:
    return make_server(types={"report": REPORT}, **kwargs)


def drop(server: ServerProcess, name: str, text: str) -> Path:
    path = server.inbox_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def done(server: ServerProcess) -> list[str]:
    return names(server.inbox_dir / "done")


def failed(server: ServerProcess) -> list[str]:
    return names(server.inbox_dir / "failed")


def wait_done(server: ServerProcess, count: int = 1, timeout: float = 10) -> list[str]:
    return wait_until(lambda: len(done(server)) >= count and done(server), timeout=timeout)


def task_id(done_name: str) -> int:
    return int(done_name.split("-", 1)[0])


def test_a_dropped_file_becomes_a_queued_task(make_server) -> None:
    server = report_server(make_server)
    drop(server, "sales.toml", GOOD)
    [entry] = wait_done(server)
    assert entry.endswith("-sales.toml")
    task = server.client.get(f"/task/{task_id(entry)}")
    assert (task["type"], task["environment"]["TARGET"], task["state"]) == (
        "report", "sales", "QUEUED")
    assert names(server.inbox_dir) == ["done", "failed"]


def test_a_json_file_becomes_a_task(make_server) -> None:
    server = report_server(make_server)
    drop(server, "sales.json", '{"type": "report", "environment": {"TARGET": "eu"}}')
    [entry] = wait_done(server)
    assert server.client.get(f"/task/{task_id(entry)}")["environment"]["TARGET"] == "eu"


def test_a_file_still_being_written_waits_until_it_is_finished(make_server) -> None:
    server = report_server(make_server)
    stop_writing = threading.Event()
    path = server.inbox_dir / "slow.toml"
    # Invalid TOML until the closing quotes arrive: read early, it would land in failed/.
    stream = open(path, "w")  # noqa: SIM115
    stream.write('type = "report"\n[environment]\nTARGET = """\n')
    stream.flush()

    def keep_writing() -> None:
        while not stop_writing.wait(0.05):
            stream.write("line\n")
            stream.flush()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        drop(server, "beside.toml", GOOD)
        wait_until(lambda: any(n.endswith("-beside.toml") for n in done(server)))
        assert path.exists() and failed(server) == []
    finally:
        stop_writing.set()
        writer.join()
    stream.write('end"""\n')
    stream.close()
    entries = wait_done(server, 2)
    [slow] = [n for n in entries if n.endswith("-slow.toml")]
    target = server.client.get(f"/task/{task_id(slow)}")["environment"]["TARGET"]
    assert target.startswith("line\nline\n") and target.endswith("end")


def test_a_file_renamed_in_is_taken_and_temporary_names_are_not(make_server) -> None:
    server = report_server(make_server)
    temporary = drop(server, "sales.toml.partial", GOOD)
    ignored = [drop(server, name, GOOD) for name in (".sales.toml", "sales.toml~", "notes.txt")]
    drop(server, "beside.toml", GOOD)
    wait_done(server)
    assert temporary.exists() and all(p.exists() for p in ignored)
    temporary.rename(server.inbox_dir / "sales.toml")
    entries = wait_done(server, 2)
    assert len([n for n in entries if n.endswith("-sales.toml")]) == 1
    assert failed(server) == []


def test_a_folder_puts_its_data_files_in_the_task_directory(make_server) -> None:
    server = report_server(make_server)
    folder = server.inbox_dir / "batch"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("1,2\n")
    (folder / "scan.bin").write_bytes(bytes(range(256)) * 100)
    (folder / "task.toml").write_text(GOOD)
    [entry] = wait_done(server)
    assert entry.endswith("-batch")
    task = server.client.get(f"/task/{task_id(entry)}")
    task_dir = server.data_dir / "tasks" / "report" / str(task["id"])
    assert (task_dir / "a.csv").read_text() == "1,2\n"
    assert (task_dir / "scan.bin").read_bytes() == bytes(range(256)) * 100
    assert sorted(task["inputs"]) == ["a.csv", "scan.bin"]


@pytest.mark.parametrize(("content", "reason"), [
    ('type = "nope"\n', "unknown task type 'nope'; known types: report"),
    ('type = "report"\n', "task type 'report' needs TARGET (what to report on)"),
    ('type = "report"\nenvironment = {\n', "bad.toml:2: not valid TOML"),
    ('type = "report"\nnot_before = "tomorrow"\n', "not_before: 'tomorrow' is not a time"),
])
def test_bad_content_moves_to_failed_beside_the_reason(make_server, content, reason) -> None:
    server = report_server(make_server)
    drop(server, "bad.toml", content)
    wait_until(lambda: failed(server) == ["bad.toml", "bad.toml.error"])
    assert reason in (server.inbox_dir / "failed" / "bad.toml.error").read_text()
    assert (server.inbox_dir / "failed" / "bad.toml").read_text() == content
    assert server.client.get("/task/?count")["count"] == 0


def test_hostile_entries_move_to_failed_with_a_reason_and_the_inbox_goes_on(
        make_server) -> None:
    import os
    server = report_server(make_server)
    drop(server, "deep.json", '{"type": "report", "environment": ' + "[" * 100_000
         + "]" * 100_000 + "}")
    drop(server, "deep.toml", 'type = "report"\n[' + "a." * 100_000 + "b]\n")
    drop(server, "big.toml", GOOD + "#" * 2 * 1024 * 1024 + "\n")
    (server.inbox_dir / "gone.toml").symlink_to(server.base / "nowhere.toml")
    (server.inbox_dir / "loop.json").symlink_to("loop.json")  # stat() fails with ELOOP
    (server.inbox_dir / "elsewhere").symlink_to(server.base)  # a folder, not walked
    os.mkfifo(server.inbox_dir / "pipe.json")
    wait_until(lambda: len(failed(server)) == 14, timeout=20)
    reasons = {name: (server.inbox_dir / "failed" / f"{name}.error").read_text()
               for name in ("deep.json", "deep.toml", "big.toml", "gone.toml", "pipe.json",
                            "loop.json", "elsewhere")}
    assert reasons["deep.json"].startswith("deep.json nests too deeply")
    assert reasons["deep.toml"].startswith("deep.toml:2: a key of more than 1000 dotted parts")
    assert "a task file may be at most 1,048,576" in reasons["big.toml"]
    assert "is a symbolic link" in reasons["gone.toml"]
    assert "is not a regular file" in reasons["pipe.json"]
    assert "is a symbolic link" in reasons["loop.json"]
    assert "elsewhere is a symbolic link; drop the folder itself" in reasons["elsewhere"]
    drop(server, "good.toml", GOOD)  # and the inbox goes on
    wait_done(server)
    assert server.client.get("/task/?count")["count"] == 1
    assert "Traceback" not in server.log_text()


def test_two_hundred_files_dropped_at_once_all_become_tasks(make_server) -> None:
    server = report_server(make_server)
    for number in range(200):
        drop(server, f"r{number:03d}.toml", GOOD.replace("sales", f"region {number}"))
    entries = wait_done(server, 200, timeout=30)
    assert len(entries) == 200 and failed(server) == []
    assert len({task_id(n) for n in entries}) == 200
    assert server.client.get("/task/?count")["count"] == 200


def test_files_present_before_start_up_are_taken(make_server) -> None:
    server = report_server(make_server, start=False)
    for number in range(5):
        drop(server, f"early{number}.toml", GOOD)
    server.start()
    assert len(wait_done(server, 5)) == 5


def test_a_crash_midway_leaves_every_file_done_exactly_once(make_server) -> None:
    server = report_server(make_server, start=False)
    count = 600
    for number in range(count):
        drop(server, f"r{number:03d}.toml", GOOD.replace("sales", f"region {number}"))
    server.start()
    wait_until(lambda: len(done(server)) >= 20, timeout=30)
    server.kill()
    assert 0 < len(done(server)) < count, "the crash should come while files are being taken"
    server.start()
    entries = wait_done(server, count, timeout=60)
    tasks = server.client.get(f"/task/?limit={count + 10}")
    assert len(entries) == count and failed(server) == []
    assert names(server.inbox_dir) == ["done", "failed"]
    assert sorted(task_id(n) for n in entries) == sorted(t["id"] for t in tasks)
    regions = {t["id"]: t["environment"]["TARGET"] for t in tasks}
    assert all(regions[task_id(n)] == f"region {int(n.split('-r')[1][:3])}" for n in entries)


def test_not_before_in_a_file_holds_the_task_back(make_server) -> None:
    server = report_server(make_server)
    drop(server, "later.toml", 'type = "report"\nnot_before = "+2h"\n[environment]\nTARGET = "x"\n')
    dropped_at = time.time()
    [later] = wait_done(server)
    make_server.worker(server)
    drop(server, "now.toml", GOOD)
    now_entry = wait_until(lambda: [n for n in done(server) if n.endswith("-now.toml")])[0]
    server.wait_for_task(task_id(now_entry), states=("SUCCESS",))
    task = server.client.get(f"/task/{task_id(later)}")
    assert task["state"] == "QUEUED"
    assert task["not_before"] == pytest.approx(dropped_at + 7200, abs=5)
