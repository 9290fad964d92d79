"""The CPUs the server's threads run on (`server_cpus`). Only one thread runs Python at a time
in a process, and handing the interpreter between threads that sit on different CPUs costs
far more than between threads on one (waking the other CPU, moving what its cache holds):
measured on 2 CPUs, the server spent 15% less CPU per task kept on one. Processes the server
starts (its local workers, notification commands) get every CPU back, so the tasks they run
are never confined with it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from blanket.errors import InvalidInput

# The CPUs this process could use before it was confined: what its children get back.
_allowed: frozenset[int] | None = None
# The CPUs it was confined to.
_confined: tuple[int, ...] = ()


def confine(cpus: tuple[int, ...]) -> None:
    """Run every thread of this process, and every thread it starts later, on `cpus` (none:
    leave it as it is). A CPU the process may not use is refused, naming those it may."""
    global _allowed, _confined
    if not cpus:
        return
    if not hasattr(os, "sched_setaffinity") or not Path("/proc/self/task").is_dir():
        raise InvalidInput("server_cpus: this system cannot keep a process's threads on "
                           "chosen CPUs (it needs Linux); leave server_cpus unset")
    allowed = frozenset(os.sched_getaffinity(0))
    missing = sorted(set(cpus) - allowed)
    if missing:
        raise InvalidInput(
            f"server_cpus: CPU {', '.join(map(str, missing))} is not one this server may run on;"
            f" use some of {', '.join(map(str, sorted(allowed)))} (or leave server_cpus unset)")
    _allowed, _confined = allowed, cpus
    # Threads inherit the CPUs of the thread that starts them: set each that exists now.
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(ProcessLookupError, ValueError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def unconfined() -> Iterator[None]:
    """Start processes inside: they get every CPU the server could use before it was
    confined. A process starts on the CPUs of the thread that starts it, so the calling
    thread leaves `server_cpus` for the while: set on the process once started, the CPUs
    would come too late for what it starts at once (`sh -c "a; b"` runs `a` before the
    server's thread has the interpreter back, and `a` would stay confined for good)."""
    if _allowed is None:
        yield
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, _allowed)  # 0: this thread only
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # its CPUs went offline: it keeps them all
            os.sched_setaffinity(0, _confined)
