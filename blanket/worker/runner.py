"""Runs one task in its scratch directory: files, environment, checks, the process, logs, progress.

The runner knows nothing of HTTP, the store or the config directory; the worker feeds it a
task, its type and the extracted version bundle, and reports what it returns.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import structlog

from blanket.config.tasktype import TaskType
from blanket.config.templating import (
    TemplateProblem,
    render_command,
)
from blanket.durations import format_duration
from blanket.errors import is_disk_full
from blanket.models import Task, TaskState
from blanket.taskdir import COMMAND_FILE, LOG_STREAMS, PROGRESS_FILE, TASK_FILE, error_log
from blanket.worker.leftovers import Ledger, SlotRecord
from blanket.worker.processes import (
    ExitWatch,
    describe_status,
    end_process_group,
    executor_argv,
    inline_argv,
    signal_group,
)
from blanket.worker.progress import ProgressWatcher
from blanket.worker.workdir import (
    RunProblem,
    check_environment_size,
    copy_section,
    may_show,
    resolve_dest,
    task_variables,
    write_task_file,
)

CHECK_TIMEOUT = 30.0
POLL_INTERVAL = 0.1
NEARLY_FULL = 64 * 1024  # free bytes below which a failed task's disk counts as full

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunResult:
    """How a run ended. `exit_code` is None when the process never started or was stopped or
    timed out (killed by the worker), -N when signal N killed it otherwise."""

    state: TaskState
    exit_code: int | None
    error: str | None


class _Stopped(Exception):
    """stop() was called before the task's command started."""


def _noop(*_args: object) -> None:
    return None


