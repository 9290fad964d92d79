"""The inbox: task files (or folders of a task file plus data files) dropped in a watched
folder become tasks through the intake, then move to `done/` or to `failed/` with a note.

An entry is read only once it has stopped changing for a settle time, and each entry's
content hash is its dedupe key, so the same file never becomes two tasks, even across a crash.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import structlog

from blanket.config.checker import parse_toml
from blanket.config.problems import ConfigInvalid
from blanket.config.watching import DebouncedWatcher, is_editor_noise
from blanket.errors import DuplicateTask, InvalidInput, NotFound, StorageFull
from blanket.jsontext import parse_json
from blanket.server.api.http import check_against
from blanket.server.api.schemas import SUBMISSION
from blanket.server.intake import (
    Intake,
    TaskRequest,
    Upload,
    check_file_count,
    open_regular,
    parse_task_request,
)
from blanket.server.workflows import Workflows
from blanket.store.base import Store

log = structlog.get_logger("blanket.inbox")

TASK_SUFFIXES = (".toml", ".json")
FOLDER_TASK_FILES = ("task.toml", "task.json")
DONE, FAILED = "done", "failed"
SETTLE_SECONDS = 0.5
MAX_TASK_FILE = 1024 * 1024  # bytes of a task file (not of the data files beside it)
# Watch events can be lost (a full inotify queue, a network file system), so a slow
# rescan guarantees that every dropped entry is taken eventually.
RESCAN_SECONDS = 5.0
# An entry that fails for a reason not its own (a locked database, a bug) is tried again,
# each time twice as late, up to this many seconds apart.
MAX_RETRY_SECONDS = 60.0

Signature = tuple


# ---------------------------------------------------------------- reading entries


@dataclass(frozen=True)
class RunRequest:
    """A dropped file that starts a workflow run: `workflow = "NAME"` and its variables."""

    workflow: str
    environment: Any
    dedupe_key: str | None = None


RUN_KEYS = ("workflow", "environment")


def parse_task_text(name: str, raw: bytes, now: float) -> TaskRequest | RunRequest:
    """The task request (or workflow run) in a TOML or JSON task file called `name`;
    InvalidInput says what is wrong, in the API's words."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{name} is not UTF-8 text: {e}") from None
    if name.endswith(".json"):
        data = parse_json(text, name)
    else:
        try:
            data = parse_toml(text, name)
        except ConfigInvalid as e:
            raise InvalidInput(str(e)) from None
    if isinstance(data, dict) and "workflow" in data:
        unknown = sorted(set(data) - set(RUN_KEYS))
        if unknown:
            raise InvalidInput(f"{name} starts a workflow run, which takes only workflow and "
                               f"environment, not {', '.join(unknown)}")
        if not isinstance(data["workflow"], str) or not data["workflow"]:
            raise InvalidInput(f"{name}: workflow: give the workflow's name")
        return RunRequest(data["workflow"], data.get("environment"))
    # Checked as POST /task/ checks a submission, in the same words.
    return parse_task_request(check_against(SUBMISSION, _toml_times_as_text(data), "the task"),
                              now)


def _toml_times_as_text(data: Any) -> Any:
    # TOML has native dates (not_before = 2026-12-01T08:00:00Z); the request wants ISO text.
    if isinstance(data, dict) and isinstance(data.get("not_before"), datetime | date):
        return {**data, "not_before": data["not_before"].isoformat()}
    return data


def read_task_file(path: Path, now: float) -> TaskRequest | RunRequest:
    """The request in one dropped task file, keyed by its name and content."""
    raw = _read(path)
    request = parse_task_text(path.name, raw, now)
    key = hashlib.sha256(path.name.encode() + b"\0" + raw)
    return replace(request, dedupe_key="inbox:" + key.hexdigest())


def folder_files(folder: Path) -> tuple[Path, list[Path]]:
    """The task file and the data files of a dropped folder; InvalidInput if it is not one."""
    if folder.is_symlink():
        raise InvalidInput(f"{folder.name} is a symbolic link; drop the folder itself")
    task_files = [folder / n for n in FOLDER_TASK_FILES if (folder / n).is_file()]
    if not task_files:
        raise InvalidInput(f"folder {folder.name} holds no task.toml or task.json; add one "
                           "saying which type to run")
    if len(task_files) > 1:
        raise InvalidInput(f"folder {folder.name} holds both task.toml and task.json; keep one")
    data: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            # Uploads land at the top of the task's working directory under plain names;
            # flattening a subfolder could silently merge two files of the same name.
            raise InvalidInput(f"folder {folder.name} holds the subfolder {entry.name}; data "
                               "files land at the top of the task's working directory, so "
                               "put them directly in the folder, without subfolders")
        if entry != task_files[0] and not is_editor_noise(entry, folder):
            data.append(entry)
    check_file_count(len(data))  # before one of them is opened
    return task_files[0], data


