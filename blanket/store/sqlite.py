"""The SQLite store: WAL mode, one connection guarded by a lock, and group commit (see
walsync.py): a change is on disk before it is acknowledged, without an fsync under the lock.
Checkpoints run from a second connection in a thread of their own (checkpointer.py), never
inside a COMMIT under the lock."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from blanket.errors import (
    BlanketError,
    Conflict,
    DuplicateTask,
    NotFound,
    StaleAttempt,
    StorageFailed,
    StorageFull,
    is_disk_full,
    same_request,
)
from blanket.models import ScheduleState, Task, TaskFilter, TaskState, Token, Worker
from blanket.store import checkpointer, dependencies
from blanket.store.base import (
    IDLE_FRESH,
    Claim,
    Decide,
    End,
    NewTask,
    Outcome,
    exchange_in,
    order_sql,
    replayed_in,
)
from blanket.store.checkpointer import Checkpointer
from blanket.store.reserve import SpaceReserve
from blanket.store.rows import (
    attempt_record,
    new_task_record,
    run_link,
    tags_key,
    task_from_row,
    token_params,
    worker_from_row,
)
from blanket.store.sql import load_migrations, load_queries
from blanket.store.sqlverbs import SqlVerbs
from blanket.store.walsync import WalSync
from blanket.wakeups import DELIVERIES, QUEUE, task_topic

Q = load_queries("sqlite")
# executemany returns no rows, and a task queued as it is needs only its id
_INSERT_MANY = Q["insert_task"].replace("RETURNING *", "")


class SQLiteStore(SqlVerbs):
    queries = Q

    def __init__(self, path: Path | str):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        # In WAL mode, NORMAL: a commit reaches the WAL file without an fsync, and WalSync
        # makes it durable outside the lock (what FULL would do under it). A file system
        # without WAL support keeps its rollback journal, synced by SQLite at each commit.
        grouped = mode == "wal" and self.path != ":memory:"
        self._wal = WalSync(self.path, self._checkpoint) if grouped else None
        self.directory = os.path.dirname(os.path.abspath(self.path))
        self._reserve = SpaceReserve(self.path + "-reserve") if self.path != ":memory:" else None
        # An 8 MiB page cache: claims with 100,000 queued are as fast as with 64 MiB (the
        # operating system caches the file too), and the server's memory stays flat as the
        # store grows (bench/soak.py).
        for pragma in (f"synchronous = {'NORMAL' if grouped else 'FULL'}", "foreign_keys = ON",
                       "busy_timeout = 10000", "temp_store = MEMORY", "cache_size = -8192"):
            self._db.execute(f"PRAGMA {pragma}")
        self._checkpointer: Checkpointer | None = None
        if grouped:
            # No checkpoint inside COMMIT: the checkpointer copies the WAL off the lock. A
            # WAL that grew past LIMIT once (a reader in the way) is cut back to it when it
            # is written from its start again.
            for pragma in ("wal_autocheckpoint = 0",
                           f"journal_size_limit = {checkpointer.LIMIT}"):
                self._db.execute(f"PRAGMA {pragma}")
        self._migrate()
        if grouped:
            self._checkpointer = Checkpointer(
                self.path, self._lock, lambda seconds, kind: self.on_checkpoint(seconds, kind))
            self._checkpointer.wake()  # a WAL left long by the migrations or a crash

    def _migrate(self) -> None:
        with self._tx() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, sql in load_migrations("sqlite"):
                if number > current:
                    for statement in _statements(sql):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _tx(self, durable: bool = True,
            notify: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
        """One write transaction. `durable`: return only once it is on disk; a change whose
        loss in a power cut harms nothing (a claim, a heartbeat) need not wait. `notify`:
        topics whose waiters to wake as soon as it commits (a list the transaction may still
        fill); claims overlap its fsync, and wait for it before they hand anything out
        (claim_task)."""
        with self._lock:
            changes = self._db.total_changes
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                began = time.perf_counter()
                self._db.execute("COMMIT")
                took = time.perf_counter() - began
            except BaseException as e:
                self._skips_done(committed=False)
                if self._db.in_transaction:  # SQLITE_FULL may have rolled it back already
                    self._db.execute("ROLLBACK")
                if is_disk_full(e):
                    raise self._disk_full() from e
                raise
            self._skips_done(committed=True)
            seq = self._wal.committed() if self._wal else 0
            if self._checkpointer is not None:
                self._checkpointer.committed(self._db.total_changes - changes)
            if durable and self._wal:
                self._wal.want(seq)
        if notify:
            self.on_change(*notify)
        if durable and self._wal:
            began = time.perf_counter()
            self._wal.sync(seq)
            took += time.perf_counter() - began
        self.on_commit(took, durable)

    def _disk_full(self) -> StorageFull:
        """SQLite found the disk full (under the lock): free the reserve, so that results,
        stops and removals still get through, and checkpoint, so that the WAL is written
        from its start again, in room it already has."""
        if self._reserve is not None:
            self._reserve.release()
        with contextlib.suppress(sqlite3.Error):  # the next full disk tries again
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return StorageFull.at(self.directory)

    def _room_for_new_tasks(self) -> None:
        """Refuse new tasks while the disk is full: what room is left is kept for the
        results of the tasks already taken."""
        with self._lock:
            if self._reserve is not None and not self._reserve.room_again():
                raise StorageFull.at(self.directory)

    def _checkpoint(self) -> int:
        """Copy the whole WAL into the database file, which SQLite then syncs (and checks
        that it did); the number of the last commit this covers. WalSync calls it after a
        failed fsync."""
        with self._lock:
            try:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as e:
                if is_disk_full(e):
                    raise self._disk_full() from e
                raise StorageFailed(
                    f"the disk holding {self.directory} still fails to write the database "
                    f"({e}); nothing is confirmed until it works: look at the disk (dmesg)"
                ) from e
            if busy:
                raise StorageFailed(f"the database in {self.directory} is busy and could not "
                                    "be made durable; try again")
            assert self._wal is not None
            return self._wal.written

    def _one(self, query: str, params: Any = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(query, params).fetchone()

    def _all(self, query: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(query, params).fetchall()

    # versions
    def record_version(self, hash: str, type_name: str, created: float) -> bool:
        with self._tx() as db:
            return db.execute(Q["record_version"], (hash, type_name, created)).rowcount == 1


    # tasks
    def add_task(self, new: NewTask, place: Callable[[int], None] | None = None) -> Task:
        self._room_for_new_tasks()
        topics = [QUEUE]
        if new.dedupe_key is None and not new.after and new.run is None:
            # Queued as it is: nothing to read back (a submission's hot path).
            with self._tx(notify=topics) as db:
                task_id = db.execute(_INSERT_MANY, _insert_params(new)).lastrowid
                if place is not None:
                    place(task_id)
            return new_task_record(task_id, new)
        with self._tx(notify=topics) as db:
            row, added = _insert_task(db, new, time.time(), self._skipped_in(db, topics))
            if added and place is not None:
                place(row["id"])
        if not added:
            raise DuplicateTask(row["id"])
        return task_from_row(row)

    def add_tasks(self, news: list[NewTask]) -> list[Task]:
        if news:
            self._room_for_new_tasks()
        if any(new.dedupe_key is not None or new.after or new.run for new in news):
            topics = [QUEUE]
            with self._tx(notify=topics) as db:
                now = time.time()
                rows = [_insert_task(db, new, now, self._skipped_in(db, topics))[0]
                        for new in news]
            return [task_from_row(row) for row in rows]
        with self._tx(notify=(QUEUE,) if news else ()) as db:
            # One statement for all: under the write lock their ids are consecutive.
            db.executemany(_INSERT_MANY, [_insert_params(new) for new in news])
            last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(news) + 1
        return [new_task_record(first + n, new) for n, new in enumerate(news)]

    def task_for_key(self, key: str) -> int | None:
        row = self._one(Q["task_for_key"], (key,))
        return row[0] if row else None

    def key_entry(self, key: str) -> tuple[int, str | None] | None:
        row = self._one(Q["key_entry"], (key,))
        return (row[0], row[1]) if row else None

    def get_task(self, task_id: int) -> Task | None:
        row = self._one(Q["get_task"], (task_id,))
        return task_from_row(row) if row else None

    def list_tasks(self, flt: TaskFilter) -> list[Task]:
        where, params = _filter_sql(flt)
        rows = self._all(f"SELECT * FROM tasks {where} ORDER BY {order_sql(flt)} LIMIT ? OFFSET ?",
                         [*params, flt.limit, flt.offset])
        return [task_from_row(r) for r in rows]

    def count_tasks(self, flt: TaskFilter) -> int:
        where, params = _filter_sql(flt)
        return self._one(f"SELECT count(*) FROM tasks {where}", params)[0]

    def delete_task(self, task_id: int) -> Task | None:
        topics: list[str] = []
        with self._tx(notify=topics) as db:
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
            if row is None:
                return None
            db.execute(Q["delete_keys"], (task_id,))
            db.execute(Q["delete_task"], (task_id,))
            db.execute(Q["delete_settled_deliveries"], {"task_id": task_id})
            db.execute(Q["forget_waits"], {"id": task_id})
            if row["state"] not in dependencies.FINAL:  # its dependents were not told yet
                self._settled_in(db, task_id, dependencies.REMOVED, time.time(), topics)
        return task_from_row(row)

    def claim_task(self, claim: Claim) -> Task | None:
        # A claim lost in a power cut puts the task back in the queue: it may run again,
        # never get lost. Not waiting for the disk here takes an fsync off every start.
        with self._tx(durable=False) as db:
            row = replayed_in(db, Q, claim) if claim.key is not None else None
            if row is None and not claim.replay_only:
                row = _claim_in(db, claim)
        if row is not None and self._wal:
            self._wal.sync_wanted()  # the task's submission may still be on its way to disk
        return task_from_row(row) if row else None

    def _update_current(self, task_id: int, token: str, query: str, params: Any) -> Task:
        # Starts, versions and progress of a running attempt: a power cut loses nothing the
        # worker does not report again (or the reaper does not settle).
        with self._tx(durable=False) as db:
            changed = db.execute(query, params).rowcount
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
        return _current_or_raise(task_id, row, changed)

    def bind_version(self, task_id: int, token: str, version: str) -> Task:
        return self._update_current(task_id, token, Q["bind_version"], (version, task_id, token))

    def mark_started(self, task_id: int, token: str, pid: int | None, now: float,
                     directory: str | None = None) -> Task:
        return self._update_current(task_id, token, Q["mark_started"], {
            "id": task_id, "token": token, "pid": pid, "now": now, "directory": directory})

    def heartbeat_task(self, task_id: int, token: str, now: float) -> Task:
        with self._tx(durable=False) as db:
            changed = db.execute(Q["heartbeat"], (now, task_id, token)).rowcount
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
            if changed:
                db.execute(Q["worker_heartbeat"], (now, row["worker"]))
        return _current_or_raise(task_id, row, changed)

    def set_progress(self, task_id: int, token: str | None, value: int,
                     message: str | None) -> Task:
        if token is None:
            with self._tx(durable=False) as db:
                changed = db.execute(Q["progress_any"], (value, message, task_id)).rowcount
                row = db.execute(Q["get_task"], (task_id,)).fetchone()
            if row is None:
                raise NotFound(f"no task {task_id}")
            if not changed:
                raise StaleAttempt(f"task {task_id} is {row['state']}, not running: "
                                   "progress is only taken while it runs")
            return task_from_row(row)
        return self._update_current(task_id, token, Q["progress_by_token"],
                                    (value, message, task_id, token))

    def exchange(self, ends: Sequence[End], claims: Sequence[Claim] = (), *,
                 all_or_none: bool = False) -> tuple[list[Task | BlanketError], list[Task]]:
        topics: list[str] = []  # read by _tx once it commits
        made: list[bool] = []  # whether each final end made deliveries
        woken: list[int] = []  # dependents released or skipped by these ends

        def deliver(row: sqlite3.Row, lost: str | None) -> None:
            made.append(self._deliveries_in(db, row, lost))
            if row["state"] == TaskState.SKIPPED.value:  # a dependent of the ended task
                self._skipping().append(row["type"])

        with self._tx(durable=bool(ends), notify=topics) as db:
            ended, taken, ids = exchange_in(
                ends, claims, all_or_none,
                lambda end: _finish_in(db, end.task_id, end.token, end.outcome, deliver,
                                       woken),
                lambda claim: _claim_in(db, claim), lambda claim: replayed_in(db, Q, claim))
            if ids:  # an end may free a slot of a capped type, or queue a retry
                topics.extend([QUEUE, *map(task_topic, ids), *map(task_topic, woken)])
            if any(made):
                topics.append(DELIVERIES)
        return ([row if isinstance(row, BlanketError) else task_from_row(row) for row in ended],
                [None if row is None else task_from_row(row) for row in taken])

    def passes_over(self, tags: frozenset[str]) -> bool:
        with self._lock:
            return any(lane and not set(lane.split(",")) <= tags
                       for _, lane in _lanes(self._db))

    def release_task(self, task_id: int, token: str) -> Task:
        # Lost in a power cut, the task stays claimed until the reaper queues it again.
        with self._tx(durable=False, notify=(QUEUE,)) as db:
            changed = db.execute(Q["release"], (task_id, token)).rowcount
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
        return _current_or_raise(task_id, row, changed)

    def request_stop(self, task_id: int, by: str | None = None) -> Task:
        with self._tx() as db:
            db.execute(Q["request_stop"], (by, task_id))
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def stop_queued(self, task_id: int, now: float, by: str | None = None) -> Task | None:
        topics: list[str] = []
        with self._tx(notify=topics) as db:
            changed = db.execute(Q["stop_queued"], (now, by, task_id)).rowcount
            row = db.execute(Q["get_task"], (task_id,)).fetchone()
            if changed:
                topics.append(task_topic(task_id))
                self._settled_in(db, task_id, TaskState.STOPPED.value, now, topics, row)
        return task_from_row(row) if changed else None

    def stale_tasks(self, heartbeat_before: float) -> list[Task]:
        return [task_from_row(r) for r in self._all(Q["stale_tasks"], (heartbeat_before,))]

    def next_not_before(self, now: float) -> float | None:
        return self._one(Q["next_not_before"], (now,))[0]

    def recent_durations(self, type_name: str, limit: int = 20) -> list[float]:
        return [r[0] for r in self._all(Q["recent_durations"], (type_name, limit))]

    # workers
    def get_worker(self, worker_id: str) -> Worker | None:
        row = self._one(Q["get_worker"], (worker_id,))
        return worker_from_row(row) if row else None

    def attempt_worker(self, task_id: int, token: str) -> Worker | None:
        row = self._one(Q["attempt_worker"], (task_id, token))
        return worker_from_row(row) if row else None

    def delete_worker(self, worker_id: str) -> bool:
        with self._tx() as db:
            return db.execute(Q["delete_worker"], (worker_id,)).rowcount == 1

    def set_worker_state(self, worker_id: str, state: str) -> Worker | None:
        with self._tx() as db:
            db.execute(Q["set_worker_state"], {"id": worker_id, "state": state})
            row = db.execute(Q["get_worker"], (worker_id,)).fetchone()
        return worker_from_row(row) if row else None

    def stop_worker(self, worker_id: str, mode: str) -> Worker | None:
        with self._tx() as db:
            db.execute(Q["stop_worker"], {"id": worker_id, "mode": mode})
            row = db.execute(Q["get_worker"], (worker_id,)).fetchone()
        return worker_from_row(row) if row else None

    # tokens
    def add_token(self, token: Token) -> None:
        try:
            with self._tx() as db:
                db.execute(Q["insert_token"], token_params(token))
        except sqlite3.IntegrityError:
            raise Conflict(f"a token named {token.name!r} exists already; revoke it first or "
                           "choose another name") from None

    # schedules
    def get_schedule_state(self, name: str) -> ScheduleState | None:
        row = self._one(Q["get_schedule_state"], (name,))
        if row is None:
            return None
        return ScheduleState(name=row["name"], next_fire=row["next_fire"],
                             last_fire=row["last_fire"], last_task=row["last_task"],
                             paused=bool(row["paused"]), pending_fire=row["pending_fire"])

    def planned_schedules(self) -> list[str]:
        return [r[0] for r in self._all(Q["planned_schedules"])]

    def save_schedule_state(self, state: ScheduleState) -> None:
        with self._tx() as db:
            db.execute(Q["save_schedule_state"], {
                "name": state.name, "next_fire": state.next_fire, "last_fire": state.last_fire,
                "last_task": state.last_task, "paused": int(state.paused),
                "pending_fire": state.pending_fire})

    def try_scheduler_lock(self) -> bool:
        return True  # one SQLite file serves one server

    def try_sweep_lock(self) -> bool:
        return True  # one SQLite file serves one server

    def release_sweep_lock(self) -> None:
        pass

    def _id_list(self, values: Sequence[Any]) -> str:
        return json.dumps(list(values))

    def close(self) -> None:
        if self._checkpointer is not None:  # outside the lock: a restart may wait for it
            self._checkpointer.close()
        with self._lock:
            self._db.close()
        if self._checkpointer is not None:  # its -shm descriptor, now that no connection is
            self._checkpointer.release()
        if self._wal:  # outside the lock: a sync may be waiting for it (in _checkpoint)
            self._wal.close()


def _insert_task(db: sqlite3.Connection, new: NewTask, now: float,
                 on_skip: Callable[[sqlite3.Row], Any] = lambda row: None,
                 ) -> tuple[sqlite3.Row, bool]:
    """Insert `new` (in its final state: store/dependencies.py) unless its dedupe key is
    taken: (the row, whether it is new)."""
    if new.dedupe_key is not None:
        seen = db.execute(Q["key_entry"], (new.dedupe_key,)).fetchone()
        if seen:
            same_request(seen[0], seen[1], new.fingerprint)  # else nothing is stored
            return db.execute(Q["get_task"], (seen[0],)).fetchone(), False
    params = _insert_params(new)
    waits = None
    if new.after:
        waits = dependencies.waits_of(Q, db, new.after, new.after_policy, now, json.dumps,
                                      lambda: db.execute(Q["next_task_id"]).fetchone()[0])
        params.update(waits.columns)
    row = db.execute(Q["insert_task"], params).fetchall()[0]
    if new.dedupe_key is not None:
        db.execute(Q["insert_key"], (new.dedupe_key, row["id"], new.fingerprint))
    if waits is not None:
        dependencies.record_waits(Q, db, row, waits, on_skip)
    if new.run is not None:
        db.execute(Q["link_run_task"], run_link(new.run, row["id"]))
    return row, True


def _insert_params(new: NewTask) -> dict[str, Any]:
    return {
        "type": new.type, "environment": json.dumps(new.environment),
        "tags": tags_key(new.tags), "score": new.score, "added": new.added,
        "not_before": new.not_before, "schedule": new.schedule, "retries": new.retries,
        "retry_delay": new.retry_delay, "timeout": new.timeout, "priority": new.priority,
        "inputs": _json_list(new.inputs), "submitted_by": new.submitted_by,
        "secrets": _json_list(new.secrets), **dependencies.NO_WAITS,
    }


def _json_list(values: tuple[str, ...]) -> str:
    return json.dumps(list(values)) if values else "[]"


def _claim_in(db: sqlite3.Connection, claim: Claim) -> sqlite3.Row | None:
    """The claim, inside the caller's transaction."""
    if claim.running is not None:
        db.execute(Q["worker_busy"], {"worker": claim.worker, "id": claim.running,
                                      "now": claim.now})
    # Only capped types need their running count.
    running = dict(db.execute(Q["running_per_type"]).fetchall()) if claim.limits else {}
    idle = [frozenset(json.loads(tags)) for (tags,) in db.execute(
        Q["idle_worker_tags"], (claim.worker, claim.now - IDLE_FRESH))] if claim.reserve else []
    best: tuple[float, int, str] | None = None
    for type_name, tags in _lanes(db):
        limit = claim.limits.get(type_name)
        if limit is not None and running.get(type_name, 0) >= limit:
            continue
        lane = frozenset(tags.split(",")) if tags else frozenset()
        if not lane <= claim.tags or any(lane <= other for other in idle):
            continue
        head = db.execute(Q["lane_head"], (type_name, tags, claim.now)).fetchone()
        if head and (best is None or (head[1], head[0]) < best[:2]):
            best = (head[1], head[0], type_name)
    if best is None:
        return None
    task_id, type_name = best[1], best[2]
    params = {"id": task_id, "worker": claim.worker, "token": uuid.uuid4().hex,
              "now": claim.now, "version": claim.versions.get(type_name), "key": claim.key}
    row = db.execute(Q["claim"], params).fetchall()[0]
    if not claim.reserve:
        db.execute(Q["worker_busy"], params)
    return row


