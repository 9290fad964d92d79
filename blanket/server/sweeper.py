"""The retention sweep: removes the ended tasks the rules let go (server/retention.py), their
folders, then the versions no kept task uses and no type has as its current one.

Every step is small so that the claim path is never held up: ended tasks are read a page at a
time by the index on `finished`, removed by id in one short transaction per batch, and their
folders removed after it commits; which versions tasks use is read in ranges of ids. Among
several servers on one PostgreSQL database, one sweeps at a time (`Store.try_sweep_lock`).
A dry run reads the same and removes nothing."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from blanket.config.bundles import bundle_path
from blanket.errors import Conflict
from blanket.server.retention import RetentionRules
from blanket.store.base import Ended, Store

log = structlog.get_logger("blanket.retention")

PAGE = 100  # ended tasks read, and at most removed, per batch (one short transaction)
GROUP_PAGE = 1000  # tasks of a group read at a time to find its newest ended ones
ID_RANGE = 2_000  # task ids per look at which versions are used (a fraction of a ms)
WAIT_FOR_SWEEP = 30.0  # seconds a prune waits for a sweep under way before it is refused
IDS_SHOWN = 100  # task ids a report lists per type
PAUSE = 0.002  # seconds between batches at least: other requests take the store meanwhile
# After each batch the sweep rests as long again as the batch took (removing folders busies
# the disk and the file system journal the store's writes go through): it never takes more
# than half of the time, so claims keep their latency while a large backlog goes.
REST = 1.0


@dataclass
class TypeReport:
    tasks: int = 0
    bytes: int | None = None
    ids: list[int] = field(default_factory=list)

    def add(self, task_id: int, size: int | None) -> None:
        self.tasks += 1
        if size is not None:
            self.bytes = (self.bytes or 0) + size
        if len(self.ids) < IDS_SHOWN:
            self.ids.append(task_id)


@dataclass
class Report:
    """What a sweep removed, or a dry run would remove."""

    dry_run: bool
    older_than: float | None = None
    type: str | None = None
    types: dict[str, TypeReport] = field(default_factory=dict)
    versions: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tasks(self) -> int:
        return sum(t.tasks for t in self.types.values())

    def to_json(self) -> dict:
        sizes = [t.bytes for t in self.types.values() if t.bytes is not None]
        return {
            "dry_run": self.dry_run, "older_than": self.older_than, "type": self.type,
            "tasks": self.tasks, "bytes": sum(sizes) if sizes else (0 if self.dry_run else None),
            "types": {name: {"tasks": t.tasks, "bytes": t.bytes, "ids": t.ids,
                             "more_ids": t.tasks > len(t.ids)}
                      for name, t in sorted(self.types.items())},
            "versions": self.versions, "seconds": round(self.seconds, 3),
        }


class Sweeper:
    """Runs sweeps over `store`. `rules()` gives the rules in force; `current_versions()` the
    version of every type as the catalog has it now; `hold_catalog()` keeps the catalog from
    writing bundles meanwhile; `task_dir(type, id)` a task's folder, which `remove_folder`
    removes (the queue's own removal)."""

    def __init__(self, store: Store, rules: Callable[[], RetentionRules],
                 current_versions: Callable[[], set[str]],
                 hold_catalog: Callable[[], AbstractContextManager[object]],
                 task_dir: Callable[[str, int], Path],
                 remove_folder: Callable[[str, int], None], versions_dir: Path,
                 clock: Callable[[], float] = time.time, pause: float = PAUSE):
        self.store = store
        self.rules = rules
        self.current_versions = current_versions
        self.hold_catalog = hold_catalog
        self.task_dir = task_dir
        self.remove_folder = remove_folder
        self.versions_dir = Path(versions_dir)
        self.clock = clock
        self.pause = pause
        self.stopping = threading.Event()
        self._one_at_a_time = threading.Lock()
        # The versions current at the previous sweep: a version goes only once it was not
        # current at two sweeps in a row, so a claim that bound it a moment before the
        # catalog moved on has committed (and shows as a use) by then.
        self._current_before: set[str] | None = None

    def sweep(self) -> Report | None:
        """One background sweep by the rules; None when another sweep (here or on another
        server) is under way."""
        if not self._one_at_a_time.acquire(blocking=False):
            return None
        try:
            report = self._locked(dry_run=False, older_than=None, type_name=None)
        finally:
            self._one_at_a_time.release()
        if report is not None and (report.tasks or report.versions):
            log.info("retention swept", tasks=report.tasks, versions=len(report.versions),
                     seconds=round(report.seconds, 2))
        return report

    def prune(self, dry_run: bool, older_than: float | None = None,
              type_name: str | None = None, by: str | None = None) -> Report:
        """A sweep asked for (`blanket prune`): by the rules, or every ended task that ended
        more than `older_than` seconds ago; of one type only with `type_name`. A dry run
        removes nothing and says what would go, with the size of each folder."""
        if not self._one_at_a_time.acquire(timeout=WAIT_FOR_SWEEP):
            raise Conflict("a sweep is under way on this server; try again shortly")
        try:
            report = self._locked(dry_run, older_than, type_name)
        finally:
            self._one_at_a_time.release()
        if report is None:
            raise Conflict("another server is sweeping this database now; try again shortly")
        log.info("prune", dry_run=dry_run, older_than=older_than, type=type_name, by=by,
                 tasks=report.tasks, versions=len(report.versions))
        return report

    def _locked(self, dry_run: bool, older_than: float | None,
                type_name: str | None) -> Report | None:
        if not self.store.try_sweep_lock():
            return None
        try:
            return self._sweep(dry_run, older_than, type_name, measure=dry_run)
        finally:
            self.store.release_sweep_lock()

    def _sweep(self, dry_run: bool, older_than: float | None, type_name: str | None,
               measure: bool) -> Report:
        started = time.perf_counter()
        report = Report(dry_run, older_than, type_name)
        now = self.clock()
        rules = self.rules()
        going: Counter[str] = Counter()
        for batch in self._going(rules, now, older_than, type_name):
            began = time.perf_counter()
            gone = batch if dry_run or not batch else self.store.delete_ended(
                [task.id for task in batch])
            for task in gone:
                size = folder_size(self.task_dir(task.type, task.id)) if measure else None
                if not dry_run:
                    self.remove_folder(task.type, task.id)
                report.types.setdefault(task.type, TypeReport()).add(task.id, size)
                if dry_run and task.version:
                    going[task.version] += 1
            if self.stopping.wait(self._rest(began)):
                break
        if type_name is None and not self.stopping.is_set():
            report.versions = self._versions(dry_run, going)
        report.seconds = time.perf_counter() - started
        return report

    def _rest(self, began: float) -> float:
        """How long to wait after a batch that began at `began` (perf_counter)."""
        if not self.pause:
            return 0.0
        return max(self.pause, (time.perf_counter() - began) * REST)

    def _going(self, rules: RetentionRules, now: float, older_than: float | None,
               type_name: str | None) -> Iterator[list[Ended]]:
        """Batches of ended tasks that go, oldest end first: one per page read (empty
        when none of the page goes)."""
        until = now - older_than if older_than is not None else rules.until(now)
        if until is None:
            return
        cutoffs: dict[tuple[str, str], int | None] = {}
        counted_apart = rules.counting_schedules()

        def cutoff(group: tuple[str, str], keep: int) -> int | None:
            if group not in cutoffs:
                cutoffs[group] = self._past_the_count(group, keep, counted_apart)
            return cutoffs[group]

        after: tuple[float, int] | None = None
        while not self.stopping.is_set():
            page = self.store.ended_page(after, until, PAGE)
            if not page:
                return
            after = (page[-1].finished, page[-1].id)
            going = [task for task in page if (type_name is None or task.type == type_name)
                     and (older_than is not None or rules.why_it_goes(task, now, cutoff))]
            yield going  # even empty: the sweep rests after every page it reads
            if len(page) < PAGE:
                return

    def _past_the_count(self, group: tuple[str, str], keep: int,
                        counted_apart: list[str]) -> int | None:
        """The id of the newest ended task of `group` once its `keep` newest are counted
        (None: it has no more), read a page at a time from its newest task down."""
        kind, name = group
        apart = frozenset(counted_apart) if kind == "type" else frozenset()
        before, seen = 2**62, 0
        while not self.stopping.is_set():
            page = self.store.group_page(before, GROUP_PAGE,
                                         type_name=name if kind == "type" else None,
                                         schedule=name if kind == "schedule" else None)
            for task_id, schedule, ended in page:
                if ended and schedule not in apart:
                    if seen == keep:
                        return task_id
                    seen += 1
            if len(page) < GROUP_PAGE:
                return None
            before = page[-1][0]
            self.stopping.wait(self.pause)
        return None

    def _versions(self, dry_run: bool, going: Counter[str]) -> list[dict]:
        """The versions no task uses and that are not any type's current one, nor were at
        the previous sweep: their records and bundles go (a dry run lists them)."""
        current = self.current_versions()
        before = self._current_before
        if not dry_run:
            self._current_before = current
            if before is None:  # the first sweep: nothing to compare with yet
                return []
        before = current if before is None else before
        candidates = [(h, t) for h, t, _created in self.store.version_records()
                      if h not in current and h not in before]
        if not candidates:
            return []
        used = self._versions_used(going)
        unused = [(h, t) for h, t in candidates if h not in used]
        if not unused or self.stopping.is_set():
            return []
        if dry_run:
            return [_version_entry(self.versions_dir, h, t) for h, t in unused]
        with self.hold_catalog():  # no bundle is written or made current meanwhile
            current = self.current_versions()
            unused = [(h, t) for h, t in unused if h not in current]
            entries = [_version_entry(self.versions_dir, h, t) for h, t in unused]
            self.store.delete_versions([h for h, _ in unused])
            for hash, _type in unused:
                _remove_file(bundle_path(self.versions_dir, hash))
        return entries

    def _versions_used(self, going: Counter[str]) -> set[str]:
        """Versions bound to tasks, read in ranges of ids, less the uses of the tasks a dry
        run would remove (`going`: their versions, counted)."""
        uses: Counter[str] = Counter()
        top = self.store.max_task_id()
        for first in range(0, top + 1, ID_RANGE):
            uses.update(self.store.versions_between(first, first + ID_RANGE - 1))
            if self.stopping.wait(self.pause):
                break
        uses.subtract(going)
        return {version for version, count in uses.items() if count > 0}


def folder_size(path: Path) -> int:
    """Bytes in the files under `path`, symlinks counted as themselves and never followed
    (0 when there is no such folder)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
            else:
                total += info.st_size
    return total


def _version_entry(versions_dir: Path, hash: str, type_name: str) -> dict:
    try:
        size = bundle_path(versions_dir, hash).lstat().st_size
    except OSError:
        size = 0
    return {"version": hash, "type": type_name, "bytes": size}


def _remove_file(path: Path) -> None:
    """Remove a bundle: a file or a symlink (never what a symlink points to)."""
    with suppress(FileNotFoundError):
        path.unlink()