class TaskRun:
    """One attempt of one task: prepare `work_dir`, run the command, supervise it to the end."""

    def __init__(
        self,
        task: Task,
        task_type: TaskType,
        bundle_dir: Path,
        work_dir: Path,
        *,
        server_url: str = "",
        on_started: Callable[[int], None] = _noop,
        on_progress: Callable[[int, str | None], None] = _noop,
        grace: float = 5.0,
        on_running: Callable[[], None] = _noop,
        base_env: Mapping[str, str] | None = None,
        ledger: Ledger | SlotRecord | None = None,
    ):
        self.task = task
        self.task_type = task_type
        self.bundle_dir = Path(bundle_dir)
        self.work_dir = Path(work_dir).absolute()
        self.server_url = server_url
        self.on_started = on_started
        self.on_progress = on_progress
        self.on_running = on_running
        self.grace = grace
        # The environment the task's own variables are laid over: the worker passes a copy
        # taken once (reading os.environ costs a decode per variable, per task).
        self.base_env = os.environ if base_env is None else base_env
        self._stop = threading.Event()
        self._variables: dict[str, str] | None = None
        self._proc: subprocess.Popen | None = None
        self._record: str | None = None  # the ledger's record of the running process
        self._started_at: float | None = None
        self.ledger = ledger  # records what runs, for when the worker dies meanwhile

    @property
    def _timeout(self) -> float | None:
        return self.task.timeout or self.task_type.timeout

    def stop(self, *, at_once: bool = False) -> None:
        """Ask the run to end as STOPPED; safe to call from any thread, at any time. With
        `at_once`, its processes are killed without their grace time."""
        if at_once:
            self.grace = 0.0
        self._stop.set()

    def run(self) -> RunResult:
        """Prepare and run the task, blocking until it ends; never raises: whatever goes
        wrong (the task's text, the disk, the executor) ends the run FAILED saying what."""
        return self.start() or self.wait()

    def start(self) -> RunResult | None:
        """Prepare the task and start its process; None once it runs (then `wait` for its
        end), or how it ended when it could not start. Never raises."""
        try:
            env, argv = self._prepare()
        except _Stopped:
            return self._ended(RunResult(TaskState.STOPPED, None, "stopped before it started"))
        except (RunProblem, TemplateProblem) as exc:
            return self._fail_before_start(str(exc))
        except OSError as exc:
            if not is_disk_full(exc):
                log.exception("task preparation failed", task=self.task.id)
                return self._fail_before_start(f"preparing the task failed: {_explain(exc)}")
            return self._fail_before_start(
                f"the disk holding {self.work_dir} is full ({exc.strerror}); free space "
                "there, then run the task again")
        except Exception as exc:
            log.exception("task preparation failed", task=self.task.id)
            return self._fail_before_start(f"preparing the task failed: {_explain(exc)}")
        if self._stop.is_set():
            return self._ended(RunResult(TaskState.STOPPED, None, "stopped before it started"))
        try:
            self._proc = self._start(env, argv)
        except OSError as exc:
            return self._fail_before_start(
                f"could not start executor {self.task_type.executor!r}: {exc.strerror or exc}")
        except (ValueError, TypeError) as exc:  # text exec cannot take (say, not UTF-8)
            return self._fail_before_start(f"could not start the task: {_explain(exc)}")
        self._started_at = time.time()
        self._record = self.ledger.add(self._proc.pid) if self.ledger else None
        _call(self.on_started, self._proc.pid)
        return None

    def wait(self) -> RunResult:
        """Supervise the started process to its end (timeout, stop, progress), end what is
        left of its group, write task.json; how it ended. Never raises."""
        proc = self._proc
        assert proc is not None, "wait() follows a start() that started the process"
        try:
            try:
                ending = self._supervise(proc)
            finally:
                end_process_group(proc, self.grace)
                if self.ledger:
                    self.ledger.remove(self._record)
            result = self._result(proc.returncode, ending)
        except Exception as exc:  # a bug of ours: the worker must still go on
            log.exception("task run failed", task=self.task.id)
            result = RunResult(TaskState.FAILED, None, f"running the task failed: {_explain(exc)}")
        return self._ended(result)

    def _prepare(self) -> tuple[dict[str, str], list[str]]:
        try:
            self.work_dir.mkdir()
            fresh = True
        except FileExistsError:  # an earlier attempt's, or one holding the uploaded files
            fresh = False
        except FileNotFoundError:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            fresh = True
        check_environment_size(self.task, self.task_type)
        variables = task_variables(self.task, self.task_type, self.work_dir, self.server_url)
        for index, section in enumerate(self.task_type.files):
            dest = resolve_dest(section.dest, self.work_dir)
            copy_section(self.bundle_dir / "files" / str(index), dest,
                         render=section.render, variables=variables)
        self._variables = variables
        env = {**self.base_env, **variables}
        for check in self.task_type.checks:
            self._run_check(check, env)
        command = render_command(self.task_type.command, variables)
        if not fresh:  # an earlier attempt's progress is not this one's
            (self.work_dir / PROGRESS_FILE).unlink(missing_ok=True)
        # A command that holds no secret value is passed as an argument (`bash -c`), saving
        # a file per task; others cannot see a secret in the arguments that way.
        if may_show(command, self.task, self.task_type, variables):
            argv = inline_argv(self.task_type.executor, command, env.get("PATH"))
            if argv is not None:
                return env, argv
        script = self.work_dir / COMMAND_FILE
        # The rendered command may hold secret values: readable by the worker's user only,
        # and never served or sent to the server (PRIVATE_NAMES).
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(fd, 0o600)  # also when an earlier attempt left it
            out.write(command + "\n")
        return env, executor_argv(self.task_type.executor, script, env.get("PATH"))

    def _run_check(self, command: str, env: Mapping[str, str]) -> None:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command], cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        record = self.ledger.add(proc.pid) if self.ledger else None
        deadline = time.monotonic() + CHECK_TIMEOUT
        try:
            while True:
                try:
                    _, stderr = proc.communicate(timeout=POLL_INTERVAL)
                    break
                except subprocess.TimeoutExpired:
                    if proc.poll() is not None:  # a background child still holds stderr open
                        signal_group(proc.pid, signal.SIGKILL)
                        continue
                    if self._stop.is_set():
                        raise _Stopped() from None
                    if time.monotonic() >= deadline:
                        raise RunProblem(f"check failed: {command} (no answer after "
                                         f"{format_duration(CHECK_TIMEOUT)})") from None
        finally:
            signal_group(proc.pid, signal.SIGKILL)  # a check must leave nothing running
            if proc.returncode is None:
                proc.communicate()
            if self.ledger:
                self.ledger.remove(record)
        if proc.returncode != 0:
            status = (f"exit {proc.returncode}" if proc.returncode > 0
                      else describe_status(proc.returncode))
            raise RunProblem(f"check failed: {command} ({status})" + _last_line(stderr))

    def _start(self, env: dict[str, str], argv: list[str]) -> subprocess.Popen:
        with ExitStack() as files:
            if self.task_type.combine_output:
                stdout = files.enter_context(open(self.work_dir / LOG_STREAMS["output"], "wb"))
                stderr: object = subprocess.STDOUT
            else:
                stdout = files.enter_context(open(self.work_dir / LOG_STREAMS["stdout"], "wb"))
                stderr = files.enter_context(open(self.work_dir / LOG_STREAMS["stderr"], "wb"))
            # The child gets its own descriptors, so output lands in the files unbuffered by us.
            return subprocess.Popen(argv, cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr, start_new_session=True)

    def _supervise(self, proc: subprocess.Popen) -> TaskState | None:
        """Wait for the process; return STOPPED or TIMEDOUT when we must end it, else None."""
        deadline = time.monotonic() + self._timeout if self._timeout else None
        progress = ProgressWatcher(self.work_dir / PROGRESS_FILE)
        exited = ExitWatch(proc)
        running = False
        try:
            while not exited.within(POLL_INTERVAL):
                if not running:  # still going after the first poll: not a short task
                    running = True
                    _call(self.on_running)
                if self._stop.is_set():
                    return TaskState.STOPPED
                if deadline is not None and time.monotonic() >= deadline:
                    return TaskState.TIMEDOUT
                self._report_progress(progress)
            return None
        finally:
            exited.close()
            self._report_progress(progress)

    def _report_progress(self, progress: ProgressWatcher) -> None:
        change = progress.poll()
        if change is not None:
            _call(self.on_progress, *change)

    def _result(self, returncode: int, ending: TaskState | None) -> RunResult:
        exit_code = returncode if returncode >= 0 else None
        if ending is TaskState.STOPPED:
            return RunResult(TaskState.STOPPED, exit_code, "stopped")
        if ending is TaskState.TIMEDOUT:
            return RunResult(TaskState.TIMEDOUT, exit_code,
                             f"timed out after {format_duration(self._timeout or 0.0)}")
        if returncode == 0:
            return RunResult(TaskState.SUCCESS, 0, None)
        # Killed by a signal it did not get from us: -N, as Python says it (the shell's
        # 128+N could not be told from an exit status).
        return RunResult(TaskState.FAILED, returncode,
                         describe_status(returncode) + self._disk_full_note())

    def _disk_full_note(self) -> str:
        """Why a failed task may have failed, when its disk is full: its command could not
        write (what it says about it is in its log)."""
        name = error_log(self.task_type.combine_output)
        if not (_nearly_full(self.work_dir) or _mentions_full_disk(self.work_dir / name)):
            return ""
        return (f"; the disk holding {self.work_dir} is full: free space there, then run "
                "the task again")

    def _ended(self, result: RunResult) -> RunResult:
        """Write task.json with how the run ended; a task whose record cannot be written
        ends FAILED saying so."""
        if not self.work_dir.is_dir():
            return result
        ended = {"state": result.state.value, "exit_code": result.exit_code,
                 "error": result.error, "started": self._started_at, "finished": time.time()}
        try:
            variables = self._variables or task_variables(self.task, self.task_type,
                                                          self.work_dir, self.server_url)
            write_task_file(self.work_dir, self.task, self.task_type, variables, ended)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("could not write task.json", task=self.task.id, path=str(self.work_dir),
                        problem=_explain(exc))
            problem = f"could not write {TASK_FILE}: {_explain(exc)}"
            if result.state is TaskState.SUCCESS:
                return RunResult(TaskState.FAILED, result.exit_code, problem)
            return RunResult(result.state, result.exit_code,
                             f"{result.error}; {problem}" if result.error else problem)
        return result

    def _fail_before_start(self, message: str) -> RunResult:
        name = error_log(self.task_type.combine_output)
        try:
            (self.work_dir / name).write_text(f"blanket: {message}\n", encoding="utf-8",
                                              errors="backslashreplace")
        except OSError:
            log.warning("could not write the error log", task=self.task.id, path=str(self.work_dir))
        return self._ended(RunResult(TaskState.FAILED, None, message))


def _nearly_full(folder: Path) -> bool:
    try:
        disk = os.statvfs(folder)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < NEARLY_FULL


def _mentions_full_disk(log_file: Path) -> bool:
    """Whether the end of a log says a write found no space."""
    try:
        with open(log_file, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read()
    except OSError:
        return False
    return os.strerror(errno.ENOSPC).encode() in tail


def _explain(exc: BaseException) -> str:
    """An exception as one line of text that is always valid UTF-8."""
    if isinstance(exc, UnicodeEncodeError):
        bad = exc.object[exc.start:exc.end]
        text = (f"{bad!r} cannot be encoded as UTF-8 ({exc.reason}); a value the task was "
                "given is not Unicode text")
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", errors="replace").strip().splitlines()
    return f": {lines[-1].strip()}" if lines else ""


def _call(callback: Callable[..., None], *args: object) -> None:
    # A failing report (say, the server is briefly away) must not orphan the running task.
    try:
        callback(*args)
    except Exception:
        log.exception("runner callback failed", callback=getattr(callback, "__name__", "?"))