def _finish_in(db: sqlite3.Connection, task_id: int, token: str, outcome: Outcome | Decide,
               deliver: Callable[[sqlite3.Row, str | None], None],
               woken: list[int]) -> sqlite3.Row:
    """End the current attempt, inside the caller's transaction; a final end `deliver`s
    (makes its notifications) and settles the tasks waiting for it (`woken`: those released
    or skipped) there too."""
    row = db.execute(Q["get_task"], (task_id,)).fetchone()
    task = _current_or_raise(task_id, row, int(row is not None and row["token"] == token
                                               and row["state"] in ("CLAIMED", "RUNNING")))
    if callable(outcome):
        outcome = outcome(task)
    history = [*task.attempts, attempt_record(task, outcome)]
    params = {"id": task_id, "token": token, "exit_code": outcome.exit_code,
              "error": outcome.error, "attempts": json.dumps(history),
              "started": outcome.started, "pid": outcome.pid, "directory": outcome.directory}
    if outcome.requeue_at is not None:
        return db.execute(Q["requeue"], {
            **params, "not_before": outcome.requeue_at, "score": outcome.requeue_score,
            "refund": int(outcome.refund)}).fetchall()[0]
    row = db.execute(Q["finish"], {**params, "state": outcome.state.value,
                                   "finished": outcome.finished}).fetchall()[0]
    deliver(row, outcome.lost)
    woken.extend(dependencies.ended(Q, db, task_id, outcome.state.value, outcome.finished,
                                    lambda skipped: deliver(skipped, None)))
    return row