def folder_key(folder: Path, files: Iterable[Path]) -> str:
    """The dedupe key of a folder: a hash of its name and every file's name and content."""
    digest = hashlib.sha256(folder.name.encode() + b"\0")
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open_regular(path) as stream:
            for chunk in iter(lambda: stream.read(1024 * 1024), b""):
                digest.update(chunk)
    return "inbox:" + digest.hexdigest()


def _read(path: Path) -> bytes:
    try:
        with open_regular(path) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > MAX_TASK_FILE:
                raise InvalidInput(
                    f"{path.name} is {size:,} bytes; a task file may be at most "
                    f"{MAX_TASK_FILE:,} (as a submission over HTTP): drop a folder holding "
                    "the task file and its data files instead")
            return stream.read(MAX_TASK_FILE + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read {path.name}: {e.strerror}") from None


# ---------------------------------------------------------------- knowing when it is complete


def signature(path: Path) -> Signature | None:
    """What changes when an entry is written to: size and mtime of it and all it holds."""
    try:
        st = path.lstat()  # a symbolic link (dangling, a loop, to a folder) is not followed
        if not stat.S_ISDIR(st.st_mode):
            return (st.st_size, st.st_mtime_ns)
        parts: list[tuple] = [("", 0, st.st_mtime_ns)]
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                inner = Path(root, name)
                s = inner.lstat()
                parts.append((str(inner.relative_to(path)), s.st_size, s.st_mtime_ns))
        return tuple(sorted(parts))
    except FileNotFoundError:
        return None
    except OSError as e:  # unreadable: it settles as it is, to be refused with the reason
        return (e.errno,)


@dataclass
class _Seen:
    signature: Signature
    since: float
    handed_out: bool = False


class Settling:
    """Tells which entries have kept the same signature for `settle` seconds of `clock`."""

    def __init__(self, settle: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.settle = settle
        self.clock = clock
        self._seen: dict[str, _Seen] = {}

    def observe(self, current: dict[str, Signature]) -> tuple[list[str], float | None]:
        """Names that just became settled (each handed out once per signature), and the
        seconds until the next one could be, or None if none is waiting."""
        now = self.clock()
        self._seen = {name: self._update(name, sig, now) for name, sig in current.items()}
        ready, waits = [], []
        for name, seen in self._seen.items():
            if seen.handed_out:
                continue
            waited = now - seen.since
            if waited >= self.settle:
                seen.handed_out = True
                ready.append(name)
            else:
                waits.append(self.settle - waited)
        return ready, min(waits, default=None)

    def forget(self, name: str) -> None:
        """Hand `name` out again once it has been seen settled anew."""
        self._seen.pop(name, None)

    def retry_later(self, name: str, delay: float) -> None:
        """Hand `name` out again `delay` seconds from now if it does not change meanwhile
        (a change settles as usual)."""
        seen = self._seen.get(name)
        if seen is not None:
            self._seen[name] = _Seen(seen.signature, self.clock() + delay - self.settle)

    def _update(self, name: str, sig: Signature, now: float) -> _Seen:
        seen = self._seen.get(name)
        if seen is None or seen.signature != sig:
            return _Seen(sig, now)
        return seen


# ---------------------------------------------------------------- where entries go


def free_name(folder: Path, name: str) -> str:
    """`name`, or `stem-2.suffix`, `stem-3.suffix`... whichever is not taken in `folder`
    (with its `.error` note)."""
    stem, suffix = _split(name)
    candidate, number = name, 1
    while (folder / candidate).exists() or (folder / f"{candidate}.error").exists():
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    return candidate


def done_name(made: int | str, name: str) -> str:
    """The name an entry takes in done/: its task id (or run id, as run12), then its own
    name."""
    return f"{made}-{name}"


def _split(name: str) -> tuple[str, str]:
    for suffix in TASK_SUFFIXES:
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)], suffix
    return name, ""


def is_candidate(path: Path) -> bool:
    """True for what the inbox takes: visible task files and folders, not done/ or failed/.
    A task file's name that is a symbolic link, a pipe or a device is taken too, to be
    refused to failed/ with the reason, rather than left without a word."""
    if path.name in (DONE, FAILED) or is_editor_noise(path, path.parent):
        return False
    if path.is_dir():
        return True
    return path.suffix in TASK_SUFFIXES


# ---------------------------------------------------------------- the inbox


