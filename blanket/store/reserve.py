"""Room kept on the database's disk for the writes that must get through when it fills up.

Tasks write their output to the same disk as the store (data_dir/tasks/). When one fills it,
the store could record nothing more, not even that task's failure, nor the removals that
would free space. So the store keeps a file of reserved bytes beside the database. On the
first "disk full" it deletes that file and refuses new submissions (507) while results,
stops and removals go on in the room it freed. Once the disk has room again the file is
made anew and submissions are taken again, with no restart.
"""

from __future__ import annotations

import contextlib
import errno
import os

from blanket.errors import is_disk_full

RESERVE_BYTES = 1024 * 1024


class SpaceReserve:
    """The reserve file at `path`; `full` while it is spent (the disk filled up)."""

    def __init__(self, path: str, size: int = RESERVE_BYTES):
        self.path = path
        self.size = size
        self.directory = os.path.dirname(os.path.abspath(path))
        self.full = not self._make()

    def release(self) -> None:
        """The disk is full: free the reserved room for the store's own writes."""
        self.full = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def room_again(self) -> bool:
        """Whether new work may be taken: the reserve is in place, or the disk has room for
        it again (it is then made anew). Costs nothing until the disk has filled up."""
        if not self.full:
            return True
        disk = os.statvfs(self.directory)
        if disk.f_bavail * disk.f_frsize >= 2 * self.size and self._make():
            self.full = False
        return not self.full

    def _make(self) -> bool:
        """Make the reserve file; False when the disk has no room for it."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                _allocate(fd, self.size)
            finally:
                os.close(fd)
        except OSError as e:
            if not is_disk_full(e):
                raise
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return False
        return True


def _allocate(fd: int, size: int) -> None:
    """Give the file `size` bytes of real blocks (not a sparse file, which reserves none)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    block = bytes(64 * 1024)
    for offset in range(0, size, len(block)):
        os.pwrite(fd, block, offset)
