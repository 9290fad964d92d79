"""A worker process: registers with the server, long-polls for tasks its tags allow, runs each
with the runner, heartbeats while it runs and reports the end.

A worker knows the server only by its URL: it never opens the database or the config
directory, so one on another machine works exactly like a local one.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from blanket.bundles import UnsafeBundle, extract_bundle
from blanket.client import Client, ClientError, ServerUnreachable
from blanket.errors import BlanketError
from blanket.leftovers import Ledger, start_guardian, sweep
from blanket.logs import configure_logging
from blanket.models import Task, TaskState
from blanket.outputs import MAX_LOG_CHUNK, TOKEN_HEADER, pack, shares_data_dir
from blanket.runner import LOG_STREAMS, PRIVATE_NAMES, RunResult, TaskRun
from blanket.settings import LogDestination
from blanket.tasktype import TaskType

CLAIM_WAIT = 30.0
REPORT_PATIENCE = 300.0  # how long reports keep retrying while the server is away
OUTPUT_PATIENCE = 30.0  # how long a task's outputs keep trying to reach the server
LOG_SHIP_INTERVAL = 0.5  # how often a remote worker sends what its running task printed
MAX_BACKOFF = 2.0
# A task this short ends before its first heartbeat: the claim and the started report
# already show the worker is alive, and a stop is still noticed well within a second.
FIRST_HEARTBEAT = 0.2
PARENT_ENV = "BLANKET_WORKER_PARENT"
GRACE_ENV = "BLANKET_WORKER_GRACE"
_HASH = re.compile(r"[0-9a-f]{16,64}")

log = structlog.get_logger("blanket.worker")


def _default_grace() -> float:
    return float(os.environ.get(GRACE_ENV, "30"))


@dataclass(frozen=True)
class WorkerOptions:
    """What `blanket worker` was asked to do."""

    server: str
    tags: tuple[str, ...] = ()
    processes: int = 1
    worker_id: str | None = None
    data_dir: Path = Path("var")
    daemon: bool = False
    log_file: Path = Path("var/log/worker.log")
    pid_file: Path = Path("var/worker.pid")
    verbosity: int = 0
    grace: float = field(default_factory=_default_grace)
    token: str | None = field(default=None, repr=False)
    ca: str | None = None  # how an https server's certificate is trusted
    fingerprint: str | None = None


def run_workers(options: WorkerOptions) -> None:
    """Run one worker in this process, or a supervisor of `processes` child workers."""
    from blanket.supervisor import Supervisor, daemonize

    supervised = PARENT_ENV in os.environ
    if options.daemon and not supervised:
        daemonize(options.pid_file)
    destination = str(options.log_file.absolute()) if options.daemon else "stderr"
    configure_logging((LogDestination(destination=destination),), options.verbosity)
    if options.processes > 1:
        Supervisor(options).run()
    else:
        Worker(options).run()


class Superseded(Exception):
    """The server refused a report: this attempt is no longer the task's current one."""


class GaveUp(Exception):
    """The server stayed away longer than a report's patience."""


