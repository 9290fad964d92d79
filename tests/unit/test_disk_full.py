"""Each place that writes to a disk that fills up says so: the store (new tasks refused,
results still recorded in the room the reserve kept, new tasks taken again once there is
room), the intake's staging of files, the unpacking of a remote worker's outputs, and the
runner (a task that fills its disk fails saying so). The disk is a small tmpfs."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from blanket.config.tasktype import TaskType
from blanket.errors import StorageFull, is_disk_full
from blanket.models import Task, TaskFilter, TaskState
from blanket.outputs import unpack
from blanket.server.intake import Intake, TaskRequest, Upload
from blanket.store.base import Claim, NewTask, Outcome
from blanket.store.reserve import RESERVE_BYTES
from blanket.store.sqlite import SQLiteStore
from blanket.worker.runner import TaskRun
from tests.conftest import small_disk_at

pytestmark = pytest.mark.timeout(60)


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


def test_a_task_that_fills_its_disk_fails_saying_the_disk_is_full(disk: Path, tmp_path: Path):
    task = Task(id=7, type="fill", state=TaskState.CLAIMED, environment={}, tags=(),
                score=0.0, added=0.0, version="v1hash", attempt=1)
    filler = TaskType(name="fill", command="head -c 16000000 /dev/zero > big.bin")
    (tmp_path / "bundle").mkdir()
    result = TaskRun(task, filler, tmp_path / "bundle", disk / "tasks" / "fill" / "7").run()
    assert result.state is TaskState.FAILED
    assert f"the disk holding {disk}/tasks/fill/7 is full" in (result.error or "")


def test_a_task_that_cannot_even_be_prepared_on_a_full_disk_says_why(disk: Path,
                                                                     tmp_path: Path):
    fill(disk / "filler")
    task = Task(id=8, type="demo", state=TaskState.CLAIMED, environment={}, tags=(),
                score=0.0, added=0.0, version="v1hash", attempt=1)
    (tmp_path / "bundle").mkdir()
    result = TaskRun(task, TaskType(name="demo", command="echo " + "x" * 8192),
                     tmp_path / "bundle", disk / "tasks" / "demo" / "8").run()
    assert result.state is TaskState.FAILED
    assert "is full" in (result.error or "") and str(disk) in (result.error or "")


class OneType:
    """The intake's view of a catalog holding one type, demo."""

    def current_type(self, name: str) -> TaskType | None:
        return TaskType(name="demo", command="true") if name == "demo" else None

    def type_names(self) -> list[str]:
        return ["demo"]

    def base_names(self) -> list[str]:
        return []


def test_uploads_that_do_not_fit_are_refused_as_a_full_disk(disk: Path):
    store = SQLiteStore(":memory:")
    intake = Intake(store, OneType(), disk)
    upload = Upload("big.bin", io.BytesIO(b"x" * 8 * 1024 * 1024))
    with pytest.raises(StorageFull, match=f"the disk holding {disk}/tmp is full"):
        intake.submit(TaskRequest(type="demo", environment={}, uploads=(upload,)))
    assert not any((disk / "tmp").iterdir())  # nothing half-written is left
    assert store.list_tasks(TaskFilter()) == []


def test_outputs_that_do_not_fit_are_a_full_disk_not_a_bad_archive(disk: Path,
                                                                  tmp_path: Path):
    archive = tmp_path / "outputs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("big.bin")
        member.size = 8 * 1024 * 1024
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    with pytest.raises(OSError) as raised:
        unpack(archive, disk / "tasks" / "demo" / "9", disk / "tmp")
    assert is_disk_full(raised.value)
