"""A task's processes never outlive the worker that started them.

Each process a worker starts for a task (a check, the command) leads a session of its own;
while it runs, the worker keeps a record of it in `DATA_DIR/running/HOST/` (a data dir
shared over the network holds other machines' pids): a file whose name holds the worker's
pid and start time and, for each slot of a worker process, `slotN`, holding the session
it runs now (`PID-START`, overwritten in place for every task, blank between tasks: no
file is made or removed per task); or an empty file named for the session too
(`Ledger.add`). A guardian process the
worker forks when it starts waits on a pipe only the worker holds: the moment the worker
dies, by any signal (SIGKILL too), the pipe ends and the guardian kills every session the
worker recorded, before the server can have given the task to anyone else. A worker that
starts (a restarted one, say) kills what dead workers on its data dir left, in case their
guardian died too.

A pid is reused once its process is gone: a recorded process is the same one only if its
start time (/proc/PID/stat, in clock ticks since boot) is the recorded one, and the members
of a session all started no earlier than its leader.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from blanket.taskdir import DataDir

PROC = Path("/proc")
KILL_ROUNDS = 5  # a session that forks while it is being killed needs another look

log = structlog.get_logger("blanket.leftovers")


@dataclass(frozen=True)
class ProcStat:
    """What /proc/PID/stat says of a process that matters here."""

    pid: int
    state: str
    session: int
    start: int  # clock ticks after boot

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")  # a zombie only awaits its reaper


def parse_stat(text: str) -> ProcStat | None:
    """The fields of a /proc/PID/stat line (its command may hold spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    try:
        return ProcStat(pid=int(head.partition(" (")[0]), state=fields[0],
                        session=int(fields[3]), start=int(fields[19]))
    except (IndexError, ValueError):
        return None


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except OSError:
        return None


def all_stats() -> list[ProcStat]:
    stats = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            stats.append(stat)
    return stats


def is_running(pid: int, start: int) -> bool:
    """Whether `pid` is still the process that started at `start` (and not a zombie)."""
    stat = read_stat(pid)
    return stat is not None and stat.start == start and stat.alive


def session_members(leader: int, leader_start: int, stats: Iterable[ProcStat]) -> list[int]:
    """The live processes of the session `leader` started at `leader_start`: none when the
    leader's pid now belongs to a process that started at another time (the session ended
    and its id was reused); members started before the leader belong to something else."""
    stats = list(stats)
    if any(s.pid == leader and s.start != leader_start for s in stats):
        return []
    return [s.pid for s in stats
            if s.session == leader and s.start >= leader_start and s.alive]


def kill_session(leader: int, leader_start: int) -> int:
    """SIGKILL every process of the recorded session; how many were sent the signal."""
    killed = 0
    for _ in range(KILL_ROUNDS):
        members = session_members(leader, leader_start, all_stats())
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


class Ledger:
    """The records of what one worker process is running, in `data_dir/running/`."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.folder = records(data_dir)
        me = read_stat(os.getpid())
        # Without /proc (not Linux) nothing is recorded: there is no start time to check.
        self.owner = f"{os.getpid()}-{me.start}" if me is not None else None

    def add(self, pid: int) -> str | None:
        """Record a session leader the worker just started; the record's name."""
        stat = read_stat(pid)
        if self.owner is None or stat is None:
            return None
        name = f"{self.owner}.{pid}-{stat.start}"
        os.close(_open_record(self.folder / name))
        return name

    def slot(self, index: int) -> SlotRecord:
        """The record of slot `index` of this worker process."""
        return SlotRecord(self.folder, self.owner, index)

    def remove(self, name: str | None) -> None:
        """The recorded session has ended (its worker ended it)."""
        if name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)


SLOT_RECORD = 48  # bytes of a slot's record, written whole each time


class SlotRecord:
    """One slot's record of the session it runs, kept in one file written in place."""

    def __init__(self, folder: Path, owner: str | None, index: int):
        self.owner = owner
        self.path = folder / f"{owner}.slot{index}"
        self._fd: int | None = None

    def add(self, pid: int) -> str | None:
        """Record the session leader the slot just started; a name for `remove`."""
        stat = read_stat(pid)
        if self.owner is None or stat is None:
            return None
        if self._fd is None:
            self._fd = _open_record(self.path)
        os.pwrite(self._fd, f"{pid}-{stat.start}".encode().ljust(SLOT_RECORD), 0)
        return self.path.name

    def remove(self, name: str | None) -> None:
        """The recorded session has ended: the record is blank again."""
        if name is not None and self._fd is not None:
            os.pwrite(self._fd, b" " * SLOT_RECORD, 0)

    def close(self) -> None:
        """The slot is done: its record goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _open_record(path: Path) -> int:
    try:
        return os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)


def records(data_dir: Path) -> Path:
    """Where the workers of this machine record what they run."""
    return DataDir(data_dir).running / socket.gethostname()


def sweep(data_dir: Path, dead_owner: str | None = None) -> int:
    """Kill the sessions recorded by `dead_owner`, or by every worker of this machine that
    is no longer running; remove their records. How many processes were sent SIGKILL."""
    folder = records(data_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    killed = 0
    for name in names:
        owner, _, session = name.partition(".")
        if dead_owner is not None and owner != dead_owner:
            continue
        try:
            owner_pid, owner_start = (int(part) for part in owner.split("-"))
            if session.startswith("slot"):  # the session is what the record holds
                session = (folder / name).read_text().strip()
            leader, leader_start = (int(part) for part in session.split("-")) if session \
                else (0, 0)
        except (ValueError, OSError):
            continue  # not ours
        if dead_owner is None and is_running(owner_pid, owner_start):
            continue
        found = kill_session(leader, leader_start) if leader else 0
        if found:
            log.warning("killed what a dead worker left running", worker_pid=owner_pid,
                        session=leader, processes=found)
        killed += found
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
    return killed


def start_guardian(ledger: Ledger) -> int | None:
    """Fork the process that kills what this worker recorded once the worker is gone; the
    pipe end to keep open for as long as the worker lives. Call before any thread starts."""
    if ledger.owner is None:
        return None
    readable, writable = os.pipe()  # neither end reaches the tasks: not inheritable
    if os.fork() > 0:
        os.close(readable)
        return writable
    try:  # the guardian: its own session, so a signal to the worker's group spares it
        os.close(writable)
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while os.read(readable, 1):
            pass
        sweep(ledger.data_dir, dead_owner=ledger.owner)
    finally:
        os._exit(0)
