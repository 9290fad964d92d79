"""Group commit: a durable change waits for an fsync of the WAL that began after its commit;
concurrent waiters share one; changes allowed to be lost in a power cut do not wait."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time

import pytest

from blanket.errors import StorageFailed, StorageFull
from blanket.store import sqlite as sqlite_store
from blanket.store import walsync
from blanket.store.base import Claim, NewTask
from blanket.store.sqlite import SQLiteStore
from blanket.store.walsync import WalSync


class FsyncLog:
    """Stands in for os.fsync: records, for each call, how many commits had been made."""

    def __init__(self, wal: WalSync | None = None):
        self.wal = wal
        self.calls: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls.append(self.wal._written if self.wal else -1)
        self.entered.set()
        self.release.wait()


def fake_fsync(monkeypatch, wal: WalSync | None = None) -> FsyncLog:
    """Stand in for fsync and fdatasync in walsync."""
    fsync = FsyncLog(wal)
    monkeypatch.setattr(walsync.os, "fsync", fsync)
    monkeypatch.setattr(walsync.os, "fdatasync", fsync)
    return fsync


@pytest.fixture
def logged_store(tmp_path, monkeypatch):
    """An SQLite store whose syncs are recorded: (store, FsyncLog)."""
    store = SQLiteStore(tmp_path / "blanket.db")
    yield store, fake_fsync(monkeypatch)
    store.close()


class Checkpoints:
    """Stands in for the store's checkpoint: records each call; fails while `failing`."""

    def __init__(self):
        self.wal: WalSync | None = None
        self.calls = 0
        self.failing = False

    def __call__(self) -> int:
        self.calls += 1
        if self.failing:
            raise StorageFailed("the disk still fails")
        assert self.wal is not None
        return self.wal.written


@pytest.fixture
def checkpoints() -> Checkpoints:
    return Checkpoints()


@pytest.fixture
def wal(tmp_path, checkpoints):
    database = tmp_path / "db.sqlite"
    (tmp_path / "db.sqlite-wal").write_bytes(b"")
    wal = WalSync(str(database), checkpoints)
    checkpoints.wal = wal
    yield wal
    wal.close()


def fail_next_fsync(monkeypatch, error: int = errno.EIO) -> None:
    """The next fdatasync fails with `error`, as Linux reports a failed write-back: once
    (later ones succeed, although the pages that failed never reached the disk)."""
    real = walsync.os.fdatasync
    failed: list[bool] = []

    def fdatasync(fd: int) -> None:
        if not failed:
            failed.append(True)
            raise OSError(error, os.strerror(error))
        real(fd)

    monkeypatch.setattr(walsync.os, "fdatasync", fdatasync)


def test_a_sync_waits_for_an_fsync_that_covers_the_commit(wal, monkeypatch):
    fsync = fake_fsync(monkeypatch, wal)
    first = wal.committed()
    wal.sync(first)
    assert wal.synced == first
    # the WAL's fsync plus its directory's, once, when the file is first opened
    assert len(fsync.calls) == 2
    wal.sync(first)  # already on disk: nothing to do
    assert len(fsync.calls) == 2
    second = wal.committed()
    wal.sync(second)
    assert wal.synced == second and len(fsync.calls) == 3