class Inbox:
    """Watches `inbox_dir` and turns each settled entry into a task through `intake`."""

    def __init__(self, inbox_dir: Path, intake: Intake, store: Store, *,
                 settle: float = SETTLE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 workflows: Workflows | None = None):
        self.dir = Path(inbox_dir)
        self.intake = intake
        self.workflows = workflows
        self.store = store
        self.settling = Settling(settle, clock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: DebouncedWatcher | None = None
        self._failures: dict[str, int] = {}  # entry name: unexpected failures in a row

    def start(self) -> None:
        """Take the entries present now, then keep watching; returns at once."""
        for sub in (DONE, FAILED):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        # Not recursive: done/ fills with folders, each of which would cost an inotify
        # watch, and an entry still changing is rescanned on its settle timer anyway.
        self._watcher = DebouncedWatcher(self.dir, lambda _paths: self._wake.set(),
                                         recursive=False, ignore=self._ignored)
        self._watcher.start()
        self._thread = threading.Thread(target=self._run, name="blanket-inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; an entry being submitted is finished first."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _ignored(self, path: Path) -> bool:
        try:
            top = path.relative_to(self.dir).parts[:1]
        except ValueError:
            return True
        return top in ((DONE,), (FAILED,)) or is_editor_noise(path, self.dir)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                wait = self.scan()
            except Exception:
                log.exception("inbox scan failed", inbox=str(self.dir))
                wait = RESCAN_SECONDS
            self._wake.wait(RESCAN_SECONDS if wait is None else min(wait, RESCAN_SECONDS))

    def scan(self) -> float | None:
        """Take every settled entry once; the seconds until another may settle, or None."""
        current = {}
        for entry in self._entries():
            sig = signature(entry)
            if sig is not None:
                current[entry.name] = sig
        ready, wait = self.settling.observe(current)
        for name in ready:
            if self._stopping.is_set():
                break
            try:
                self.take(self.dir / name)
            except StorageFull as e:  # taken once there is room again
                log.warning("inbox entry waits for disk space", entry=name, problem=e.message)
                self.settling.forget(name)
                wait = min(wait or SETTLE_SECONDS, SETTLE_SECONDS)
            except Exception as e:
                # Not the entry's fault (a locked database, a bug): try it again later, less
                # often each time, with the traceback logged once.
                wait = min(wait or SETTLE_SECONDS, self._retry_later(name, e))
            else:
                self._failures.pop(name, None)
        for name in set(self._failures) - set(current):
            del self._failures[name]
        return wait

    def _retry_later(self, name: str, error: Exception) -> float:
        """Log why `name` was not taken and schedule it again; the seconds until then."""
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = min(SETTLE_SECONDS * 2 ** failures, MAX_RETRY_SECONDS)
        if failures == 1:
            log.exception("inbox entry not taken; trying it again later", entry=name,
                          next_try_in=delay)
        else:
            log.warning("inbox entry still not taken", entry=name, tries=failures,
                        problem=f"{type(error).__name__}: {error}", next_try_in=delay)
        self.settling.retry_later(name, delay)
        return delay

    def _entries(self) -> list[Path]:
        try:
            entries = [e for e in self.dir.iterdir() if is_candidate(e)]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda e: (_mtime(e), e.name))

    def take(self, path: Path) -> None:
        """Submit one settled entry and move it to done/ or failed/."""
        if not os.path.lexists(path):
            return
        try:
            made = self._submit(path)
        except (InvalidInput, NotFound) as e:
            self._fail(path, e.message)
            return
        target = self.dir / DONE / free_name(self.dir / DONE, done_name(made, path.name))
        path.rename(target)
        log.info("inbox entry queued", entry=path.name, made=made, moved_to=str(target))

    def _submit(self, path: Path) -> int | str:
        """The id of the task the entry made, or "run" and the id of the workflow run."""
        now = time.time()
        if path.is_dir():
            task_file, data = folder_files(path)
            request = replace(read_task_file(task_file, now),
                              dedupe_key=folder_key(path, [task_file, *data]))
        else:
            request, data = read_task_file(path, now), []
        if isinstance(request, RunRequest):
            return self._start_run(request, bool(data))
        # Checked before validating again: a task stored just before a crash still counts
        # even if, say, its type has been removed since.
        known = self.store.task_for_key(request.dedupe_key or "")
        if known is None:
            with ExitStack() as stack:
                # Copies, not moves: the entry stays whole until it is in done/, so its key
                # is the same if the server dies mid-way.
                uploads = tuple(Upload(p.name, stack.enter_context(open_regular(p)))
                                for p in data)
                try:
                    return self.intake.submit(
                        replace(request, uploads=uploads, submitted_by="inbox"), now).id
                except DuplicateTask as e:
                    known = e.task_id
        log.info("inbox entry submitted before", entry=path.name, task=known)
        return known

    def _start_run(self, request: RunRequest, with_files: bool) -> str:
        if with_files:
            raise InvalidInput("a workflow run takes no files: drop its file alone, without "
                               "a folder of data files")
        if self.workflows is None:
            raise InvalidInput("this inbox does not start workflow runs")
        run = self.workflows.start(request.workflow, request.environment, "inbox",
                                   dedupe_key=request.dedupe_key)
        return f"run{run.id}"

    def _fail(self, path: Path, message: str) -> None:
        failed = self.dir / FAILED
        name = free_name(failed, path.name)
        note = failed / f"{name}.error"
        partial = note.with_name(f".{note.name}.partial")
        partial.write_text(message.rstrip("\n") + "\n")
        partial.replace(note)
        path.rename(failed / name)
        log.warning("inbox entry refused", entry=path.name, reason=message,
                    moved_to=str(failed / name))


def _mtime(path: Path) -> int:
    try:
        return path.lstat().st_mtime_ns
    except OSError:
        return 0
