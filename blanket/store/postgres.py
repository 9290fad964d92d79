"""The PostgreSQL store: for several servers or a store that outlives one disk.

Claims skip rows other claimers hold (FOR UPDATE SKIP LOCKED), changes are announced with
NOTIFY blanket_queue so idle workers on every server wake at once, and a session advisory lock
lets only one server run the scheduler.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from blanket.errors import (
    BlanketError,
    Conflict,
    DuplicateTask,
    NotFound,
    StaleAttempt,
    same_request,
)
from blanket.models import ScheduleState, Task, TaskFilter, TaskState, Token, Worker
from blanket.store import dependencies
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
from blanket.store.rows import (
    attempt_record,
    run_link,
    tags_key,
    task_from_row,
    token_params,
    worker_from_row,
)
from blanket.store.sql import load_migrations, load_queries
from blanket.store.sqlverbs import SqlVerbs
from blanket.wakeups import DELIVERIES, QUEUE, task_topic

Q = load_queries("postgres")

# First key of every advisory lock blanket takes, so they never meet another application's.
LOCK_NAMESPACE = 0x626C6E6B  # "blnk"
# ... and of the transaction locks on dedupe keys (their second key a hash of the key), apart
# from the locks above, some of which a session holds for as long as its server runs.
KEY_LOCK_NAMESPACE = 0x626C6B79  # "blky"
CHANNEL = "blanket_queue"
Row = dict[str, Any]


class _Pool:
    """A few connections shared by threads; a broken or mid-transaction one is never reused."""

    def __init__(self, url: str, size: int):
        self.url = url
        self._idle: queue.LifoQueue[psycopg.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._all: list[psycopg.Connection] = []
        self.backend_pids: set[int] = set()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=False, row_factory=dict_row)
        conn.execute("SET synchronous_commit = on")
        conn.commit()
        with self._lock:
            self._all.append(conn)
            self.backend_pids.add(conn.info.backend_pid)
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._slots:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                yield conn
            finally:
                if conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self._discard(conn)
                else:
                    self._idle.put(conn)

    def _discard(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
            self.backend_pids.discard(conn.info.backend_pid)
        conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class PostgresStore(SqlVerbs):
    queries = Q

    def __init__(self, url: str, pool_size: int = 8):
        self.url = url
        self._pool = _Pool(url, pool_size)
        self._callback: Callable[..., None] = lambda *topics: None
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._scheduler_conn: psycopg.Connection | None = None
        self._sweep_conn: psycopg.Connection | None = None
        self._migrate()

    # wake-ups
    @property
    def on_change(self) -> Callable[..., None]:  # type: ignore[override]
        return self._callback

    @on_change.setter
    def on_change(self, callback: Callable[..., None]) -> None:
        self._callback = callback
        self.start_listening()

    def announce(self, *topics: str) -> None:
        with self._tx() as cur:
            cur.execute(Q["notify"], {"topics": " ".join(topics)})
        self._callback(*topics)

    def start_listening(self) -> None:
        """Call on_change for every change announced by any server on this database."""
        if self._listener is None:
            ready = threading.Event()
            self._listener = threading.Thread(target=self._listen, args=(ready,),
                                              name="blanket-listen", daemon=True)
            self._listener.start()
            ready.wait(10)

    def _listen(self, ready: threading.Event) -> None:
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if ready.is_set():  # changes made while reconnecting were missed: look again
                        self._callback()
                    ready.set()
                    self._relay(conn)
            except psycopg.OperationalError:
                self._closing.wait(1.0)

    def _relay(self, conn: psycopg.Connection) -> None:
        while not self._closing.is_set():
            for note in conn.notifies(timeout=0.2):
                # This server's own changes already called on_change when they committed.
                if note.pid not in self._pool.backend_pids:
                    self._callback(*note.payload.split())  # no topics: everything

    def try_scheduler_lock(self) -> bool:
        """True while this store holds the one scheduler lock among all servers on this database."""
        if self._scheduler_conn is not None and not self._scheduler_conn.closed:
            try:
                self._scheduler_conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                self._scheduler_conn.close()
        self._scheduler_conn = self._session_lock("scheduler_lock")
        return self._scheduler_conn is not None

    def try_sweep_lock(self) -> bool:
        """A session advisory lock on a connection of its own, held until released."""
        self.release_sweep_lock()
        self._sweep_conn = self._session_lock("sweep_lock")
        return self._sweep_conn is not None

    def _session_lock(self, query: str) -> psycopg.Connection | None:
        """A connection of its own holding the session advisory lock `query` takes (the
        lock ends with the connection), or None when another server holds it."""
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
        row = conn.execute(Q[query], {"namespace": LOCK_NAMESPACE}).fetchone()
        if row and row["locked"]:
            return conn
        conn.close()
        return None

    def release_sweep_lock(self) -> None:
        conn, self._sweep_conn = self._sweep_conn, None
        if conn is not None:
            conn.close()  # a session lock ends with its session

    # plumbing
    @contextmanager
    def _tx(self, durable: bool = True, write: bool = True) -> Iterator[psycopg.Cursor[Row]]:
        """One transaction. Not `durable`: the commit does not wait for the WAL flush, for a
        change whose loss in a power cut harms nothing (a claim, a heartbeat), as in SQLite.
        A `write`'s commit is timed (on_commit)."""
        with self._pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    if not durable:
                        cur.execute("SET LOCAL synchronous_commit = off")
                    yield cur
            except BaseException:
                self._skips_done(committed=False)
                if not conn.broken:
                    conn.rollback()
                raise
            began = time.perf_counter()
            try:
                conn.commit()
            except BaseException:
                self._skips_done(committed=False)
                raise
            self._skips_done(committed=True)
            if write:
                self.on_commit(time.perf_counter() - began, durable)

    def _one(self, query: str, params: Any = None) -> Row | None:
        with self._tx(write=False) as cur:
            return cur.execute(query, params).fetchone()

    def _all(self, query: str, params: Any = None) -> list[Row]:
        with self._tx(write=False) as cur:
            return cur.execute(query, params).fetchall()

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute(Q["migration_lock"], {"namespace": LOCK_NAMESPACE})
            cur.execute(Q["create_schema_table"])
            applied = {r["version"] for r in cur.execute(Q["applied_migrations"]).fetchall()}
            for number, sql in load_migrations("postgres"):
                if number not in applied:
                    cur.execute(sql)
                    cur.execute(Q["record_migration"], {"version": number})

    # versions
    def record_version(self, hash: str, type_name: str, created: float) -> bool:
        with self._tx() as cur:
            params = {"hash": hash, "type": type_name, "created": created}
            return cur.execute(Q["record_version"], params).rowcount == 1


    # tasks
    def add_task(self, new: NewTask, place: Callable[[int], None] | None = None) -> Task:
        topics = [QUEUE]
        try:
            row = self._insert_task(new, place, topics)
        except _KeyTaken:
            first = self.key_entry(new.dedupe_key or "")
            if first is None:  # the first task was deleted meanwhile, freeing its key
                return self.add_task(new, place)
            same_request(first[0], first[1], new.fingerprint)
            raise DuplicateTask(first[0]) from None
        self._callback(*topics)
        return task_from_row(row)

    def _insert_task(self, new: NewTask, place: Callable[[int], None] | None,
                     topics: list[str]) -> Row:
        with self._tx() as cur:
            row = _insert_row(cur, new, self._skipped_in(cur, topics))
            if place is not None:
                place(row["id"])
            cur.execute(Q["notify"], {"topics": " ".join(topics)})
        return row

    def add_tasks(self, news: list[NewTask]) -> list[Task]:
        if not news:
            return []
        for _ in range(KEY_RACE_TRIES):
            topics = [QUEUE]
            try:
                with self._tx() as cur:
                    keys = sorted({new.dedupe_key for new in news if new.dedupe_key})
                    if len(keys) > 1:
                        # Lists sharing keys take them in one order, so two stored at once
                        # wait for each other rather than deadlock (each holding a key the
                        # other inserts next).
                        cur.execute(Q["lock_keys"], {"namespace": KEY_LOCK_NAMESPACE,
                                                     "keys": keys})
                    skipped = self._skipped_in(cur, topics)
                    rows = [self._existing_row(cur, new) or _insert_row(cur, new, skipped)
                            for new in news]
                    cur.execute(Q["notify"], {"topics": " ".join(topics)})
            except _KeyTaken:
                # Another server stored a task with one of these keys while this transaction
                # waited for it: all again, finding it this time, so that the list is still
                # stored whole or not at all (one at a time, a refusal at place 2 would leave
                # places 0 and 1 stored).
                continue
            self._callback(*topics)
            return [task_from_row(row) for row in rows]
        raise Conflict("the dedupe keys of these tasks were taken and freed again by other "
                       f"requests {KEY_RACE_TRIES} times while they were stored; send them again")

    def _existing_row(self, cur: Any, new: NewTask) -> Row | None:
        if new.dedupe_key is None:
            return None
        seen = cur.execute(Q["key_entry"], {"key": new.dedupe_key}).fetchone()
        if seen is None:
            return None
        same_request(seen["task_id"], seen["fingerprint"], new.fingerprint)  # rolls back
        return cur.execute(Q["get_task"], {"id": seen["task_id"]}).fetchone()

    def task_for_key(self, key: str) -> int | None:
        row = self._one(Q["task_for_key"], {"key": key})
        return row["task_id"] if row else None

    def key_entry(self, key: str) -> tuple[int, str | None] | None:
        row = self._one(Q["key_entry"], {"key": key})
        return (row["task_id"], row["fingerprint"]) if row else None

    def get_task(self, task_id: int) -> Task | None:
        row = self._one(Q["get_task"], {"id": task_id})
        return task_from_row(row) if row else None

    def list_tasks(self, flt: TaskFilter) -> list[Task]:
        where, params = _filter_sql(flt)
        rows = self._all(f"SELECT * FROM tasks {where} ORDER BY {order_sql(flt)} "
                         "LIMIT %(limit)s OFFSET %(offset)s",
                         {**params, "limit": flt.limit, "offset": flt.offset})
        return [task_from_row(r) for r in rows]

    def count_tasks(self, flt: TaskFilter) -> int:
        where, params = _filter_sql(flt)
        row = self._one(f"SELECT count(*) AS n FROM tasks {where}", params)
        return row["n"] if row else 0

    def delete_task(self, task_id: int) -> Task | None:
        woken: list[str] = []
        with self._tx() as cur:
            row = cur.execute(Q["delete_task"], {"id": task_id}).fetchone()
            if row is not None:
                cur.execute(Q["delete_keys"], {"id": task_id})
                cur.execute(Q["delete_settled_deliveries"], {"task_id": task_id})
                cur.execute(Q["forget_waits"], {"id": task_id})
                if row["state"] not in dependencies.FINAL:  # its dependents were not told
                    self._settled_in(cur, task_id, dependencies.REMOVED, time.time(), woken)
                if woken:
                    cur.execute(Q["notify"], {"topics": " ".join(woken)})
        if woken:
            self._callback(*woken)
        return task_from_row(row) if row else None

    def claim_task(self, claim: Claim) -> Task | None:
        with self._tx(durable=False) as cur:
            row = replayed_in(cur, Q, claim) if claim.key is not None else None
            if row is None and not claim.replay_only:
                row = _claim_in(cur, claim)
        return task_from_row(row) if row else None

    def _update_current(self, task_id: int, query: str, params: dict[str, Any]) -> Task:
        with self._tx(durable=False) as cur:
            row = cur.execute(query, {"id": task_id, **params}).fetchone()
            if row is None:
                _raise_not_current(task_id, cur)
        return task_from_row(row)

    def bind_version(self, task_id: int, token: str, version: str) -> Task:
        return self._update_current(task_id, Q["bind_version"],
                                    {"token": token, "version": version})

    def mark_started(self, task_id: int, token: str, pid: int | None, now: float,
                     directory: str | None = None) -> Task:
        return self._update_current(task_id, Q["mark_started"], {
            "token": token, "pid": pid, "now": now, "directory": directory})

    def heartbeat_task(self, task_id: int, token: str, now: float) -> Task:
        with self._tx(durable=False) as cur:
            row = cur.execute(Q["heartbeat"], {"id": task_id, "token": token,
                                               "now": now}).fetchone()
            if row is None:
                _raise_not_current(task_id, cur)
            cur.execute(Q["worker_heartbeat"], {"now": now, "worker": row["worker"]})
        return task_from_row(row)

    def set_progress(self, task_id: int, token: str | None, value: int,
                     message: str | None) -> Task:
        if token is None:
            return self._update_current(task_id, Q["progress_any"],
                                        {"value": value, "message": message})
        return self._update_current(task_id, Q["progress_by_token"],
                                    {"token": token, "value": value, "message": message})

    def exchange(self, ends: Sequence[End], claims: Sequence[Claim] = (), *,
                 all_or_none: bool = False) -> tuple[list[Task | BlanketError], list[Task]]:
        topics: list[str] = []
        made: list[bool] = []  # whether each final end made deliveries
        woken: list[int] = []  # dependents released or skipped by these ends

        def deliver(row: Row, lost: str | None) -> None:
            made.append(self._deliveries_in(cur, row, lost))
            if row["state"] == TaskState.SKIPPED.value:  # a dependent of the ended task
                self._skipping().append(row["type"])

        with self._tx(durable=bool(ends)) as cur:
            ended, taken, ids = exchange_in(
                ends, claims, all_or_none,
                lambda end: _finish_in(cur, end.task_id, end.token, end.outcome, deliver,
                                       woken),
                lambda claim: _claim_in(cur, claim), lambda claim: replayed_in(cur, Q, claim))
            if ids:  # an end may free a slot of a capped type, or queue a retry
                topics = [QUEUE, *map(task_topic, ids), *map(task_topic, woken),
                          *([DELIVERIES] if any(made) else [])]
                cur.execute(Q["notify"], {"topics": " ".join(topics)})
        if topics:
            self._callback(*topics)
        return ([row if isinstance(row, BlanketError) else task_from_row(row) for row in ended],
                [None if row is None else task_from_row(row) for row in taken])

    def passes_over(self, tags: frozenset[str]) -> bool:
        row = self._one(Q["passes_over"], {"tags": sorted(tags)})
        return bool(row and row["passes_over"])

    def release_task(self, task_id: int, token: str) -> Task:
        # Lost in a power cut, the task stays claimed until the reaper queues it again.
        with self._tx(durable=False) as cur:
            row = cur.execute(Q["release"], {"id": task_id, "token": token}).fetchone()
            if row is None:
                _raise_not_current(task_id, cur)
            cur.execute(Q["notify"], {"topics": QUEUE})
        self._callback(QUEUE)
        return task_from_row(row)

    def request_stop(self, task_id: int, by: str | None = None) -> Task:
        with self._tx() as cur:
            cur.execute(Q["request_stop"], {"id": task_id, "by": by})
            row = cur.execute(Q["get_task"], {"id": task_id}).fetchone()
        if row is None:
            raise NotFound(f"no task {task_id}")
        return task_from_row(row)

    def stop_queued(self, task_id: int, now: float, by: str | None = None) -> Task | None:
        topics: list[str] = []
        with self._tx() as cur:
            row = cur.execute(Q["stop_queued"], {"id": task_id, "now": now, "by": by}).fetchone()
            if row is not None:
                topics.append(task_topic(task_id))
                self._settled_in(cur, task_id, TaskState.STOPPED.value, now, topics, row)
                cur.execute(Q["notify"], {"topics": " ".join(topics)})
        if row is None:
            return None
        self._callback(*topics)
        return task_from_row(row)

    def stale_tasks(self, heartbeat_before: float) -> list[Task]:
        return [task_from_row(r) for r in self._all(Q["stale_tasks"], {"before": heartbeat_before})]

    def next_not_before(self, now: float) -> float | None:
        row = self._one(Q["next_not_before"], {"now": now})
        return row["at"] if row else None

    def recent_durations(self, type_name: str, limit: int = 20) -> list[float]:
        rows = self._all(Q["recent_durations"], {"type": type_name, "limit": limit})
        return [r["duration"] for r in rows]

    # workers
    def get_worker(self, worker_id: str) -> Worker | None:
        row = self._one(Q["get_worker"], {"id": worker_id})
        return worker_from_row(row) if row else None

    def attempt_worker(self, task_id: int, token: str) -> Worker | None:
        row = self._one(Q["attempt_worker"], {"id": task_id, "token": token})
        return worker_from_row(row) if row else None

    def delete_worker(self, worker_id: str) -> bool:
        with self._tx() as cur:
            return cur.execute(Q["delete_worker"], {"id": worker_id}).rowcount == 1

    def set_worker_state(self, worker_id: str, state: str) -> Worker | None:
        with self._tx() as cur:
            row = cur.execute(Q["set_worker_state"], {"id": worker_id, "state": state}).fetchone()
            if row is None:  # stopping (unchanged), or no such worker
                row = cur.execute(Q["get_worker"], {"id": worker_id}).fetchone()
        return worker_from_row(row) if row else None

    def stop_worker(self, worker_id: str, mode: str) -> Worker | None:
        with self._tx() as cur:
            row = cur.execute(Q["stop_worker"], {"id": worker_id, "mode": mode}).fetchone()
        return worker_from_row(row) if row else None

    # tokens
    def add_token(self, token: Token) -> None:
        params = {**token_params(token), "types": Jsonb(list(token.types)),
                  "tags": Jsonb(list(token.tags))}
        try:
            with self._tx() as cur:
                cur.execute(Q["insert_token"], params)
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"a token named {token.name!r} exists already; revoke it first or "
                           "choose another name") from None

    # schedules
    def get_schedule_state(self, name: str) -> ScheduleState | None:
        row = self._one(Q["get_schedule_state"], {"name": name})
        if row is None:
            return None
        return ScheduleState(name=row["name"], next_fire=row["next_fire"],
                             last_fire=row["last_fire"], last_task=row["last_task"],
                             paused=row["paused"], pending_fire=row["pending_fire"])

    def planned_schedules(self) -> list[str]:
        return [r["name"] for r in self._all(Q["planned_schedules"])]

    def save_schedule_state(self, state: ScheduleState) -> None:
        with self._tx() as cur:
            cur.execute(Q["save_schedule_state"], {
                "name": state.name, "next_fire": state.next_fire, "last_fire": state.last_fire,
                "last_task": state.last_task, "paused": state.paused,
                "pending_fire": state.pending_fire})

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(5)
        if self._scheduler_conn is not None:
            self._scheduler_conn.close()
        self.release_sweep_lock()
        self._pool.close()


