"""Group commit for the SQLite store: make committed transactions durable without holding the
store's lock through an fsync.

The store runs SQLite in WAL mode with `synchronous = NORMAL`: a COMMIT appends the
transaction's frames to the `-wal` file (in the page cache) and returns without syncing.
`WalSync` then fsyncs that file outside the store lock. A caller that must not acknowledge
a change before it is on disk (a submission, a result) waits in `sync(seq)`; one fsync covers
every commit made before it began, so concurrent requests share one instead of queueing one
each behind the lock. On disk this is exactly what `synchronous = FULL` gives (FULL syncs the
WAL at each commit), while the lock is free for the next transaction meanwhile.

A transaction that may be lost in a power cut without harm (a claim, a heartbeat) does not
wait: the next sync, at the latest the next submission's, takes it to disk too.

A failed fsync (EIO, or ENOSPC on a disk that allocates late) is reported once: Linux marks
the unwritten pages clean, so the next fsync succeeds although those frames never reached
the disk, and the WAL's chained checksums make every later frame unreadable after a crash
too. So after a failure no commit is acknowledged on the word of an fsync: the store first
copies the WAL into the database file by a checkpoint, whose own syncs SQLite checks.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from blanket.errors import StorageFailed, StorageFull


class WalSync:
    """Counts commits and syncs the WAL file so that commit `seq` is on disk."""

    def __init__(self, database: str, checkpoint: Callable[[], int]):
        """`checkpoint` copies the WAL into the synced database file and returns the last
        commit it covers; it raises a StorageError when it cannot."""
        self.wal_path = database + "-wal"
        self.checkpoint = checkpoint
        self._failure: OSError | None = None  # a failed fsync no checkpoint has made up for
        self.directory = os.path.dirname(os.path.abspath(database))
        self._fd: int | None = None
        self._written = 0  # commits made; bumped under the store's lock after each COMMIT
        self._synced = 0  # commits known to be on disk
        self._wanted = 0  # the latest commit someone is waiting to see on disk
        self._lock = threading.Lock()  # one fsync at a time; later callers ride on the next

    def committed(self) -> int:
        """Count one more commit (call under the store's lock, right after COMMIT); returns
        its sequence number for `sync`."""
        self._written += 1
        return self._written

    def want(self, seq: int) -> None:
        """Commit `seq` will be waited for (call under the store's lock, before anyone can
        act on it): `sync_wanted` then waits for it too."""
        self._wanted = max(self._wanted, seq)

    @property
    def synced(self) -> int:
        return self._synced

    @property
    def written(self) -> int:
        return self._written

    def sync_wanted(self) -> None:
        """Return once every commit someone waits for is on disk, without syncing commits
        nobody waits for. A claim calls it: it never hands out a task whose submission could
        still be lost, yet makes its own way while that submission's fsync runs."""
        self.sync(self._wanted)

    def sync(self, seq: int) -> None:
        """Return once commit `seq` (and every earlier one) is on disk."""
        if self._synced >= seq:
            return
        with self._lock:
            if self._synced >= seq:  # the fsync we waited behind covered it
                return
            if self._failure is not None:
                self._synced = max(self._synced, self.checkpoint())  # raises while it fails
                self._failure = None
                if self._synced >= seq:
                    return
            target = self._written  # every commit counted so far is already in the file
            try:
                os.fdatasync(self._wal_fd())
            except OSError as e:
                self._failure = e
                raise self._refusal(e) from e
            self._synced = target

    def _refusal(self, error: OSError) -> StorageFull | StorageFailed:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull.at(self.directory, " (the database's write-ahead log could not "
                                  "be synced)")
        return StorageFailed(
            f"the disk holding {self.directory} failed to sync the database ({error.strerror});"
            " this change was not confirmed and may or may not be kept: look at the disk "
            "(dmesg), then send it again, with the same Idempotency-Key to be safe")

    def _wal_fd(self) -> int:
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            os.close(self._fd)  # the WAL was removed and made anew: sync the new one
            self._fd = None
        if self._fd is None:
            self._fd = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
            # The file's name must survive a power cut too.
            directory = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
