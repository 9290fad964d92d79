"""WAL checkpoints for the SQLite store, off the store's lock.

SQLite's automatic checkpoint runs inside COMMIT on the committing connection: with one
connection under one lock, copying the WAL into the database file and its two fsyncs would
stall every claim, submission and read for as long. So the store turns it off
(`wal_autocheckpoint = 0`) and a `Checkpointer` does it from a connection and a thread of its
own. The store tells it of each commit (`committed`, under the store's lock, cheap); every
`WAKE_COMMITS` commits, or once `WAKE_ROWS` rows were changed (a bulk insert), it wakes the
thread, which reads how much of the WAL is not yet in the database file and, past
`THRESHOLD` bytes (SQLite's own default, 1,000 pages of 4 KiB), runs a PASSIVE checkpoint:
it copies what it can without waiting for anyone, while the store goes on. It also looks
every `BACKSTOP` seconds, woken or not.

The WAL stays bounded: SQLite writes it from its beginning again when a write transaction
begins with every frame copied and no reader on an older snapshot (the store's connection
holds none between transactions). Under steady writes that moment never comes by itself:
commits add frames while a checkpoint copies. So the thread copies again, off the lock,
while the previous pass left more than `FINISH` bytes (each pass copies only what came
during the last, so they shrink), then takes the store's lock for the last few frames
("finish": a small copy and its two syncs, instead of SQLite's whole checkpoint under the
lock), unless nothing is left. A reader on an old snapshot (a backup, an `sqlite3` shell)
keeps PASSIVE from copying past it, and the WAL grows; once what is not copied passes
`LIMIT`, a TRUNCATE checkpoint under the store's lock is tried, without waiting for the
reader (a backup reads for minutes: waiting under the lock would only stall the store), and
logged (again `RESTART_AGAIN` later if the reader stayed).

Durability is as before (walsync.py): a checkpoint syncs the WAL, copies it, syncs the
database file and only then marks the frames copied, so a commit WalSync has not yet synced
is in the synced database file before the writer can write over its frames. This connection
uses `synchronous = FULL` (checkpoints sync at NORMAL already; it never commits).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable

import structlog

from blanket.errors import is_disk_full

log = structlog.get_logger("blanket.store")

THRESHOLD = 4 * 1024 * 1024  # bytes of WAL not yet in the database file: checkpoint
LIMIT = 4 * THRESHOLD  # still not copied past this: restart the WAL under the store's lock
FINISH = 256 * 1024  # left after a pass off the lock: finish under the lock
PASSES = 3  # passes off the lock at most, before finishing under it
RESTART_AGAIN = 10.0  # seconds after a restart a reader kept from working before another
WAKE_COMMITS = 100  # commits between looks
WAKE_ROWS = 1000  # rows changed between looks (a bulk insert wakes it at once)
BACKSTOP = 5.0  # seconds between looks when nothing wakes it

# The wal-index header at the start of the -shm file (https://sqlite.org/walformat.html),
# in the machine's byte order: WalIndexHdr's szPage at 14 and mxFrame (frames in the WAL)
# at 16; WalCkptInfo's nBackfill (frames already copied into the database file) at 96.
_SHM_HEADER = struct.Struct("=I10xHI76xI")
_SHM_VERSION = 3007000


class Checkpointer:
    """A thread that checkpoints the WAL of `database` from its own connection; `lock` is
    the store's (held only to finish a checkpoint, or to restart the WAL)."""

    def __init__(self, database: str, lock: threading.RLock,
                 on_checkpoint: Callable[[float, str], None] = lambda seconds, kind: None,
                 threshold: int = THRESHOLD, limit: int = LIMIT):
        """`on_checkpoint` is told each checkpoint's seconds and kind: "passive" (off the
        lock), "finish" or "restart" (under it)."""
        self.wal_path = database + "-wal"
        self.shm_path = database + "-shm"
        self.lock = lock
        self.on_checkpoint = on_checkpoint
        self.threshold = threshold
        self.limit = limit
        self._db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        # No waiting for other connections: a restart runs under the store's lock, and the
        # readers in its way (a backup, a shell) stay far longer than any wait worth it.
        for pragma in ("synchronous = FULL", "busy_timeout = 0"):
            self._db.execute(f"PRAGMA {pragma}")
        self._commits = 0  # since the last wake-up; counted under the store's lock
        self._rows = 0
        self._wake = threading.Event()
        self._closing = False
        self._restart_after = 0.0  # monotonic time before which no restart is tried again
        self._shm: int | None = None  # the -shm file, read by `pending` (never closed early)
        self._thread = threading.Thread(target=self._run, name="blanket-checkpointer",
                                        daemon=True)
        self._thread.start()

    def committed(self, rows: int) -> None:
        """A transaction changing `rows` rows committed (call under the store's lock)."""
        self._commits += 1
        self._rows += rows
        if self._commits >= WAKE_COMMITS or self._rows >= WAKE_ROWS:
            self._commits = self._rows = 0
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and close its
        connection. Call without holding the store's lock: the thread may be waiting for it."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(BACKSTOP)
            self._wake.clear()
            if self._closing:
                return
            self.step()

    def step(self) -> None:
        """One look; what goes wrong is logged, and the next look tries again."""
        try:
            self.look()
        except Exception as e:
            if is_disk_full(e):
                log.warning("a WAL checkpoint found the disk full; trying again later",
                            error=str(e))
            else:
                log.error("a WAL checkpoint failed; trying again later", error=str(e),
                          exc_info=sys.exc_info())

    def pending(self) -> int:
        """Bytes of the WAL not yet copied into the database file: from the wal-index
        header, else (no readable -shm) the -wal file's size.

        The -shm file is read through one descriptor kept open until `release`, after the
        store's connection has closed: closing a descriptor of a file drops every POSIX
        lock the process holds on it, SQLite's included, and another process opening the
        database (a backup) would then take the wal-index for its own and truncate it
        under the server's mapping (SIGBUS)."""
        try:
            if self._shm is None:
                self._shm = os.open(self.shm_path, os.O_RDONLY | os.O_CLOEXEC)
            header = os.pread(self._shm, _SHM_HEADER.size, 0)
            version, size, frames, copied = _SHM_HEADER.unpack(header)
            if version == _SHM_VERSION:
                page = (size & 0xFE00) + ((size & 1) << 16)
                return max(0, frames - copied) * (page + 24)
        except (OSError, struct.error):
            pass
        return self.wal_size()

    def wal_size(self) -> int:
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0

    def release(self) -> None:
        """Close the -shm descriptor: call once no connection of this process is open on
        the database (see `pending`)."""
        if self._shm is not None:
            os.close(self._shm)
            self._shm = None

    def look(self) -> None:
        """Checkpoint if enough of the WAL waits, so that the next write starts it anew."""
        if self.pending() < self.threshold:
            return
        for _ in range(PASSES):
            copied = self._checkpoint("PASSIVE", "passive")
            # Finish under the lock once little is left; also when writes outpace the
            # passes and the file has outgrown LIMIT (a slow disk under heavy intake): a
            # bigger copy under the lock then, but the WAL restarts instead of growing.
            if (copied and self.pending() <= FINISH) or self.wal_size() > self.limit:
                with self.lock:  # nothing commits meanwhile
                    if self.pending() == 0 or self._checkpoint("PASSIVE", "finish"):
                        return
                break
            if not copied:
                break  # a reader is in the way
        left = self.pending()
        if left < self.limit or time.monotonic() < self._restart_after:
            return
        log.warning("the WAL could not be copied into the database file for long (a reader "
                    "holds an old snapshot?); restarting it under the store's lock",
                    wal_bytes=left)
        with self.lock:
            if not self._checkpoint("TRUNCATE", "restart"):
                # Not at every look while it stays (a long backup): each takes the lock.
                self._restart_after = time.monotonic() + RESTART_AGAIN
                log.warning("the WAL could not be restarted: a reader is in the way; trying "
                            "again later", wal_bytes=left)

    def _checkpoint(self, mode: str, kind: str) -> bool:
        """One checkpoint: whether it copied the whole WAL."""
        began = time.perf_counter()
        busy, frames, copied = self._db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
        self.on_checkpoint(time.perf_counter() - began, kind)
        return not busy and copied == frames