KEY_RACE_TRIES = 3  # a list of tasks stored again when another server took one of its keys


class _KeyTaken(Exception):
    """Raised inside add_task's transaction so it rolls back before DuplicateTask is raised."""


def _raise_not_current(task_id: int, cur: psycopg.Cursor[Row]) -> None:
    row = cur.execute(Q["get_task"], {"id": task_id}).fetchone()
    if row is None:
        raise NotFound(f"no task {task_id}")
    raise StaleAttempt(
        f"task {task_id} is no longer held by this attempt (it is {row['state']}, "
        f"attempt {row['attempt']}); this report was refused")


def _filter_sql(flt: TaskFilter) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if flt.states:
        clauses.append("state = ANY(%(states)s::text[])")
        params["states"] = list(flt.states)
    if flt.types:
        clauses.append("type = ANY(%(types)s::text[])")
        params["types"] = list(flt.types)
    if flt.tags:
        clauses.append("string_to_array(tags, ',') @> %(tags)s::text[]")
        params["tags"] = list(flt.tags)
    if flt.schedule is not None:
        clauses.append("schedule = %(schedule)s")
        params["schedule"] = flt.schedule
    if flt.added_after is not None:
        clauses.append("added >= %(added_after)s")
        params["added_after"] = flt.added_after
    if flt.added_before is not None:
        clauses.append("added < %(added_before)s")
        params["added_before"] = flt.added_before
    if flt.worker is not None:
        clauses.append("worker = %(worker)s")
        params["worker"] = flt.worker
    if flt.submitted_by is not None:
        clauses.append("submitted_by = %(submitted_by)s")
        params["submitted_by"] = flt.submitted_by
    if flt.search:
        escaped = flt.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["search_like"] = f"%{escaped}%"
        params["search_id"] = (int(flt.search) if flt.search.isdigit() and len(flt.search) < 19
                               else None)
        clauses.append(
            "(id = %(search_id)s OR type ILIKE %(search_like)s OR EXISTS (SELECT 1 FROM "
            "jsonb_each_text(environment) e WHERE e.value ILIKE %(search_like)s "
            "AND NOT secrets ? e.key))")
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _insert_row(cur: Any, new: NewTask,
                on_skip: Callable[[Row], Any] = lambda row: None) -> Row:
    """Insert `new` (in its final state: store/dependencies.py) and its dedupe key;
    _KeyTaken when the key is used already."""
    params = {
        "id": None, "type": new.type, "environment": Jsonb(new.environment),
        "tags": tags_key(new.tags), "score": new.score, "added": new.added,
        "not_before": new.not_before, "schedule": new.schedule, "retries": new.retries,
        "retry_delay": new.retry_delay, "timeout": new.timeout, "priority": new.priority,
        "inputs": Jsonb(list(new.inputs)), "submitted_by": new.submitted_by,
        "secrets": Jsonb(list(new.secrets)), **dependencies.NO_WAITS,
    }
    waits = None
    if new.after:
        if new.dedupe_key is not None:
            # The key first, under the id the row will have, as before the tasks waited for
            # are locked: waiting here for a concurrent insert of the same key, it holds no
            # lock an end of one of those could wait for (while that insert waits for it).
            params["id"] = _next_task_id(cur)
            _insert_key(cur, new, params["id"])
        waits = dependencies.waits_of(Q, cur, new.after, new.after_policy, time.time(), list,
                                      lambda: _next_task_id(cur), params["id"])
        params.update(waits.columns)
    row = cur.execute(Q["insert_task"], params).fetchone()
    if new.dedupe_key is not None and params["id"] is None:
        _insert_key(cur, new, row["id"])
    if waits is not None:
        dependencies.record_waits(Q, cur, row, waits, on_skip)
    if new.run is not None:
        cur.execute(Q["link_run_task"], run_link(new.run, row["id"]))
    return row