def test_concurrent_waiters_share_one_fsync(wal, monkeypatch):
    fsync = fake_fsync(monkeypatch, wal)
    wal.sync(wal.committed())  # opens the file (and syncs its directory) up front
    fsync.calls.clear()
    seqs = [wal.committed() for _ in range(20)]
    threads = [threading.Thread(target=wal.sync, args=(seq,)) for seq in seqs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert wal.synced == seqs[-1]
    assert len(fsync.calls) == 1  # all 20 commits were in the file before it began


def test_a_commit_made_during_an_fsync_waits_for_the_next_one(wal, monkeypatch):
    fsync = fake_fsync(monkeypatch, wal)
    wal.sync(wal.committed())
    fsync.calls.clear()
    fsync.entered.clear()
    fsync.release.clear()
    early = wal.committed()
    first = threading.Thread(target=wal.sync, args=(early,))
    first.start()
    assert fsync.entered.wait(10)  # an fsync is under way
    late = wal.committed()  # committed after that fsync began: it does not cover this one
    second = threading.Thread(target=wal.sync, args=(late,))
    second.start()
    fsync.release.set()
    first.join(10)
    second.join(10)
    assert fsync.calls == [early, late]
    assert wal.synced == late


def test_a_replaced_wal_file_is_opened_again(wal, tmp_path, monkeypatch):
    fake_fsync(monkeypatch, wal)
    wal.sync(wal.committed())
    (tmp_path / "db.sqlite-wal").unlink()
    (tmp_path / "db.sqlite-wal").write_bytes(b"new")
    wal.sync(wal.committed())
    assert wal._fd is not None
    assert os.fstat(wal._fd).st_ino == (tmp_path / "db.sqlite-wal").stat().st_ino


def _new_task(n: int) -> NewTask:
    return NewTask(type="echo", environment={"N": str(n)}, tags=(), score=1.0,
                   added=time.time())


def test_the_store_syncs_submissions_but_not_claims(logged_store):
    store, fsync = logged_store
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: WalSync syncs
    store.add_task(_new_task(1))
    assert fsync.calls, "a submission must reach the disk before it is acknowledged"
    after_submit = len(fsync.calls)
    claimed = store.claim_task(Claim("w1", frozenset(), {}, time.time(), {}))
    assert claimed is not None
    assert len(fsync.calls) == after_submit  # a claim does not wait for the disk
    store.add_task(_new_task(2))  # the next durable change takes the claim along
    assert len(fsync.calls) == after_submit + 1
    assert store._wal is not None and store._wal.synced == store._wal._written


def test_a_durable_change_survives_reopening(tmp_path):
    store = SQLiteStore(tmp_path / "blanket.db")
    task = store.add_task(_new_task(1))
    store.close()
    again = SQLiteStore(tmp_path / "blanket.db")
    try:
        assert again.get_task(task.id) is not None
    finally:
        again.close()


def test_a_claim_waits_until_the_task_it_hands_out_is_on_disk(logged_store):
    store, fsync = logged_store
    store.add_task(_new_task(0))  # the WAL file is open from here on
    fsync.release.clear()
    fsync.entered.clear()
    woken = threading.Event()
    store.on_change = lambda *topics: woken.set()
    submit = threading.Thread(target=store.add_task, args=(_new_task(1),))
    submit.start()
    assert woken.wait(10)  # claims are woken at the commit, before the fsync ends
    assert fsync.entered.wait(10)
    claimed: list = []
    claim = threading.Thread(target=lambda: claimed.append(store.claim_task(
        Claim("w1", frozenset(), {}, time.time(), {}))))
    claim.start()
    claim.join(0.2)
    assert claim.is_alive(), "the claim handed out a task before its submission was synced"
    fsync.release.set()
    claim.join(10)
    submit.join(10)
    assert claimed and claimed[0] is not None


def test_without_wal_mode_sqlite_syncs_each_commit_itself(tmp_path, monkeypatch):
    # A file system where SQLite cannot use WAL (journal_mode stays "delete"): no group
    # commit, and synchronous = FULL instead.
    real_connect = sqlite3.connect

    class NoWal:
        def __init__(self, *args, **kwargs):
            self.db = real_connect(*args, **kwargs)

        def execute(self, sql, *args):
            if sql == "PRAGMA journal_mode = WAL":
                return self.db.execute("PRAGMA journal_mode = DELETE")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __setattr__(self, name, value):
            if name == "db":
                object.__setattr__(self, name, value)
            else:
                setattr(self.db, name, value)

    monkeypatch.setattr(sqlite_store.sqlite3, "connect", NoWal)
    store = SQLiteStore(tmp_path / "blanket.db")
    try:
        assert store._wal is None
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        task = store.add_task(_new_task(1))
        assert store.get_task(task.id) is not None
        assert not (tmp_path / "blanket.db-wal").exists()
    finally:
        store.close()


def test_after_a_failed_fsync_no_commit_is_confirmed_until_a_checkpoint_covers_it(
        wal, checkpoints, monkeypatch):
    wal.sync(wal.committed())  # the file is open
    first, second = wal.committed(), wal.committed()
    fail_next_fsync(monkeypatch)
    with pytest.raises(StorageFailed, match="not confirmed"):
        wal.sync(first)
    # Another waiter on the same fsync: the next fsync would succeed, but it proves nothing
    # about frames whose write-back failed.
    wal.sync(second)
    assert checkpoints.calls == 1 and wal.synced == second


def test_while_the_checkpoint_fails_nothing_is_confirmed(wal, checkpoints, monkeypatch):
    wal.sync(wal.committed())
    seq = wal.committed()
    fail_next_fsync(monkeypatch)
    with pytest.raises(StorageFailed):
        wal.sync(seq)
    checkpoints.failing = True
    with pytest.raises(StorageFailed):
        wal.sync(seq)
    checkpoints.failing = False
    later = wal.committed()
    wal.sync(later)
    assert checkpoints.calls == 2 and wal.synced == later


def test_an_fsync_that_finds_the_disk_full_says_so(wal, monkeypatch, tmp_path):
    wal.sync(wal.committed())
    fail_next_fsync(monkeypatch, errno.ENOSPC)
    with pytest.raises(StorageFull, match=f"the disk holding {tmp_path} is full"):
        wal.sync(wal.committed())


def test_the_store_recovers_from_a_failed_fsync_through_a_real_checkpoint(tmp_path,
                                                                          monkeypatch):
    store = SQLiteStore(tmp_path / "blanket.db")
    try:
        store.add_task(_new_task(0))
        fail_next_fsync(monkeypatch)
        with pytest.raises(StorageFailed):
            store.add_task(_new_task(1))
        third = store.add_task(_new_task(2))
        assert store._wal is not None and store._wal.synced == store._wal.written
    finally:
        store.close()
    again = SQLiteStore(tmp_path / "blanket.db")
    try:
        assert again.get_task(third.id) is not None
    finally:
        again.close()
