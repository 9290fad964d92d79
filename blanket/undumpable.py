"""Keep a blanket process's environment and memory from the tasks it runs: tasks run as
the same user, who could otherwise read /proc/PID/environ of the worker (its BLANKET_TOKEN)
or the server (its database URL with a password), or attach a debugger to them.

PR_SET_DUMPABLE 0 makes /proc/PID's files root's and refuses ptrace from the same user; a
task the process starts is an execve of another program, which the kernel makes dumpable
again, so tasks themselves are not changed (they can still be debugged, dump core...)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0))


def keep_private() -> bool:
    """Make this process not dumpable; False where the system has no prctl (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    return _prctl(PR_SET_DUMPABLE, 0) == 0


def is_private() -> bool:
    """Whether this process is not dumpable (Linux)."""
    return sys.platform.startswith("linux") and _prctl(PR_GET_DUMPABLE) == 0