def _next_task_id(cur: Any) -> int:
    return cur.execute(Q["next_task_id"]).fetchone()["id"]


def _insert_key(cur: Any, new: NewTask, task_id: int) -> None:
    if not cur.execute(Q["insert_key"], {"key": new.dedupe_key, "task_id": task_id,
                                         "fingerprint": new.fingerprint}).fetchone():
        raise _KeyTaken()


def _claim_in(cur: Any, claim: Claim) -> Row | None:
    """The claim, inside the caller's transaction."""
    capped = sorted(claim.limits)
    # Sorted, so two claimers taking several type locks never wait on each other in a cycle.
    for type_name in capped:
        cur.execute(Q["type_cap_lock"], {"namespace": LOCK_NAMESPACE, "type": type_name})
    active = {r["type"]: r["active"]
              for r in cur.execute(Q["active_per_type"], {"types": capped}).fetchall()}
    full = [t for t in capped if active.get(t, 0) >= claim.limits[t]]
    if claim.running is not None:
        cur.execute(Q["worker_busy"], {"worker": claim.worker, "id": claim.running,
                                       "now": claim.now})
    idle = [tags_key(r["tags"]) for r in cur.execute(Q["idle_worker_tags"], {
        "worker": claim.worker, "since": claim.now - IDLE_FRESH}).fetchall()
            ] if claim.reserve else []
    row = cur.execute(Q["claim"], {
        "worker": claim.worker, "token": uuid.uuid4().hex, "now": claim.now, "key": claim.key,
        "tags": sorted(claim.tags), "full_types": full, "idle_tags": idle,
        "versions": Jsonb(dict(claim.versions))}).fetchone()
    if row is not None and not claim.reserve:
        cur.execute(Q["worker_busy"], {"worker": claim.worker, "id": row["id"],
                                       "now": claim.now})
    return row


