"""A worker process: N slots, each a worker as the server sees it (registered, claiming the
tasks its tags allow, running one at a time with the runner, heartbeating while it runs and
reporting the end). The slots share the process's connection to the server, its bundle
cache and its ledger, and their end reports leave together when they are ready together
(blanket/worker/exchanger.py).

A worker knows the server only by its URL: it never opens the database or the config
directory, so one on another machine works exactly like a local one. What it says to the
server is blanket/protocol.py, through blanket/worker/client.py.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from blanket import protocol as P
from blanket.client import Client, ClientError, ServerUnreachable
from blanket.config.settings import LogDestination
from blanket.config.tasktype import TaskType
from blanket.errors import BlanketError
from blanket.logs import configure_logging
from blanket.models import TaskState
from blanket.outputs import shares_data_dir
from blanket.taskdir import DataDir
from blanket.worker.attempt import Attempt, explain
from blanket.worker.backoff import Backoff
from blanket.worker.claims import Claims
from blanket.worker.client import Forgotten, GaveUp, WorkerClient
from blanket.worker.exchanger import Exchanger
from blanket.worker.fetching import BundleCache, fetch_inputs
from blanket.worker.heartbeat import Heartbeat
from blanket.worker.leftovers import Ledger, start_guardian, sweep
from blanket.worker.reports import ReportQueue
from blanket.worker.runner import RunResult, TaskRun
from blanket.worker.shipping import OUTPUT_PATIENCE, LogShipper, send_outputs

PARENT_ENV = "BLANKET_WORKER_PARENT"
GRACE_ENV = "BLANKET_WORKER_GRACE"

log = structlog.get_logger("blanket.worker")


def _default_grace() -> float:
    return float(os.environ.get(GRACE_ENV, "30"))


@dataclass(frozen=True)
class WorkerOptions:
    """What `blanket worker` was asked to do."""

    server: str
    tags: tuple[str, ...] = ()
    processes: int = 1  # supervised worker processes (blanket/worker/supervisor.py)
    slots: int = 1  # tasks each process runs at once
    restart: bool = False  # a supervisor restarts the process if it crashes
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
    """Run one worker process here, or a supervisor of `processes` child processes."""
    from blanket.worker.supervisor import Supervisor, daemonize

    supervised = PARENT_ENV in os.environ
    if options.daemon and not supervised:
        daemonize(options.pid_file)
    destination = str(options.log_file.absolute()) if options.daemon else "stderr"
    configure_logging((LogDestination(destination=destination),), options.verbosity)
    if (options.processes > 1 or options.restart) and not supervised:
        Supervisor(options).run()
    else:
        Worker(options).run()


def slot_ids(options: WorkerOptions) -> list[str]:
    """The ids of a process's slots: its --id (or none: the server makes one) for a single
    slot; ID-1 ... ID-N for several, ID defaulting to HOST-PID."""
    if options.slots <= 1:
        return [options.worker_id or ""]
    base = options.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    return [f"{base}-{n}" for n in range(1, options.slots + 1)]


class Worker:
    """One worker process: its slots, and what they share (the connection to the server,
    the bundle cache, the ledger of running tasks, the process's signals)."""

    def __init__(self, options: WorkerOptions, client: Client | None = None):
        self.options = options
        self.server = WorkerClient(client or Client(
            options.server, timeout=60, token=options.token, ca=options.ca,
            fingerprint=options.fingerprint, maxsize=max(8, 3 * options.slots + 2)))
        self.data_dir = options.data_dir.absolute()
        # Bundles (with secret defaults) and task folders below it: the owner's only.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.bundles = BundleCache(self.server, DataDir(self.data_dir).bundles)
        self.stopping = threading.Event()  # the whole process stops
        self.done = threading.Event()  # every slot has left
        # Read once: every task's environment starts here. A task never sees the worker's
        # own credential.
        self.base_env = {k: v for k, v in os.environ.items() if k != "BLANKET_TOKEN"}
        # A task that talks back to an https server trusts it as its worker does.
        if options.ca:
            self.base_env["BLANKET_CA"] = str(Path(options.ca).absolute())
        if options.fingerprint:
            self.base_env["BLANKET_FINGERPRINT"] = options.fingerprint
        self.ledger = Ledger(self.data_dir)
        self.exchanger = Exchanger(self.server)
        self._guardian: int | None = None  # the pipe end that keeps the guardian waiting
        self.slots = [Slot(self, slot_id, index)
                      for index, slot_id in enumerate(slot_ids(options), start=1)]

    @property
    def slot(self) -> Slot:
        """The first slot (the only one of a one-slot worker)."""
        return self.slots[0]

    def run(self) -> None:
        """Work until SIGTERM/SIGINT, `DELETE /worker/ID` for every slot, or the supervisor
        going away."""
        self._guardian = start_guardian(self.ledger)  # before any thread starts
        sweep(self.data_dir)  # what a worker that died here (an earlier us) left running
        self._install_signal_handlers()
        self._watch_parent()
        threads = [threading.Thread(target=slot.run, name=f"slot {n}", daemon=True)
                   for n, slot in enumerate(self.slots[1:], start=2)]
        for thread in threads:
            thread.start()
        try:
            self.slot.run()
            for thread in threads:
                thread.join()
        finally:
            self.done.set()
        if any(slot.failed for slot in self.slots):
            raise SystemExit(1)

    def shutdown(self) -> None:
        """Stop claiming; let the running tasks finish for the grace time, then hand them
        back. A second call hands them back at once."""
        if self.stopping.is_set():
            self._hand_back()
            return
        self.stopping.set()
        log.info("worker stopping", workers=",".join(s.id for s in self.slots),
                 grace=self.options.grace)
        for slot in self.slots:
            slot.stop_claiming()
        if not self.done.wait(self.options.grace):
            self._hand_back()

    def _hand_back(self) -> None:
        for slot in self.slots:
            slot.hand_back()

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
                if self.done.wait(1.0):
                    return
            log.warning("supervisor gone; stopping")
            self.shutdown()

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Slot:
    """One slot of a worker process: registered as a worker of its own, it claims and runs
    one task at a time."""

    def __init__(self, process: Worker, worker_id: str, index: int = 1):
        self.process = process
        self.options = process.options
        self.server = process.server
        self.data_dir = process.data_dir
        self.bundles = process.bundles
        self.base_env = process.base_env
        # What this slot runs, recorded in place for the guardian (no file made per task).
        self.ledger = process.ledger.slot(index)
        self.exchanger = process.exchanger
        self.id = worker_id
        self.stopping = threading.Event()  # this slot stops claiming
        self._claim_key: str | None = None  # the claim asked until its answer comes
        self.hand_back_now = threading.Event()
        self.failed = False  # could not register
        self.attempt: Attempt | None = None
        self._lock = threading.Lock()
        self.reports = ReportQueue(self.server)
        self.claims = Claims(self.server, self.reports, self.stopping, self.exchanger,
                             lambda: self.id)
        self.heartbeat: Heartbeat | None = None
        self.shipper: LogShipper | None = None  # started at registration if it is remote
        self.sends_outputs = False  # set at registration: True on another machine
        self._types: dict[tuple[str, str], TaskType] = {}  # parsed types by version hash

    def run(self) -> None:
        """Register, then work until the slot is told to stop."""
        try:
            interval = self._register()
        except (GaveUp, BlanketError, ValueError) as e:
            if self.stopping.is_set():  # told to stop while the server was away
                return
            log.error("could not register with the server", server=self.options.server,
                      problem=str(e))
            self.failed = True
            # the other slots stop too, and the process exits 1
            threading.Thread(target=self.process.shutdown, daemon=True).start()
            return
        self.heartbeat = Heartbeat(self.server, interval)
        self.heartbeat.start()
        if self.sends_outputs:
            self.shipper = LogShipper(self.server)
            self.shipper.start()
        self.reports.start()
        self._work()
        self.claims.send_pending()
        self._give_back_unanswered_claim()
        self.claims.release_all()
        self.reports.flush()  # the releases go out before we leave
        self._leave()
        self.ledger.close()
        log.info("worker stopped", worker=self.id)

    def stop_claiming(self) -> None:
        """Stop claiming (the running task goes on), and tell the server."""
        self.stopping.set()
        self._tell_server("finish")

    def hand_back(self) -> None:
        """Stop the running task and hand it back to the queue."""
        self.hand_back_now.set()
        with self._lock:
            attempt = self.attempt
        if attempt is not None:
            log.info("handing the task back", task=attempt.task.id)
            attempt.stop(handback=True)

    def _work(self) -> None:
        """Claim and run tasks until told to stop."""
        backoff = Backoff(until=self.stopping)
        while not self.stopping.is_set():
            try:
                claim = self.claims.take() or self._claim()
                backoff.reset()
            except (BlanketError, GaveUp, ValueError) as e:  # away, restarting, or failing
                log.warning("cannot claim; retrying", problem=str(e), delay=backoff.delay)
                backoff.pause()
                continue
            if claim is not None:
                try:
                    self._run_claimed(claim)
                except Exception:  # even its report failed: the reaper ends the task
                    log.exception("task abandoned", task=claim.task.id)

    def _register(self) -> float:
        request = P.Register(tags=self.options.tags, host=socket.gethostname(),
                             pid=os.getpid(), id=self.id or None)
        answer = self.server.register(request, giving_up=self.stopping)
        self.id = answer.id
        self.sends_outputs = bool(answer.server_id) and not shares_data_dir(
            self.data_dir, answer.server_id or "")
        log.info("worker registered", worker=self.id, tags=",".join(answer.tags),
                 server=self.options.server, sends_outputs=self.sends_outputs)
        return answer.heartbeat_interval or 2.0

    def _claim(self) -> P.Claimed | None:
        # The same key until an answer comes: a claim whose answer was lost (the server was
        # killed, the connection broke) is answered again rather than left claimed.
        if self._claim_key is None:
            self._claim_key = uuid.uuid4().hex
        try:
            answer = self.server.claim(self.id, key=self._claim_key)
            self._claim_key = None
        except ClientError as e:
            if e.status < 500:  # answered: the next claim is a new one
                self._claim_key = None
            raise
        except Forgotten:
            self._claim_key = None
            if not self.stopping.is_set():
                self._register()  # the server forgot us (say, a new database)
            return None
        if isinstance(answer, P.Leave):
            log.info("the server asked this worker to stop", worker=self.id, mode=answer.stop)
            self.stopping.set()
            return None
        return answer

    def _give_back_unanswered_claim(self) -> None:
        """A claim whose answer never came when this slot stopped (the connection broke as
        SIGTERM came): asked once more with its key, the server gives its task back to the
        queue now, its attempt unspent (410: this worker is stopping), rather than leave it
        claimed until it counts as lost. A task answered after all is given back too."""
        key, self._claim_key = self._claim_key, None
        if key is None or not self.id:
            return
        try:
            # as long as telling the server this worker stops may take (`_tell_server`)
            answer = self.server.claim(self.id, wait=0, key=key, patience=5.0)
        except (BlanketError, GaveUp, ValueError, Forgotten) as e:
            log.warning("could not ask again for a claim whose answer never came; a task "
                        "the server took for it counts as lost in time", worker=self.id,
                        problem=str(e))
            return
        if isinstance(answer, P.Claimed):
            self.claims.release(answer)

    def _run_claimed(self, claim: P.Claimed) -> None:
        """Run one claimed task. Nothing it does may end the worker: whatever fails while
        preparing, running or reporting it ends the task FAILED saying why."""
        task = claim.task
        try:
            attempt = Attempt(task, self._task_type(claim))
        except Exception as e:  # a claim this worker cannot read: refuse it, not die of it
            log.exception("claimed task unreadable", task=task.id)
            self._refuse_claim(claim, f"the worker could not read the task: {explain(e)}")
            return
        try:
            self._run_attempt(attempt, claim)
        except Exception as e:
            log.exception("task failed in the worker", task=task.id)
            attempt.ended.set()
            self._current(None)
            if not attempt.ran:
                self.claims.finish(attempt, RunResult(
                    TaskState.FAILED, None, f"the worker failed running it: {explain(e)}"))

    def _refuse_claim(self, claim: P.Claimed, reason: str) -> None:
        report = P.Finished(token=claim.task.token or "", state="FAILED", error=reason)
        try:
            self.server.finish(claim.task.id, report, patience=OUTPUT_PATIENCE)
        except Exception as e:  # the reaper ends it, spending an attempt
            log.error("could not refuse an unreadable task", problem=explain(e))

    def _run_attempt(self, attempt: Attempt, claim: P.Claimed) -> None:
        task = attempt.task
        log.debug("task claimed", task=task.id, type=task.type, attempt=task.attempt)
        if self.stopping.is_set():  # the claim crossed our stop: give it straight back
            self.claims.release(claim)
            return
        work_dir = DataDir(self.data_dir).task(task.type, task.id)
        if task.inputs or not self.bundles.cached(task.version or ""):
            self._send_pending()  # the previous task's end need not wait for downloads
        try:
            bundle = self.bundles.get(task.version or "", claim.bundle)
            fetch_inputs(self.server, task, work_dir)
        except Exception as e:
            attempt.handback = isinstance(e, ServerUnreachable)
            self.claims.finish(attempt, RunResult(
                TaskState.FAILED, None, f"could not fetch the task's files: {explain(e)}"))
            return
        attempt.run = TaskRun(
            task, attempt.task_type, bundle, work_dir, server_url=self.options.server,
            base_env=self.base_env, ledger=self.ledger,
            on_started=lambda pid: attempt.started(pid, work_dir),
            on_running=lambda: self._running(attempt),
            on_progress=lambda value, message: self.reports.progress(attempt, value, message))
        self._execute(attempt)

    def _task_type(self, claim: P.Claimed) -> TaskType:
        """The claimed task's type; a version hash names one definition, so each is parsed
        once."""
        task = claim.task
        if not task.version:
            return TaskType.from_json(claim.type)
        key = (task.type, task.version)
        found = self._types.get(key)
        if found is None:
            if len(self._types) >= 256:
                self._types.clear()
            found = self._types[key] = TaskType.from_json(claim.type)
        return found

    def _current(self, attempt: Attempt | None) -> None:
        """The attempt running now; what an end report brings is for the next task."""
        with self._lock:
            self.attempt = attempt
        self.claims.running_long(False)

    def _execute(self, attempt: Attempt) -> None:
        assert attempt.run is not None and self.heartbeat is not None
        self._current(attempt)
        if attempt.task_type.checks or attempt.task_type.files:
            self.heartbeat.watch(attempt)  # preparing it may take a while: beat meanwhile
        if self.hand_back_now.is_set():
            attempt.stop(handback=True)
        try:
            if attempt.task_type.checks or attempt.task_type.files:
                self._send_pending()  # its preparation may take a while
            result = attempt.run.start()
            # The previous task's end report goes out now that this one runs.
            self._send_pending()
            result = result or attempt.run.wait()
            attempt.ran = True
            if self.sends_outputs and not (attempt.handback or attempt.superseded):
                # Heartbeats go on while they upload: large outputs on a slow link must not
                # make the task look lost.
                self.heartbeat.watch(attempt)
                send_outputs(self.server, attempt, attempt.run.work_dir,
                             DataDir(self.data_dir).outputs, self.hand_back_now)
        finally:
            attempt.ended.set()
            self._current(None)
        self.reports.flush()
        self.claims.finish(attempt, result)

    def _send_pending(self) -> None:
        """The previous task's end report; whatever goes wrong with it must not leave the
        task that runs now unwatched."""
        try:
            self.claims.send_pending()
        except Exception:
            log.exception("end report failed", worker=self.id)

    def _running(self, attempt: Attempt) -> None:
        """The task outlived the runner's first poll: report its start and heartbeat it
        (a shorter task needs neither: its end report says it all)."""
        assert self.heartbeat is not None
        self.reports.started(attempt)
        self.heartbeat.watch(attempt)
        if self.shipper is not None and attempt.run is not None:
            self.shipper.watch(attempt, attempt.run.work_dir)
        self.claims.running_long(True)

    def _tell_server(self, mode: str) -> None:
        """Mark this worker stopping, which also ends a pending claim at once."""
        if not self.id:
            return
        try:
            self.server.leave(self.id, mode)
        except BlanketError as e:
            log.debug("could not tell the server this worker is stopping", problem=str(e))

    def _leave(self) -> None:
        self._tell_server("finish")

