"""What a worker that does not share the server's data dir sends of its task: the logs as
the task prints them, and the whole task directory when it ends (blanket/outputs.py)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import structlog

from blanket.client import ClientError, ServerUnreachable
from blanket.outputs import pack
from blanket.protocol import MAX_LOG_CHUNK, BadMessage
from blanket.taskdir import LOG_STREAMS, PRIVATE_NAMES
from blanket.worker.attempt import Attempt
from blanket.worker.client import GaveUp, Superseded, WorkerClient

LOG_SHIP_INTERVAL = 0.5  # how often a remote worker sends what its running task printed
OUTPUT_PATIENCE = 30.0  # how long a task's outputs keep trying to reach the server

log = structlog.get_logger("blanket.worker")


class LogShipper(threading.Thread):
    """Sends what the running task prints to the server as it grows, so its log can be read
    and followed there before the task ends (the outputs sent at the end remain the whole
    record)."""

    def __init__(self, server: WorkerClient, interval: float = LOG_SHIP_INTERVAL):
        super().__init__(name="log-shipper", daemon=True)
        self.server = server
        self.interval = interval
        self._cond = threading.Condition()
        self._current: tuple[Attempt, Path] | None = None

    def watch(self, attempt: Attempt, work_dir: Path) -> None:
        with self._cond:
            self._current = (attempt, work_dir)
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._current is not None)
                assert self._current is not None
                attempt, work_dir = self._current
                self._current = None
            offsets = dict.fromkeys(LOG_STREAMS, 0)
            while not attempt.ended.wait(self.interval) and not attempt.superseded:
                if not self.ship(attempt, work_dir, offsets):
                    break

    def ship(self, attempt: Attempt, work_dir: Path, offsets: dict[str, int]) -> bool:
        """Send each log's new bytes; False once the server will take no more of them."""
        for stream, file_name in LOG_STREAMS.items():
            try:
                with open(work_dir / file_name, "rb") as out:
                    out.seek(offsets[stream])
                    chunk = out.read(MAX_LOG_CHUNK)
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            try:
                offsets[stream] = self.server.send_log(attempt.task.id, stream, offsets[stream],
                                                       chunk, attempt.token)
            except ClientError as e:
                if e.status != 409:  # superseded, or a server without this route
                    log.info("live log not taken by the server", task=attempt.task.id,
                             problem=e.message)
                    return False
                offsets[stream] = 0  # the server's copy is shorter: send it all again
            except (ServerUnreachable, OSError, BadMessage) as e:
                log.debug("live log not sent; trying again", task=attempt.task.id,
                          problem=str(e))
                return True
        return True


def send_outputs(server: WorkerClient, attempt: Attempt, work_dir: Path, spool: Path,
                 giving_up: threading.Event) -> None:
    """Hand what the task printed and made to the server (it does not share our data
    directory); a failure is logged and the files stay here."""
    task = attempt.task
    if not work_dir.is_dir():
        return
    try:
        spool.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=spool, prefix=f"{task.id}.",
                                         suffix=".tar.gz") as f:
            pack(work_dir, (*task.inputs, *PRIVATE_NAMES), f)
            f.flush()
            server.send_outputs(task.id, f.name, attempt.token, OUTPUT_PATIENCE, giving_up)
    except GaveUp as e:
        log.warning("outputs not sent; they stay on this machine", task=task.id,
                    path=str(work_dir), problem=str(e))
    except (ClientError, Superseded) as e:
        log.warning("outputs refused; they stay on this machine", task=task.id,
                    path=str(work_dir), problem=str(e))
    except Exception as e:  # say, a file the task made unreadable
        log.warning("outputs not packed; they stay on this machine", task=task.id,
                    path=str(work_dir), problem=str(e))