def _finish_in(cur: Any, task_id: int, token: str, outcome: Outcome | Decide,
               deliver: Callable[[Row, str | None], None], woken: list[int]) -> Row:
    """End the current attempt, inside the caller's transaction; a final end `deliver`s
    (makes its notifications) and settles the tasks waiting for it (`woken`: those released
    or skipped) there too."""
    row = cur.execute(Q["lock_current"], {"id": task_id, "token": token}).fetchone()
    if row is None:
        _raise_not_current(task_id, cur)
    task = task_from_row(row)
    if callable(outcome):
        outcome = outcome(task)
    history = [*task.attempts, attempt_record(task, outcome)]
    params = {"id": task_id, "exit_code": outcome.exit_code, "error": outcome.error,
              "attempts": Jsonb(history), "started": outcome.started,
              "pid": outcome.pid, "directory": outcome.directory}
    if outcome.requeue_at is not None:
        return cur.execute(Q["requeue"], {
            **params, "not_before": outcome.requeue_at, "score": outcome.requeue_score,
            "refund": int(outcome.refund)}).fetchone()
    row = cur.execute(Q["finish"], {**params, "state": outcome.state.value,
                                    "finished": outcome.finished}).fetchone()
    deliver(row, outcome.lost)
    woken.extend(dependencies.ended(Q, cur, task_id, outcome.state.value, outcome.finished,
                                    lambda skipped: deliver(skipped, None)))
    return row
