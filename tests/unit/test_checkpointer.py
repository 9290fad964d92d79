"""WAL checkpoints of the SQLite store run in a thread of their own, off the store's lock;
the WAL stays bounded under steady writes; readers that keep it from being copied lead to
a restart under the lock; the thread survives errors and stops with the store."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from blanket.store import checkpointer
from blanket.store.base import NewTask
from blanket.store.sqlite import SQLiteStore


def new_task() -> NewTask:
    now = time.time()
    return NewTask(type="t", environment={"INPUT": "x" * 200}, tags=(), score=now, added=now)


class Recorder:
    """Stands in for the store's on_checkpoint: each checkpoint's kind, and an event per kind."""

    def __init__(self):
        self.kinds: list[str] = []
        self.seen = {kind: threading.Event() for kind in ("passive", "finish", "restart")}

    def __call__(self, seconds: float, kind: str) -> None:
        self.kinds.append(kind)
        self.seen[kind].set()


class Paused:
    """Stands in for the checkpointer's connection: `entered` is set as a statement matching
    `pause_on` begins, which then waits for `release`; `fail` raises instead."""

    def __init__(self, db: sqlite3.Connection, pause_on: str = "", fail: Exception | None = None):
        self.db = db
        self.pause_on = pause_on
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock_free: list[bool] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self.pause_on and self.pause_on in sql:
            self.entered.set()
            assert self.release.wait(30)
        if self.fail is not None:
            self.entered.set()
            raise self.fail
        return self.db.execute(sql, *args)

    def close(self) -> None:
        self.db.close()


class Steps:
    """Counts the checkpointer's looks (each with its logging) and waits for a condition
    checked after each."""

    def __init__(self, worker: checkpointer.Checkpointer):
        self.count = 0
        self.done = threading.Condition()
        step = worker.step

        def counted() -> None:
            step()
            with self.done:
                self.count += 1
                self.done.notify_all()

        worker.step = counted

    def wait_for(self, predicate) -> None:
        with self.done:
            assert self.done.wait_for(predicate, 30), "timed out"


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "blanket.db")
    store.on_checkpoint = Recorder()
    yield store
    store.close()


def wal_size(store: SQLiteStore) -> int:
    return os.stat(store.path + "-wal").st_size


def test_the_wal_stays_bounded_under_many_commits(store):
    """Commits keep coming while a checkpoint copies: without finishing under the lock, the
    WAL would never be written from its start again (hundreds of MB here)."""
    largest = 0
    for n in range(20_000):
        store.add_task(new_task())
        if n % 100 == 0:
            largest = max(largest, wal_size(store))
    for _ in range(100):  # bulk inserts, 1,000 tasks each
        store.add_tasks([new_task()] * 1000)
        largest = max(largest, wal_size(store))
    assert largest <= checkpointer.LIMIT
    assert store.on_checkpoint.kinds.count("passive") >= 10
    assert "restart" not in store.on_checkpoint.kinds  # no reader was in the way


def test_commits_go_on_while_a_checkpoint_runs_off_the_lock(store):
    assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    worker = store._checkpointer
    assert worker is not None
    paused = Paused(worker._db, pause_on="PASSIVE")
    worker._db = paused
    worker.threshold = 1  # any WAL at all
    store.add_task(new_task())
    worker.wake()
    assert paused.entered.wait(30)  # the checkpointer is inside its checkpoint
    done = threading.Event()
    threading.Thread(target=lambda: (store.add_task(new_task()), done.set())).start()
    assert done.wait(30), "a commit waited for the checkpoint"
    paused.release.set()
    assert store.on_checkpoint.seen["passive"].wait(30)
    assert store.get_task(2) is not None


def test_a_reader_in_the_way_leads_to_a_restart_under_the_lock(store, tmp_path):
    worker = store._checkpointer
    worker.threshold, worker.limit = 64 * 1024, 256 * 1024
    reader = sqlite3.connect(tmp_path / "blanket.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM tasks").fetchall()  # holds its snapshot
    paused = Paused(worker._db, pause_on="TRUNCATE")
    worker._db = paused
    store.add_tasks([new_task()] * 2000)  # past the limit; wakes the checkpointer
    assert paused.entered.wait(30)  # PASSIVE could not copy it all: a restart begins
    assert worker.pending() >= worker.limit
    assert not store._lock.acquire(blocking=False), "the restart runs under the store's lock"
    reader.execute("COMMIT")  # the reader goes: the restart can go on
    paused.release.set()
    assert store.on_checkpoint.seen["restart"].wait(30)
    assert wal_size(store) == 0  # TRUNCATE
    assert store.on_checkpoint.kinds[0] == "passive"
    reader.close()


def test_a_reader_that_stays_is_logged_and_the_store_goes_on(store, tmp_path):
    worker = store._checkpointer
    worker.threshold, worker.limit = 64 * 1024, 256 * 1024
    reader = sqlite3.connect(tmp_path / "blanket.db", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM tasks").fetchall()
    steps = Steps(worker)
    with capture_logs() as logs:
        store.add_tasks([new_task()] * 2000)
        worker.wake()
        steps.wait_for(lambda: any("could not be restarted" in e["event"] for e in logs))
        assert worker.pending() >= worker.limit
        looked = steps.count
        store.add_task(new_task())
        worker.wake()  # no second restart at once: each waits for the reader under the lock
        steps.wait_for(lambda: steps.count > looked)
    assert store.on_checkpoint.kinds.count("restart") == 1
    store.add_task(new_task())  # the store is not stuck
    reader.execute("COMMIT")
    reader.close()


def test_the_thread_survives_errors_and_a_full_disk(store):
    worker = store._checkpointer
    worker.threshold = 1
    real = worker._db
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    steps = Steps(worker)
    with capture_logs() as logs:
        for error in (full, RuntimeError("unexpected")):
            worker._db = Paused(real, fail=error)
            store.add_task(new_task())
            worker.wake()
            steps.wait_for(lambda error=error: any(str(error) == e.get("error") for e in logs))
    levels = {e["error"]: e["log_level"] for e in logs if "error" in e}
    assert levels == {"database or disk is full": "warning", "unexpected": "error"}
    worker._db = real
    store.add_task(new_task())
    worker.wake()
    assert store.on_checkpoint.seen["passive"].wait(30)
    assert worker._thread.is_alive()


def test_close_stops_the_thread_and_memory_stores_start_none(tmp_path):
    def checkpointers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "blanket-checkpointer"]

    before = len(checkpointers())
    stores = [SQLiteStore(tmp_path / f"{n}.db") for n in range(10)]
    assert len(checkpointers()) == before + 10
    threads = [s._checkpointer._thread for s in stores]
    for s in stores:
        s.close()
    assert not any(t.is_alive() for t in threads)
    assert len(checkpointers()) == before
    memory = SQLiteStore(":memory:")
    assert memory._checkpointer is None
    memory.close()


def test_a_failed_fsync_is_still_made_up_for_by_a_checkpoint_under_the_lock(store):
    """The failure path of walsync.py: `_checkpoint` (TRUNCATE on the store's connection)
    works with the checkpointer's connection open."""
    store.add_tasks([new_task()] * 500)
    assert store._checkpoint() == store._wal.written
    assert wal_size(store) == 0


def shm_locks_of_this_process(store: SQLiteStore) -> list[str]:
    """This process's POSIX locks on the store's -shm file, as /proc/locks lists them."""
    inode = os.stat(store.path + "-shm").st_ino
    return [line for line in open("/proc/locks").read().splitlines()
            if f":{inode} " in line and f" {os.getpid()} " in line]


def test_reading_the_wal_index_keeps_sqlite_s_locks(store, tmp_path):
    # Closing any descriptor of the -shm file would drop SQLite's locks on it, and a backup
    # opening the database then rebuilds the wal-index under the server (SIGBUS).
    store.add_task(new_task())
    held = shm_locks_of_this_process(store)
    assert held, "SQLite holds a lock on the -shm file"
    for _ in range(3):
        store._checkpointer.pending()
    assert shm_locks_of_this_process(store) == held
    other = sqlite3.connect(tmp_path / "blanket.db")  # as a backup does
    assert other.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1
    other.close()
    assert os.stat(store.path + "-shm").st_size > 3  # not taken over and cut down
    store.add_task(new_task())


def test_writes_that_outpace_the_passes_finish_under_the_lock(store, monkeypatch):
    # A slow disk under heavy intake: commits come while each pass copies, so a pass never
    # leaves the WAL all copied and the writer never starts it anew. Stood in for here by
    # passes that copy nothing (on this machine's disk real ones keep up): only the file's
    # growth past LIMIT then makes the thread finish under the lock and restart the WAL.
    worker = store._checkpointer
    worker.threshold, worker.limit = 64 * 1024, 1024 * 1024
    monkeypatch.setattr(checkpointer, "FINISH", -1)  # never little enough left
    real = worker._checkpoint
    monkeypatch.setattr(worker, "_checkpoint", lambda mode, kind: kind == "passive" or
                        real(mode, kind))
    steps = Steps(worker)
    largest = 0
    for _ in range(40):
        looks = steps.count
        store.add_tasks([new_task()] * checkpointer.WAKE_ROWS)  # wakes the thread
        steps.wait_for(lambda looks=looks: steps.count > looks)
        largest = max(largest, wal_size(store))
    assert store.on_checkpoint.seen["finish"].is_set()
    # bounded: past LIMIT by at most the one insert before the look that finished
    assert largest <= 2 * worker.limit, largest
