"""A task's process and its process group: the argv its executor runs, found once on the
task's PATH; its exit noticed the moment it happens; the whole group ended (TERM, then KILL
after a grace period) so that nothing it started outlives it."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SHELLS = frozenset({"bash", "sh"})  # executors that take the command itself (-c)
MAX_INLINE_COMMAND = 64 * 1024  # longer commands go in a file (an argument may hold 128 KiB)


def executor_argv(executor: str, script: Path, search_path: str | None = None) -> list[str]:
    """The argv that runs `script` with the type's executor, found on the task's PATH."""
    return [_program(executor, search_path), str(script)]


def inline_argv(executor: str, command: str, search_path: str | None = None) -> list[str] | None:
    """The argv that runs `command` given on the command line (`bash -c COMMAND`), saving
    the command's file; None when the executor needs a file or the command is too long for
    an argument or holds a NUL. Other users of the machine can read a process's arguments
    (/proc/PID/cmdline): the caller passes no command that holds a secret value."""
    if executor not in SHELLS or "\0" in command:
        return None
    if len(command.encode("utf-8", "surrogatepass")) > MAX_INLINE_COMMAND:
        return None
    return [_program(executor, search_path), "-c", command]


def _program(executor: str, search_path: str | None) -> str:
    program = {"bash": "bash", "sh": "/bin/sh", "python": sys.executable}.get(executor, executor)
    return find_program(program, search_path)


_found: dict[tuple[str, str | None], str] = {}


def find_program(program: str, search_path: str | None) -> str:
    """`program`'s path on `search_path` (os.defpath when None, as for exec), remembered:
    the exec would otherwise try each directory of PATH in turn, on every task. A name
    not found, or a PATH with a relative entry (which the exec reads from the task's own
    directory), leaves the name bare: the exec searches as usual, and fails with the usual
    message."""
    if "/" in program:
        return program
    key = (program, search_path)
    path = _found.get(key)
    if path is None or not os.access(path, os.X_OK):  # moved or removed since: look again
        search = os.defpath if search_path is None else search_path
        if not all(os.path.isabs(entry) for entry in search.split(os.pathsep)):
            return program
        path = shutil.which(program, path=search)
        if path is None:
            return program
        if len(_found) >= 64:
            _found.clear()
        _found[key] = path
    return path


def end_process_group(proc: subprocess.Popen, grace: float) -> None:
    """TERM whatever is left of the process's group, KILL it after `grace`; reap the leader."""
    pgid = proc.pid
    proc.poll()
    if not signal_group(pgid, signal.SIGTERM):
        proc.wait()
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)
    proc.wait()


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False when no process is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


class ExitWatch:
    """Notices a process's exit the moment it happens: a pidfd polled with a timeout, where
    Popen.wait(timeout) would sleep in growing steps and see the exit late."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.poll: select.poll | None = None
        self.pidfd: int | None = None
        try:
            self.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: fall back to Popen.wait
            return
        self.poll = select.poll()
        self.poll.register(self.pidfd, select.POLLIN)

    def within(self, seconds: float) -> bool:
        """True once the process has exited (and was reaped), waiting up to `seconds`."""
        if self.poll is not None:
            if not self.poll.poll(seconds * 1000):
                return False
            self.proc.wait()
            return True
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _group_alive(pgid: int) -> bool:
    """True while the group has a member that is not a zombie (zombies only await a reaper)."""
    if not signal_group(pgid, 0):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    return any(_is_live_member(stat, pgid) for stat in proc.glob("[0-9]*/stat"))


def _is_live_member(stat: Path, pgid: int) -> bool:
    try:
        state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
    except (OSError, ValueError):
        return False
    return int(pgrp) == pgid and state not in ("Z", "X")


def describe_status(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"
