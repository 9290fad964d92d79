"""`blanket worker --processes P`: a supervisor that runs P worker processes (each with its
`-n` slots), restarts any that crash,
and passes SIGTERM/SIGINT on to them; and detaching for --daemon."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from blanket.worker.leftovers import sweep

if TYPE_CHECKING:
    from blanket.worker.loop import WorkerOptions

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STEADY_AFTER = 60.0  # a child that ran this long crashed for a new reason: restart it quickly

log = structlog.get_logger("blanket.supervisor")


@dataclass
class Child:
    """One supervised worker slot and the process currently filling it."""

    worker_id: str
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    done: bool = False


class Supervisor:
    """Keeps `options.processes` workers running until told to stop."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        base = options.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        # One process keeps the base id (its slots are ID-1...); several are ID-1, ID-2...
        self.children = [Child(base)] if options.processes == 1 else [
            Child(f"{base}-{n}") for n in range(1, options.processes + 1)]
        self.stopping = threading.Event()
        self.changed = threading.Event()  # a signal came: look at the children now
        self.signals = 0

    def run(self) -> None:
        """Start the children and watch them until they have all exited."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info("supervising workers", count=len(self.children))
        while not all(child.done for child in self.children):
            now = time.monotonic()
            for child in self.children:
                self._tend(child, now)
            # Not stopping.wait: once it is set, that returns at once and the loop would spin.
            self.changed.wait(0.1)
            self.changed.clear()
        log.info("all workers stopped")

    def _tend(self, child: Child, now: float) -> None:
        if child.done:
            return
        if child.proc is None:
            if self.stopping.is_set():
                child.done = True
            elif now >= child.restart_at:
                self._start(child, now)
            return
        code = child.proc.poll()
        if code is None:
            return
        child.proc = None
        if code < 0:  # killed: its guardian should have ended its tasks; make sure
            sweep(self.options.data_dir.absolute())
        if code == 0 or self.stopping.is_set():
            log.info("worker exited", worker=child.worker_id, code=code)
            child.done = True
            return
        if now - child.started > STEADY_AFTER:
            child.backoff = FIRST_BACKOFF
        child.restart_at = now + child.backoff
        log.warning("worker crashed; restarting it", worker=child.worker_id, code=code,
                    delay=child.backoff)
        child.backoff = min(child.backoff * 2, MAX_BACKOFF)

    def _start(self, child: Child, now: float) -> None:
        env = {**os.environ, "BLANKET_WORKER_PARENT": str(os.getpid()),
               "BLANKET_WORKER_GRACE": str(self.options.grace)}
        if self.options.token:  # in the environment, not on a command line others can read
            env["BLANKET_TOKEN"] = self.options.token
        child.proc = subprocess.Popen(self.child_command(child.worker_id), env=env)
        child.started = now
        log.info("worker started", worker=child.worker_id, pid=child.proc.pid)

    def child_command(self, worker_id: str) -> list[str]:
        """The command line of one child worker."""
        o = self.options
        verbosity = ["-v"] * o.verbosity if o.verbosity > 0 else ["-q"] * -o.verbosity
        command = [sys.executable, "-m", "blanket", *verbosity, "--server", o.server, "worker",
                   "--processes", "1", "-n", str(o.slots), "--id", worker_id,
                   "--data-dir", str(o.data_dir.absolute()),
                   "--log-file", str(o.log_file.absolute())]
        if o.tags:
            command += ["-t", ",".join(o.tags)]
        if o.ca:
            command += ["--ca", str(Path(o.ca).absolute())]
        if o.fingerprint:
            command += ["--fingerprint", o.fingerprint]
        if o.daemon:
            command.append("--daemon")  # a supervised child does not detach; it logs to the file
        return command

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping.set()
        self.changed.set()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)


def daemonize(pid_file: Path) -> None:
    """Detach from the terminal (double fork, new session); write our pid to `pid_file`."""
    pid_file = pid_file.absolute()
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    pid = os.getpid()

    def remove_pid_file() -> None:
        if os.getpid() == pid and pid_file.is_file() and pid_file.read_text().strip() == str(pid):
            pid_file.unlink()

    atexit.register(remove_pid_file)