class Reporter:
    """Posts to the server, retrying while it is unreachable (say, restarting)."""

    def __init__(self, client: Client):
        self.client = client

    def post(self, path: str, body: dict, patience: float = REPORT_PATIENCE,
             timeout: float | None = None, giving_up: threading.Event | None = None) -> Any:
        """POST with retries; raise Superseded on 404/409, GaveUp after `patience` seconds."""
        deadline = time.monotonic() + patience
        delay = 0.05
        while True:
            try:
                return self.client.post(path, body, timeout=timeout)
            except ClientError as e:
                if e.status in (404, 409, 410):
                    raise Superseded(e.message) from None
                if e.status < 500:
                    raise
                problem = e.message
            except ServerUnreachable as e:
                problem = e.message
            if time.monotonic() + delay > deadline or (giving_up and giving_up.is_set()):
                raise GaveUp(problem)
            log.debug("server away, retrying", path=path, problem=problem, delay=delay)
            if giving_up is not None:
                giving_up.wait(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


class Attempt:
    """One claimed attempt of one task as the worker sees it."""

    def __init__(self, task: Task, task_type: TaskType):
        self.task = task
        self.task_type = task_type
        self.run: TaskRun | None = None
        self.handback = False
        self.superseded: str | None = None
        self.ended = threading.Event()
        self.ran = False  # the command has ended: its result stands, it is never handed back
        self.unreported_start: dict | None = None

    @property
    def token(self) -> str:
        return self.task.token or ""

    def started(self, pid: int, directory: Path) -> None:
        """The process started: kept to send with the end report, unless the task runs long
        enough to be reported on its own (ReportQueue.started)."""
        self.unreported_start = {"pid": pid, "directory": str(directory), "at": time.time()}

    def stop(self, *, handback: bool = False, at_once: bool = False) -> None:
        """End the run early; with `handback`, report it so the server queues it again;
        `at_once` kills its processes without their grace time."""
        if handback and not self.superseded and not self.ran:
            self.handback = True
        if self.run is not None:
            self.run.stop(at_once=at_once)

    def supersede(self, reason: str) -> None:
        """The server moved on (the task was lost and retried, or removed): stop, report nothing."""
        if self.superseded is None:
            self.superseded = reason
            log.warning("attempt superseded; killing it and dropping its result",
                        task=self.task.id, attempt=self.task.attempt, reason=reason)
        # Another attempt may run already: this one's processes must not run beside it.
        self.stop(at_once=True)


class ReportQueue(threading.Thread):
    """Sends started and progress reports in order, off the runner's thread."""

    def __init__(self, reporter: Reporter):
        super().__init__(name="reports", daemon=True)
        self.reporter = reporter
        self.items: queue.Queue[Callable[[], None]] = queue.Queue()

    def started(self, attempt: Attempt) -> None:
        """Report the start of a task that did not end at once (a short task's start rides
        on its end report: no hand-off between threads for it)."""
        start, attempt.unreported_start = attempt.unreported_start, None
        if start is not None:
            self.put(attempt, "started", start, REPORT_PATIENCE)

    def put(self, attempt: Attempt, what: str, body: dict, patience: float) -> None:
        self.items.put(lambda: self.send(attempt, what, body, patience))

    def call(self, send: Callable[[], None]) -> None:
        """Run `send` in turn with the reports (it handles its own errors)."""
        self.items.put(send)

    def send(self, attempt: Attempt, what: str, body: dict, patience: float) -> None:
        if attempt.superseded:
            return
        try:
            self.reporter.post(f"/task/{attempt.task.id}/{what}",
                               {"token": attempt.token, **body}, patience)
        except Superseded as e:
            attempt.supersede(f"{what} report refused: {e}")
        except (GaveUp, BlanketError) as e:
            log.warning("report not delivered", task=attempt.task.id, report=what,
                        problem=str(e))

    def run(self) -> None:
        while True:
            send = self.items.get()
            try:
                send()
            finally:
                self.items.task_done()

    def flush(self) -> None:
        """Wait until every queued report was sent (or given up)."""
        self.items.join()


class Heartbeat(threading.Thread):
    """Long-polls the current attempt's heartbeat; stops the run when the server asks."""

    def __init__(self, client: Client, interval: float):
        super().__init__(name="heartbeat", daemon=True)
        self.client = client
        self.interval = interval
        self._cond = threading.Condition()
        self._current: Attempt | None = None

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            self._current = attempt
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            attempt = self._next_attempt()
            if not attempt.ended.wait(FIRST_HEARTBEAT):
                self._beat_until_ended(attempt)
            attempt.ended.wait()

    def _next_attempt(self) -> Attempt:
        with self._cond:
            self._cond.wait_for(lambda: self._current is not None)
            attempt = self._current
            self._current = None
        assert attempt is not None
        return attempt

    def _beat_until_ended(self, attempt: Attempt) -> None:
        delay = 0.05
        while not attempt.ended.is_set() and not attempt.superseded:
            try:
                answer = self.client.post(f"/task/{attempt.task.id}/heartbeat?wait={self.interval}",
                                          {"token": attempt.token}, timeout=self.interval + 15)
                delay = 0.05
            except ClientError as e:
                if e.status in (404, 409) and not attempt.ended.is_set():
                    attempt.supersede(f"heartbeat refused: {e.message}")
                    return
                answer = None
            except ServerUnreachable:
                answer = None
            if answer is None:
                attempt.ended.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            elif answer.get("stop"):
                attempt.stop(handback=bool(answer.get("handback")))
                attempt.ended.wait(self.interval)  # keep beating while it ends, without spinning
            elif answer.get("state") not in ("CLAIMED", "RUNNING") and not attempt.ended.is_set():
                attempt.supersede(f"the server says the task is {answer.get('state')}")


class LogShipper(threading.Thread):
    """On a worker that does not share the server's data dir: sends what the running task
    prints to the server as it grows, so its log can be read and followed there before the
    task ends (the outputs sent at the end remain the whole record)."""

    def __init__(self, client: Client, interval: float = LOG_SHIP_INTERVAL):
        super().__init__(name="log-shipper", daemon=True)
        self.client = client
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
                with open(work_dir / file_name, "rb") as log:
                    log.seek(offsets[stream])
                    chunk = log.read(MAX_LOG_CHUNK)
            except FileNotFoundError:
                continue
            if not chunk:
                continue
            try:
                answer = self.client.upload(
                    f"/task/{attempt.task.id}/log/{stream}?offset={offsets[stream]}", chunk,
                    {TOKEN_HEADER: attempt.token}, timeout=30.0,
                    content_type="application/octet-stream")
                offsets[stream] = int(answer["size"])
            except ClientError as e:
                if e.status != 409:  # superseded, or a server without this route
                    log.info("live log not taken by the server", task=attempt.task.id,
                             problem=e.message)
                    return False
                offsets[stream] = 0  # the server's copy is shorter: send it all again
            except (ServerUnreachable, OSError, KeyError, ValueError) as e:
                log.debug("live log not sent; trying again", task=attempt.task.id,
                          problem=str(e))
                return True
        return True


class BundleCache:
    """Type version bundles, fetched once per hash and extracted under `root/HASH/`."""

    def __init__(self, client: Client, root: Path):
        self.client = client
        self.root = root

    def get(self, version: str, url_path: str) -> Path:
        """The extracted bundle of `version`, fetching and unpacking it if needed."""
        if not _HASH.fullmatch(version):
            raise UnsafeBundle(f"version {version!r} is not a hash")
        target = self.root / version
        if target.is_dir():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        archive = self.root / f"{version}.tar.gz"
        if not archive.is_file():
            partial = self.root / f".{version}.{uuid.uuid4().hex}.part"
            try:
                self.client.download(url_path, str(partial))
                os.replace(partial, archive)
            finally:
                partial.unlink(missing_ok=True)
        # Unpack beside the target and rename, so no worker ever sees half a bundle.
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{version}."))
        try:
            extract_bundle(archive, staging)
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


class Worker:
    """One worker process: register, then claim and run tasks until told to stop."""

    def __init__(self, options: WorkerOptions, client: Client | None = None):
        self.options = options
        self.client = client or Client(options.server, timeout=60, token=options.token,
                                       ca=options.ca, fingerprint=options.fingerprint)
        self.reporter = Reporter(self.client)
        self.data_dir = options.data_dir.absolute()
        # Bundles (with secret defaults) and task folders below it: the owner's only.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.bundles = BundleCache(self.client, self.data_dir / "bundles")
        self.id = options.worker_id or ""
        self.stopping = threading.Event()
        self.hand_back_now = threading.Event()
        self.attempt: Attempt | None = None
        self._lock = threading.Lock()
        self.reports = ReportQueue(self.reporter)
        # Claimed tasks in hand: the next one an end report brought, and a reserve to start
        # the moment the current task ends (its end report then goes out meanwhile).
        self.held: deque[dict] = deque()
        self._long = False  # the current task outlived the runner's first poll
        self._ender = ThreadPoolExecutor(1, thread_name_prefix="end-report")
        self.ending: Future[None] | None = None  # the end report on its way
        self.heartbeat: Heartbeat | None = None
        self.shipper: LogShipper | None = None  # started at registration if it is remote
        # Read once: every task's environment starts here. A task never sees the worker's
        # own credential.
        self.base_env = {k: v for k, v in os.environ.items() if k != "BLANKET_TOKEN"}
        # A task that talks back to an https server trusts it as its worker does.
        if options.ca:
            self.base_env["BLANKET_CA"] = str(Path(options.ca).absolute())
        if options.fingerprint:
            self.base_env["BLANKET_FINGERPRINT"] = options.fingerprint
        self.sends_outputs = False  # set at registration: True on another machine
        self.ledger = Ledger(self.data_dir)
        self._guardian: int | None = None  # the pipe end that keeps the guardian waiting
        self._types: dict[tuple[str, str], TaskType] = {}  # parsed types by version hash

    def run(self) -> None:
        """Work until SIGTERM/SIGINT, `DELETE /worker/ID`, or the supervisor going away."""
        self._guardian = start_guardian(self.ledger)  # before any thread starts
        sweep(self.data_dir)  # what a worker that died here (an earlier us) left running
        self._install_signal_handlers()
        try:
            interval = self._register()
        except (GaveUp, BlanketError) as e:
            if self.stopping.is_set():  # told to stop while the server was away
                return
            log.error("could not register with the server", server=self.options.server,
                      problem=str(e))
            raise SystemExit(1) from None
        self.heartbeat = Heartbeat(self.client, interval)
        self.heartbeat.start()
        if self.sends_outputs:
            self.shipper = LogShipper(self.client)
            self.shipper.start()
        self.reports.start()
        self._watch_parent()
        delay = 0.05
        while not self.stopping.is_set():
            try:
                claim = self._next_claim()
                delay = 0.05
            except (BlanketError, GaveUp) as e:  # away, restarting, or failing for a moment
                log.warning("cannot claim; retrying", problem=str(e), delay=delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            if claim is not None:
                try:
                    self._run_claimed(claim)
                except Exception:  # even its report failed: the reaper ends the task
                    log.exception("task abandoned", task=claim.get("task", {}).get("id"))
        self._await_ending()
        self._release_held()
        self.reports.flush()  # the releases go out before we leave
        self._leave()
        log.info("worker stopped", worker=self.id)

    def _next_claim(self) -> dict | None:
        """A task in hand, else one the end report on its way brings, else a long poll."""
        with self._lock:
            if self.held:
                return self.held.popleft()
        self._await_ending()
        with self._lock:
            if self.held:
                return self.held.popleft()
        return self._claim()

    def _hold(self, claims: list[dict]) -> None:
        """Keep claimed tasks for later; give them straight back while the current task
        runs long (a reserve must not wait behind it while another worker could run it)
        or when this worker is stopping."""
        with self._lock:
            if not (self._long or self.stopping.is_set()):
                self.held.extend(claims)
                return
        for claim in claims:
            self._release(claim)

    def _release_held(self) -> None:
        with self._lock:
            claims, self.held = list(self.held), deque()
        for claim in claims:
            self._release(claim)

    def _release(self, claim: dict) -> None:
        task = claim["task"]

        def send() -> None:
            try:
                self.reporter.post(f"/task/{task['id']}/release", {"token": task["token"]},
                                   patience=OUTPUT_PATIENCE)
                log.info("reserve given back", task=task["id"])
            except Superseded as e:  # it was stopped or removed meanwhile
                log.info("reserve already gone", task=task["id"], reason=str(e))
            except (GaveUp, BlanketError) as e:  # the reaper queues it again in time
                log.warning("reserve not given back", task=task["id"], problem=str(e))

        self.reports.call(send)

    def _await_ending(self) -> None:
        """Wait for the end report on its way (and so for what it brings)."""
        ending, self.ending = self.ending, None
        if ending is not None and (problem := ending.exception()) is not None:
            log.error("end report failed", exc_info=problem)

    def _register(self) -> float:
        body = {"tags": list(self.options.tags), "host": socket.gethostname(),
                "pid": os.getpid()}
        if self.id:
            body["id"] = self.id
        answer = self.reporter.post("/worker/", body, patience=REPORT_PATIENCE,
                                    giving_up=self.stopping)
        self.id = answer["id"]
        server_id = answer.get("server_id")
        self.sends_outputs = bool(server_id) and not shares_data_dir(self.data_dir, server_id)
        log.info("worker registered", worker=self.id, tags=",".join(answer["tags"]),
                 server=self.options.server, sends_outputs=self.sends_outputs)
        return float(answer.get("heartbeat_interval") or 2.0)

    def _claim(self) -> dict | None:
        status, answer = self.client.request(
            "POST", f"/worker/{self.id}/claim?wait={CLAIM_WAIT:g}", body={},
            timeout=CLAIM_WAIT + 15, ok=(404, 410))
        if status == 410:
            log.info("the server asked this worker to stop", worker=self.id,
                     mode=(answer or {}).get("stop"))
            self.stopping.set()
            return None
        if status == 404 and not self.stopping.is_set():
            self._register()  # the server forgot us (say, a new database)
            return None
        return answer if status == 200 else None

    def _run_claimed(self, claim: dict) -> None:
        """Run one claimed task. Nothing it does may end the worker: whatever fails while
        preparing, running or reporting it ends the task FAILED saying why."""
        try:
            task = Task.from_json(claim["task"])
            attempt = Attempt(task, self._task_type(task, claim["type"]))
        except Exception as e:  # a claim this worker cannot read: refuse it, not die of it
            log.exception("claimed task unreadable", task=claim.get("task", {}).get("id"))
            self._refuse_claim(claim, f"the worker could not read the task: {_explain(e)}")
            return
        try:
            self._run_attempt(attempt, claim)
        except Exception as e:
            log.exception("task failed in the worker", task=task.id)
            attempt.ended.set()
            with self._lock:
                self.attempt = None
                self._long = False
            if not attempt.ran:
                self._finish(attempt, RunResult(TaskState.FAILED, None,
                                                f"the worker failed running it: {_explain(e)}"))

    def _refuse_claim(self, claim: dict, reason: str) -> None:
        try:
            task = claim["task"]
            self.reporter.post(f"/task/{task['id']}/finished",
                               {"token": task["token"], "state": "FAILED", "exit_code": None,
                                "error": reason}, patience=OUTPUT_PATIENCE)
        except Exception as e:  # the reaper ends it, spending an attempt
            log.error("could not refuse an unreadable task", problem=_explain(e))

    def _run_attempt(self, attempt: Attempt, claim: dict) -> None:
        task = attempt.task
        log.info("task claimed", task=task.id, type=task.type, attempt=task.attempt)
        if self.stopping.is_set():  # the claim crossed our stop: give it straight back
            self._release(claim)
            return
        work_dir = self.data_dir / "tasks" / task.type / str(task.id)
        try:
            bundle = self.bundles.get(task.version or "", claim["bundle"])
            self._fetch_inputs(task, work_dir)
        except Exception as e:
            attempt.handback = isinstance(e, ServerUnreachable)
            self._finish(attempt, RunResult(TaskState.FAILED, None,
                                            f"could not fetch the task's files: {_explain(e)}"))
            return
        attempt.run = TaskRun(
            task, attempt.task_type, bundle, work_dir, server_url=self.options.server,
            base_env=self.base_env, ledger=self.ledger,
            on_started=lambda pid: attempt.started(pid, work_dir),
            on_running=lambda: self._running(attempt),
            on_progress=lambda value, message: self.reports.put(
                attempt, "progress", {"progress": value, "message": message}, 5.0))
        self._execute(attempt)

    def _task_type(self, task: Task, data: dict) -> TaskType:
        """The claimed task's type; a version hash names one definition, so each is parsed
        once."""
        if not task.version:
            return TaskType.from_json(data)
        key = (task.type, task.version)
        found = self._types.get(key)
        if found is None:
            if len(self._types) >= 256:
                self._types.clear()
            found = self._types[key] = TaskType.from_json(data)
        return found

    def _execute(self, attempt: Attempt) -> None:
        assert attempt.run is not None and self.heartbeat is not None
        with self._lock:
            self.attempt = attempt
            self._long = False
        if attempt.task_type.checks or attempt.task_type.files:
            self.heartbeat.watch(attempt)  # preparing it may take a while: beat meanwhile
        if self.hand_back_now.is_set():
            attempt.stop(handback=True)
        try:
            result = attempt.run.run()
            attempt.ran = True
            if self.sends_outputs and not (attempt.handback or attempt.superseded):
                # Heartbeats go on while they upload: large outputs on a slow link must not
                # make the task look lost.
                self.heartbeat.watch(attempt)
                self._send_outputs(attempt, attempt.run.work_dir)
        finally:
            attempt.ended.set()
            with self._lock:
                self.attempt = None
                self._long = False  # what the end report brings is for the next task
        self.reports.flush()
        self._finish(attempt, result)

    def _send_outputs(self, attempt: Attempt, work_dir: Path) -> None:
        """Hand what the task printed and made to the server (it does not share our data
        directory); a failure is logged and the files stay here."""
        task = attempt.task
        if not work_dir.is_dir():
            return
        spool = self.data_dir / "outputs"
        try:
            spool.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=spool, prefix=f"{task.id}.",
                                             suffix=".tar.gz") as f:
                pack(work_dir, (*task.inputs, *PRIVATE_NAMES), f)
                f.flush()
                self._upload_outputs(attempt, f.name, work_dir)
        except Exception as e:  # say, a file the task made unreadable
            log.warning("outputs not packed; they stay on this machine", task=task.id,
                        path=str(work_dir), problem=str(e))

    def _upload_outputs(self, attempt: Attempt, archive: str, work_dir: Path) -> None:
        task = attempt.task
        deadline = time.monotonic() + OUTPUT_PATIENCE
        delay = 0.25
        while True:
            try:
                self.client.upload(f"/task/{task.id}/outputs", archive,
                                   {TOKEN_HEADER: attempt.token})
                return
            except ServerUnreachable as e:
                if time.monotonic() + delay > deadline or self.hand_back_now.is_set():
                    log.warning("outputs not sent; they stay on this machine", task=task.id,
                                path=str(work_dir), problem=e.message)
                    return
            except ClientError as e:
                log.warning("outputs refused; they stay on this machine", task=task.id,
                            path=str(work_dir), problem=e.message)
                return
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _running(self, attempt: Attempt) -> None:
        """The task outlived the runner's first poll: report its start and heartbeat it
        (a shorter task needs neither: its end report says it all)."""
        assert self.heartbeat is not None
        self.reports.started(attempt)
        self.heartbeat.watch(attempt)
        if self.shipper is not None and attempt.run is not None:
            self.shipper.watch(attempt, attempt.run.work_dir)
        with self._lock:
            self._long = True
        self._release_held()

    def _fetch_inputs(self, task: Task, work_dir: Path) -> None:
        """Download uploaded files a remote worker does not have (a local one shares them)."""
        for name in task.inputs:
            if "/" in name or name in ("", ".", ".."):
                raise UnsafeBundle(f"input name {name!r} is not a plain file name")
            target = work_dir / name
            if target.exists():
                continue
            work_dir.mkdir(parents=True, exist_ok=True)
            partial = work_dir / f".{name}.part"
            self.client.download(f"/task/{task.id}/files/{name}", str(partial))
            os.replace(partial, target)

    def _finish(self, attempt: Attempt, result: RunResult) -> None:
        """Report the end. With a reserve in hand the report goes out while the reserve runs
        (it says so, and claims the next reserve); otherwise it waits for its answer, which
        brings the next task and a reserve."""
        task = attempt.task
        if attempt.superseded:
            log.warning("result dropped", task=task.id, attempt=task.attempt,
                        state=result.state.value, reason=attempt.superseded)
            return
        body = {"token": attempt.token, "state": result.state.value,
                "exit_code": result.exit_code, "error": _as_utf8(result.error),
                "handback": attempt.handback}
        if attempt.unreported_start is not None:
            body["started"] = attempt.unreported_start
        self._await_ending()  # the last report's answer may bring our reserve
        if self.stopping.is_set() or attempt.handback:
            self._release_held()
            self._report_end(attempt, result, body)
            return
        with self._lock:
            reserve = self.held[0]["task"]["id"] if self.held else None
        if reserve is not None:
            body.update(claim_next=1, running=reserve)
            self.ending = self._ender.submit(self._report_end, attempt, result, body)
        else:
            body["claim_next"] = 2
            self._report_end(attempt, result, body)

    def _report_end(self, attempt: Attempt, result: RunResult, body: dict) -> None:
        task = attempt.task
        try:
            ended = self.reporter.post(f"/task/{task.id}/finished", body)
        except Superseded as e:
            log.warning("result refused; the attempt was superseded", task=task.id,
                        attempt=task.attempt, state=result.state.value, reason=str(e))
        except (GaveUp, BlanketError) as e:
            log.error("result not delivered", task=task.id, state=result.state.value,
                      problem=str(e))
        else:
            if body.get("claim_next"):
                self._hold([c for c in (ended.get("next"), ended.get("reserve")) if c])
                ended = ended["task"]
            log.info("task ended", task=task.id, state=ended["state"],
                     reported=result.state.value, handback=attempt.handback)

    def shutdown(self) -> None:
        """Stop claiming; let the running task finish for the grace time, then hand it back.
        A second call hands it back at once."""
        if self.stopping.is_set():
            self._hand_back()
            return
        self.stopping.set()
        log.info("worker stopping", worker=self.id, grace=self.options.grace)
        self._tell_server("finish")
        if not self.hand_back_now.wait(self.options.grace):
            self._hand_back()

    def _hand_back(self) -> None:
        self.hand_back_now.set()
        with self._lock:
            attempt = self.attempt
        if attempt is not None:
            log.info("handing the task back", task=attempt.task.id)
            attempt.stop(handback=True)

    def _tell_server(self, mode: str) -> None:
        """Mark this worker stopping, which also ends a pending claim at once."""
        if not self.id:
            return
        try:
            self.client.delete(f"/worker/{self.id}?mode={mode}", timeout=5)
        except BlanketError as e:
            log.debug("could not tell the server this worker is stopping", problem=str(e))

    def _leave(self) -> None:
        if not self.hand_back_now.is_set():
            self.hand_back_now.set()  # releases the grace timer
        self._tell_server("finish")

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            # Talking to the server must not happen inside a signal handler.
            threading.Thread(target=self.shutdown, name="shutdown", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        # A supervised worker hears of Ctrl-C through its supervisor's SIGTERM.
        signal.signal(signal.SIGINT,
                      signal.SIG_IGN if PARENT_ENV in os.environ else on_signal)

    def _watch_parent(self) -> None:
        """A supervised worker stops when its supervisor dies, instead of running orphaned."""
        parent = os.environ.get(PARENT_ENV)
        if not parent:
            return

        def watch() -> None:
            while os.getppid() == int(parent):
                if self.stopping.wait(1.0):
                    return
            log.warning("supervisor gone; stopping", worker=self.id)
            self.shutdown()

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _as_utf8(text: str | None) -> str | None:
    """`text` with anything UTF-8 cannot encode (lone surrogates) escaped, so a report
    carrying it is never refused."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _explain(exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return _as_utf8(message if isinstance(exc, BlanketError | OSError | UnsafeBundle)
                    else f"{type(exc).__name__}: {message}") or ""
