"""`blanket server`: the API on a threaded WSGI server, the config watcher, the reaper, and
optionally local workers, stopped gracefully on SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from cheroot import wsgi

from blanket.api import make_app
from blanket.app import Services, build_services
from blanket.inbox import Inbox
from blanket.scheduler import Scheduler
from blanket.settings import Settings

log = structlog.get_logger("blanket.server")


class BackgroundLoop(threading.Thread):
    """Calls `step` every `interval` seconds until stopped; a failing step is logged."""

    def __init__(self, name: str, step: Callable[[], object], interval: float):
        super().__init__(name=name, daemon=True)
        self.step = step
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.step()
            except Exception:
                log.exception("background step failed", loop=self.name)

    def stop(self) -> None:
        self.stopping.set()


class Server:
    """Everything `blanket server` runs, started and stopped together."""

    def __init__(self, settings: Settings, services: Services | None = None):
        self.settings = settings
        self.services = services or build_services(settings)
        self.app = make_app(self.services)
        self.http = wsgi.Server((settings.host, settings.port), self.app,
                                numthreads=settings.threads, server_name="blanket",
                                shutdown_timeout=1)
        self.loops: list[BackgroundLoop] = []
        self.scheduler = Scheduler(self.services)
        self.workers: subprocess.Popen | None = None
        self.inbox: Inbox | None = None
        self._stopped = threading.Event()

    def _start_background(self) -> None:
        s = self.services
        self.loops.append(BackgroundLoop("reaper", self._reap, self.settings.heartbeat_interval))
        for loop in self.loops:
            loop.start()
        s.catalog.start_watching()
        self.inbox = Inbox(self.settings.inbox_dir, s.intake, s.store)
        self.inbox.start()
        self.scheduler.start()

    def _reap(self) -> None:
        # Just after a (re)start, workers get a full period to reconnect before their
        # tasks count as lost: their heartbeats could not reach a server that was down.
        if time.time() - self.services.started >= self.settings.lost_after:
            self.services.queue.reap_lost_tasks(self.settings.lost_after)

    def _start_workers(self) -> None:
        if self.settings.workers <= 0:
            return
        command = [sys.executable, "-m", "blanket", "worker", "-n", str(self.settings.workers),
                   "--server", self.settings.url, "--data-dir", str(self.settings.data_dir)]
        if self.settings.worker_tags:
            command += ["-t", ",".join(self.settings.worker_tags)]
        self.workers = subprocess.Popen(command)
        log.info("local workers started", count=self.settings.workers, pid=self.workers.pid)

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT or `stop()`."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=self.stop).start())
        self.http.prepare()
        self._start_background()
        log.info("blanket serving", url=self.settings.url,
                 config_dir=str(self.settings.config_dir.resolve()),
                 data_dir=str(self.settings.data_dir.resolve()),
                 types=len(self.services.catalog.types()))
        for problem in self.services.catalog.problems():
            log.warning("config problem", problem=str(problem))
        self._start_workers()
        try:
            self.http.serve()
        finally:
            self.stop()
            self._stopped.wait(10)

    def stop(self) -> None:
        if getattr(self, "_stopping", False):
            return
        self._stopping = True
        log.info("blanket stopping")
        if self.workers is not None and self.workers.poll() is None:
            self.workers.terminate()
        self.services.wakeups.close()
        for loop in self.loops:
            loop.stop()
        self.scheduler.stop()
        self.services.catalog.stop_watching()
        if self.inbox is not None:
            self.inbox.stop()
        self.http.stop()
        if self.workers is not None:
            try:
                self.workers.wait(30)
            except subprocess.TimeoutExpired:
                self.workers.kill()
        self.services.store.close()
        self._stopped.set()
        log.info("blanket stopped")


def run_server(settings: Settings) -> None:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    Server(settings).serve()
