"""`blanket server`: the API served by granian in this process, the config watcher, the
reaper, and optionally local workers, stopped gracefully on SIGTERM or SIGINT."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from blanket.config.settings import Settings
from blanket.errors import InvalidInput
from blanket.server import cpus
from blanket.server.api.access import credentials_verify
from blanket.server.api.app import make_app
from blanket.server.api.browser import BrowserGuard, server_names
from blanket.server.api.front import RequestFront
from blanket.server.api.meter import RequestMeter
from blanket.server.httppool import BODIES_SHARE, BodyGate, Dispatcher
from blanket.server.inbox import Inbox
from blanket.server.listeners import (
    Listener,
    announce_tls,
    describe,
    make_http_servers,
    refuse_plain_exposure,
)
from blanket.server.scheduler import Scheduler
from blanket.server.services import Services, build_services

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


def default_worker_tags() -> list[str]:
    """What the server's own workers can run when worker_tags does not say: `unix` on a
    POSIX system, and each built-in executor found here (bash, sh, python), so that the
    example types run with nothing configured."""
    tags = ["unix"] if os.name == "posix" else []
    if shutil.which("bash"):
        tags.append("bash")
    if shutil.which("sh"):
        tags.append("sh")
    tags.append("python")  # the interpreter running blanket runs the python executor
    return tags


class Server:
    """Everything `blanket server` runs, started and stopped together."""

    def __init__(self, settings: Settings, services: Services | None = None):
        refuse_plain_exposure(settings)  # before anything is opened
        self.settings = settings
        self.services = services or build_services(settings)
        self.services.intake.clear_staging()
        self.admin_token = self.services.tokens.ensure_admin_file(
            settings.data_dir, {settings.url, settings.local_url})
        self.app = make_app(self.services)
        guarded = BrowserGuard(self.app, server_names(settings), settings.allowed_origins)
        metered = RequestMeter(RequestFront(guarded), self.services.metrics)
        # Short requests run on granian's threads, waiting ones on the dispatcher's pool.
        # Slow bodies without credentials may hold only so many of granian's threads: a few
        # from one address, a quarter of them from all addresses together.
        self.dispatcher = Dispatcher(metered, max(settings.threads, settings.max_threads),
                                     BodyGate(credentials_verify(self.services.tokens),
                                              most_in_all=max(1, settings.threads
                                                              // BODIES_SHARE)))
        # TCP and/or a unix socket, each a granian worker in this process.
        self.https: list[Listener] = make_http_servers(settings, self.dispatcher)
        self.http = self.https[0]
        self.fingerprint: str | None = None
        self.loops: list[BackgroundLoop] = []
        self.scheduler = Scheduler(self.services)
        self.workers: subprocess.Popen | None = None
        self.inbox: Inbox | None = None
        self._stopping_now = threading.Event()
        self._stopped = threading.Event()

    def _start_background(self) -> None:
        s = self.services
        self.loops.append(BackgroundLoop("reaper", self._reap, self.settings.heartbeat_interval))
        forget_check = min(60.0, max(0.05, self.settings.forget_workers_after / 4))
        self.loops.append(BackgroundLoop("forget workers", self._forget_workers, forget_check))
        self.loops.append(BackgroundLoop("retention", s.retention.sweep,
                                         self.settings.prune_interval))
        for loop in self.loops:
            loop.start()
        s.catalog.start_watching()
        s.deliveries.start()
        s.workflows.start_advancing()
        self.inbox = Inbox(self.settings.inbox_dir, s.intake, s.store, workflows=s.workflows)
        self.inbox.start()
        self.scheduler.start()

    def _reap(self) -> None:
        # Just after a (re)start, workers get a full period to reconnect before their
        # tasks count as lost: their heartbeats could not reach a server that was down.
        if time.time() - self.services.started >= self.settings.lost_after:
            self.services.queue.reap_lost_tasks(self.settings.lost_after)

    def _forget_workers(self) -> None:
        """Workers silent for forget_workers_after leave the list (they show as lost
        before that)."""
        self.services.registry.forget_silent(time.time() - self.settings.forget_workers_after)

    def _start_workers(self) -> None:
        if self.settings.workers <= 0:
            return
        url = self.settings.local_url
        # One process with a slot per task run at once, restarted by a supervisor if it dies.
        command = [sys.executable, "-m", "blanket", "worker", "-n", str(self.settings.workers),
                   "--restart", "--server", url, "--data-dir", str(self.settings.data_dir)]
        if url.startswith("https:") and self.fingerprint:
            command += ["--fingerprint", self.fingerprint]
        tags = list(self.settings.worker_tags) or default_worker_tags()
        if tags:
            command += ["-t", ",".join(tags)]
        with cpus.unconfined():  # its tasks are not confined with the server
            self.workers = subprocess.Popen(command)
        log.info("local workers started", count=self.settings.workers, pid=self.workers.pid,
                 tags=tags, tags_from="worker_tags" if self.settings.worker_tags else
                 "this machine (set worker_tags to choose)")

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT or `stop()`."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=self.stop).start())
        cpus.confine(self.settings.server_cpus)  # before the threads that serve start
        self._prepare_http()
        self.fingerprint = announce_tls(self.settings)
        self._start_background()
        # What was made to start (modules, catalog, app) lives as long as the server: kept
        # out of the collector's full passes, which otherwise stop every thread for tens of
        # ms while many long polls are held.
        gc.collect()
        gc.freeze()
        for http in self.https:
            http.serve()
        log.info("blanket serving", url=self.settings.url,
                 listening=[describe(http) for http in self.https],
                 tls_fingerprint=self.fingerprint,
                 config_dir=str(self.settings.config_dir.resolve()),
                 data_dir=str(self.settings.data_dir.resolve()),
                 types=len(self.services.catalog.types()),
                 anonymous=self.settings.anonymous_role, admin_token=str(self.admin_token))
        for problem in self.services.catalog.problems():
            log.warning("config problem", problem=str(problem))
        self._start_workers()
        try:
            while not self._stopping_now.wait(0.5):  # signals are handled between waits
                pass
        finally:
            self.stop()
            self._stopped.wait(10)

    def _prepare_http(self) -> None:
        """Bind every address, or none: one that cannot be bound says why and what to do."""
        for http in self.https:
            try:
                http.prepare()
            except (OSError, InvalidInput) as e:
                for prepared in self.https:
                    if prepared.ready:
                        prepared.stop()
                if isinstance(e, InvalidInput):
                    raise
                hint = ("is another server using it? Choose another port with --port (or "
                        "BLANKET_PORT, or port in blanket.toml), or another address with "
                        "--listen" if "in use" in str(e) else "check the address")
                raise InvalidInput(f"cannot listen on {describe(http)} ({e}): {hint}") from None

    def stop(self) -> None:
        """Stop everything, in order. A part that fails to stop is logged and the others
        still stop: the server must never hang on its way out."""
        if getattr(self, "_stopping", False):
            return
        self._stopping = True
        self._stopping_now.set()
        log.info("blanket stopping")
        if self.workers is not None and self.workers.poll() is None:
            self.workers.terminate()
        steps: list[tuple[str, Callable[[], object]]] = [
            ("deliveries", self.services.deliveries.stop),
            ("workflows", self.services.workflows.stop_advancing),
            ("wake-ups", self.services.wakeups.close),
            ("retention sweep", self.services.retention.stopping.set),
            *((f"loop {loop.name}", loop.stop) for loop in self.loops),
            ("scheduler", self.scheduler.stop),
            ("config watcher", self.services.catalog.stop_watching),
            ("inbox", self.inbox.stop if self.inbox is not None else lambda: None),
            *((f"http {describe(http)}", http.stop) for http in self.https),
            ("local workers", self._wait_for_workers),
            ("store", self.services.store.close),
        ]
        for name, step in steps:
            try:
                step()
            except Exception:
                log.exception("could not stop cleanly", part=name)
        self._stopped.set()
        log.info("blanket stopped")

    def _wait_for_workers(self) -> None:
        if self.workers is None:
            return
        try:
            self.workers.wait(30)
        except subprocess.TimeoutExpired:
            self.workers.kill()


def run_server(settings: Settings) -> None:
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o077:
        log.warning("the data dir can be read by other users, and it holds the store (with "
                    "secret variables) and the admin token: chmod 700 it",
                    data_dir=str(data_dir.resolve()))
    Server(settings).serve()