def _lanes(db: sqlite3.Connection) -> Iterator[tuple[str, str]]:
    last = ("", "")
    first = db.execute(
        "SELECT type, tags FROM tasks INDEXED BY tasks_queue WHERE state = 'QUEUED' "
        "ORDER BY type, tags LIMIT 1").fetchone()
    row = first
    while row is not None:
        last = (row[0], row[1])
        yield last
        row = db.execute(Q["next_lane"], last).fetchone()


def _current_or_raise(task_id: int, row: sqlite3.Row | None, changed: int) -> Task:
    if row is None:
        raise NotFound(f"no task {task_id}")
    if not changed:
        raise StaleAttempt(
            f"task {task_id} is no longer held by this attempt (it is {row['state']}, "
            f"attempt {row['attempt']}); this report was refused")
    return task_from_row(row)


def _filter_sql(flt: TaskFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if flt.states:
        clauses.append(f"state IN ({','.join('?' * len(flt.states))})")
        params.extend(flt.states)
    if flt.types:
        clauses.append(f"type IN ({','.join('?' * len(flt.types))})")
        params.extend(flt.types)
    for tag in flt.tags:
        clauses.append("instr(',' || tags || ',', ?) > 0")
        params.append(f",{tag},")
    if flt.schedule is not None:
        clauses.append("schedule = ?")
        params.append(flt.schedule)
    if flt.added_after is not None:
        clauses.append("added >= ?")
        params.append(flt.added_after)
    if flt.added_before is not None:
        clauses.append("added < ?")
        params.append(flt.added_before)
    if flt.worker is not None:
        clauses.append("worker = ?")
        params.append(flt.worker)
    if flt.submitted_by is not None:
        clauses.append("submitted_by = ?")
        params.append(flt.submitted_by)
    if flt.search:
        pattern = "%" + _like_escaped(flt.search) + "%"
        exact = int(flt.search) if flt.search.isdigit() and len(flt.search) < 19 else None
        clauses.append(
            "(id = ? OR type LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM json_each(environment) e "
            "WHERE e.value LIKE ? ESCAPE '\\' AND e.key NOT IN "
            "(SELECT value FROM json_each(secrets))))")
        params.extend([exact, pattern, pattern])
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _like_escaped(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
