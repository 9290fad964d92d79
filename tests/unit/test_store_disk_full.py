"""The SQLite store on a disk that fills up: new tasks are refused with StorageFull saying
where, the results of tasks already taken are still recorded (in the room the reserve file
kept), and new tasks are taken again once there is room, without reopening the store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from blanket.errors import StorageFull
from blanket.models import TaskState
from blanket.store.base import Claim, NewTask, Outcome
from blanket.store.reserve import RESERVE_BYTES
from blanket.store.sqlite import SQLiteStore
from tests.conftest import small_disk_at


def _new_task(n: int) -> NewTask:
    return NewTask(type="echo", environment={"N": str(n)}, tags=(), score=1.0,
                   added=time.time())


def fill(path: Path) -> None:
    """Write to `path` until the disk has no room left."""
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError:
            pass
        try:  # the last few bytes a block did not fit into
            while True:
                out.write(b"\0")
        except OSError:
            pass


def add_until_refused(store: SQLiteStore) -> StorageFull:
    for n in range(10_000):
        try:
            store.add_task(_new_task(n))
        except StorageFull as refused:
            return refused
    raise AssertionError("10000 tasks fitted on a full disk")


@pytest.fixture
def disk(tmp_path: Path):
    with small_disk_at(tmp_path / "disk", "4m") as mounted:
        yield mounted


def test_a_full_disk_refuses_new_tasks_yet_records_results_and_recovers(disk: Path):
    store = SQLiteStore(disk / "blanket.db")
    try:
        queued = store.add_task(_new_task(0))
        claimed = store.claim_task(Claim("w1", frozenset(), now=time.time()))
        assert claimed is not None and claimed.id == queued.id and claimed.token
        fill(disk / "filler")

        refused = add_until_refused(store)
        assert f"the disk holding {disk} is full" in refused.message
        assert refused.status == 507
        with pytest.raises(StorageFull):  # refused up front while the disk stays full
            store.add_task(_new_task(1))

        ended = store.finish_task(claimed.id, claimed.token,
                                  Outcome(TaskState.FAILED, 1, "out of space",
                                          finished=time.time()))
        assert ended.state is TaskState.FAILED

        (disk / "filler").unlink()
        assert store.add_task(_new_task(2)).id > queued.id
        assert (disk / "blanket.db-reserve").stat().st_size == RESERVE_BYTES
    finally:
        store.close()
