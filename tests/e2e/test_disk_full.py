"""A full disk under the data dir: submissions are refused with a clear 507, nothing that was
acknowledged is lost, a task that fills the disk fails with a reason, and blanket carries on
by itself once space is freed. The data dir is a small tmpfs (mounting needs root, as CI
runs)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, small_disk_at, wait_until

FILL = 'command = "head -c 32000000 /dev/zero > big.bin"\n'  # four times the disk
ECHO = 'command = "echo hello"\n'
UPLOAD = b"x" * 256 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MB at tmp_path/full/var, the data dir of a server based at tmp_path/full
    (request it before make_server, so that the server and its workers stop before it is
    unmounted)."""
    with small_disk_at(tmp_path / "full" / "var", "8m") as data_dir:
        yield data_dir


def submit(server: ServerProcess, upload: bool = False) -> tuple[int, dict]:
    """(status, answer) of one submission of an echo task, with a file when `upload`."""
    body = {"type": "echo"}
    if upload:
        return server.client.request("POST", "/task/", ok=(507, 503), timeout=30, fields={
            "data": json.dumps(body), "input.bin": ("input.bin", UPLOAD)})
    return server.client.request("POST", "/task/", body=body, ok=(507, 503), timeout=30)


def assert_disk_full_refusal(status: int, answer: dict, data_dir: Path) -> None:
    assert status == 507, answer
    error = answer["error"]
    assert error["code"] == "disk_full"
    assert "full" in error["message"] and str(data_dir) in error["message"], error


def fill_with_submissions(server: ServerProcess, acknowledged: list[int]) -> tuple[int, dict]:
    """Submit until the store refuses (the first refusal's status and answer); every 201's id
    goes to `acknowledged`."""
    for _ in range(20_000):
        status, answer = submit(server)
        if status != 201:
            return status, answer
        acknowledged.append(answer["id"])
    raise AssertionError("20000 submissions fitted on the full disk")


def listed_ids(server: ServerProcess) -> set[int]:
    return {t["id"] for t in server.client.get("/task/?limit=10000")}


def test_a_full_data_dir_refuses_cleanly_loses_nothing_and_recovers(small_disk, make_server):
    server = make_server(types={"fill": FILL, "echo": ECHO}, base=small_disk.parent,
                         start=False).start()
    worker = make_server.worker(server)
    acknowledged = [submit(server)[1]["id"] for _ in range(5)]
    acknowledged.append(submit(server, upload=True)[1]["id"])
    for task_id in acknowledged:
        assert server.wait_for_task(task_id)["state"] == "SUCCESS"

    # A task whose output fills the disk fails, saying so; its worker lives on.
    filler = server.client.post("/task/", {"type": "fill"})["id"]
    failed = server.wait_for_task(filler, timeout=60)
    assert failed["state"] == "FAILED", failed
    assert "disk" in failed["error"] and "full" in failed["error"], failed
    assert worker.proc.poll() is None

    # Files cannot be staged, then the store fills: clear refusals, no 500, no hang.
    assert_disk_full_refusal(*submit(server, upload=True), small_disk)
    assert_disk_full_refusal(*fill_with_submissions(server, acknowledged), small_disk)
    assert_disk_full_refusal(*submit(server), small_disk)
    assert "Traceback" not in server.log_text()
    assert set(acknowledged) <= listed_ids(server)

    # Space freed (as an operator would: rm), blanket takes work again without a restart.
    (server.data_dir / "tasks" / "fill" / str(filler) / "big.bin").unlink()
    status, answer = submit(server, upload=True)
    assert status == 201, answer
    again = server.wait_for_task(answer["id"], timeout=60)
    assert again["state"] == "SUCCESS", (again["error"], again.get("attempts"))
    acknowledged.append(answer["id"])
    assert set(acknowledged) <= listed_ids(server)
    assert worker.proc.poll() is None

    # And every acknowledged task survives a restart, in a database SQLite finds sound.
    server.stop()
    with sqlite3.connect(server.data_dir / "blanket.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    server.start()
    assert set(acknowledged) <= listed_ids(server)
    wait_until(lambda: server.client.get(f"/task/{acknowledged[-1]}")["state"] == "SUCCESS")
