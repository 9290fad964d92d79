"""Retention benchmark: claim latency with 100,000 queued tasks, without a sweep and while a
sweep removes 100,000 old finished tasks (records and folders), in the same run on the same
store; and the sweep's rate.

Claims are made one every --gap seconds (as workers coming back for more) in the same process
as the sweep, as in the server (the sweep is one of its threads); each claimed task is put
back, so the queue stays the same throughout.

Run: .venv/bin/python -P bench/retention.py [--queued 100000] [--old 100000] [--dir /var/tmp]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.queue (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext

from bench.queue import WORKER_TAGS, build_backlog, percentiles
from blanket.config.retention import Retention
from blanket.models import TaskFilter
from blanket.server.queue import Queue
from blanket.server.retention import RetentionRules
from blanket.server.sweeper import Sweeper
from blanket.store.base import Claim, Store
from blanket.store.sqlite import SQLiteStore
from blanket.taskdir import DataDir

DAY = 86400.0


def add_old_tasks(data: DataDir, count: int, now: float, folders: bool) -> None:
    """`count` tasks that ended 100 days ago, each with a folder holding its two logs."""
    with sqlite3.connect(data.store) as db:
        db.executemany(
            "INSERT INTO tasks (type, state, environment, tags, score, added, started, "
            "finished, version, attempt) VALUES ('old', 'SUCCESS', '{\"A\": \"1\"}', 'unix', "
            "1, ?, ?, ?, 'v-old', 1)",
            [(now - 100 * DAY - 10, now - 100 * DAY - 5, now - 100 * DAY + n * 0.01)
             for n in range(count)])
        first = db.execute("SELECT min(id) FROM tasks WHERE type = 'old'").fetchone()[0]
    if folders:
        make_folders(data, range(first, first + count))


def make_folders(data: DataDir, ids: range) -> None:
    for task_id in ids:
        folder = data.task("old", task_id)
        folder.mkdir(parents=True)
        (folder / "stdout.log").write_bytes(b"hello\n")
        (folder / "stderr.log").write_bytes(b"")


def sqlite_store(data: DataDir, args: argparse.Namespace, now: float) -> Store:
    build_backlog(data.store, args.queued, now)
    add_old_tasks(data, args.old, now, not args.no_folders)
    return SQLiteStore(data.store)


@contextmanager
def postgres_store(data: DataDir, args: argparse.Namespace, now: float) -> Iterator[Store]:
    """A database of its own on the server `args.database` names, filled as the SQLite one
    (the same shares of eligible, other-tag, held-back and capped queued tasks)."""
    import psycopg

    from blanket.store.postgres import PostgresStore

    name = f"blanket_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    store = PostgresStore(args.database.rsplit("/", 1)[0] + "/" + name)
    try:
        with store._tx() as cur:  # bulk insert: add_task one by one would take minutes
            cur.execute(
                "INSERT INTO tasks (type, state, environment, tags, score, added, not_before) "
                "SELECT CASE g %% 6 WHEN 3 THEN 'gpu' WHEN 5 THEN 'capped' ELSE 'free' END, "
                "'QUEUED', '{}', CASE g %% 6 WHEN 3 THEN 'gpu' ELSE 'unix' END, "
                "%(now)s / 60 + (g %% 1440), %(now)s - (g %% 86400), "
                "CASE g %% 6 WHEN 4 THEN %(now)s + 3600 + (g %% 80000) END "
                "FROM generate_series(1, %(n)s) g", {"now": now, "n": args.queued})
            cur.execute(
                "INSERT INTO tasks (type, state, environment, tags, score, added, token, "
                "heartbeat, worker) SELECT 'capped', 'RUNNING', '{}', 'unix', 0, %(now)s, "
                "md5(g::text), %(now)s, 'elsewhere' FROM generate_series(1, 2) g", {"now": now})
            first = cur.execute(
                "INSERT INTO tasks (type, state, environment, tags, score, added, started, "
                "finished, version, attempt) SELECT 'old', 'SUCCESS', '{\"A\": \"1\"}', "
                "'unix', 1, %(t)s - 10, %(t)s - 5, %(t)s + g * 0.01, 'v-old', 1 "
                "FROM generate_series(1, %(n)s) g RETURNING id",
                {"t": now - 100 * DAY, "n": args.old}).fetchall()
            cur.execute("ANALYZE tasks")
        if not args.no_folders:
            ids = sorted(row["id"] for row in first)
            make_folders(data, range(ids[0], ids[-1] + 1))
        yield store
    finally:
        store.close()
        with psycopg.connect(args.database, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def claims(store: Store, claim: Claim, gap: float, until: threading.Event | None,
           count: int) -> list[float]:
    """Claim latencies: `count` of them, or until `until` is set. Each claimed task is put
    back at once (not timed), so that the queue stays as it was: claimed tasks piling up
    would slow the claims of a capped type's count by themselves."""
    samples: list[float] = []
    while (until is None and len(samples) < count) or (until is not None and not until.is_set()):
        start = time.perf_counter()
        task = store.claim_task(claim)
        samples.append(time.perf_counter() - start)
        if task is None:
            raise SystemExit("the backlog has no eligible task")
        store.release_task(task.id, task.token or "")
        time.sleep(gap)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--old", type=int, default=100_000)
    parser.add_argument("--baseline-claims", type=int, default=3000)
    parser.add_argument("--gap", type=float, default=0.002, help="seconds between claims")
    parser.add_argument("--no-folders", action="store_true", help="old tasks have no folders")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--database", default=None, metavar="postgresql://USER@HOST/DB",
                        help="measure PostgreSQL (a database of its own is made there)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="blanket-bench-retention-", dir=args.dir))
    try:
        now = time.time()
        data = DataDir(base / "var")
        data.root.mkdir()
        started = time.perf_counter()
        with (postgres_store(data, args, now) if args.database
              else closing(sqlite_store(data, args, now))) as store:
            folders = "" if args.no_folders else " with folders"
            print(f"setup ({'PostgreSQL' if args.database else 'SQLite'}): {args.queued:,} "
                  f"queued (half eligible), {args.old:,} old finished tasks{folders} in "
                  f"{time.perf_counter() - started:.1f}s")
            measure(store, data, args, now)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(store: Store, data: DataDir, args: argparse.Namespace, now: float) -> None:
    claim = Claim("bench", frozenset(WORKER_TAGS), {"capped": 2}, now)
    queue = Queue(store, lambda name: None, dict, task_dir=data.task)
    sweeper = Sweeper(store, lambda: RetentionRules(Retention(keep=30 * DAY)), set,
                      nullcontext, data.task, queue.remove_folder, data.versions)

    claims(store, claim, args.gap, None, 200)  # warm-up
    quiet = claims(store, claim, args.gap, None, args.baseline_claims)
    done = threading.Event()
    result: dict = {}

    def sweep() -> None:
        begin = time.perf_counter()
        result["report"] = sweeper.sweep()
        result["seconds"] = time.perf_counter() - begin
        done.set()

    thread = threading.Thread(target=sweep)
    thread.start()
    busy = claims(store, claim, args.gap, done, 0)
    thread.join()
    after = claims(store, claim, args.gap, None, args.baseline_claims)
    left = store.count_tasks(TaskFilter(types=("old",)))
    report = result["report"]
    p99 = {name: sorted(s)[min(len(s) - 1, int(len(s) * 0.99))]
           for name, s in (("quiet", quiet + after), ("busy", busy))}
    print(f"claim without a sweep ({args.queued:,} queued, one every {args.gap * 1000:g} ms):"
          f" before {percentiles(quiet)}, after {percentiles(after)} "
          f"({len(quiet):,} claims each)")
    print(f"claim while {args.old:,} old finished tasks are swept: {percentiles(busy)} "
          f"({len(busy):,} claims)")
    print(f"claim p99 while sweeping / without (before and after together): "
          f"{p99['busy'] / p99['quiet']:.2f}")
    print(f"sweep: {report.tasks:,} tasks and their folders removed in "
          f"{result['seconds']:.1f}s: {report.tasks / result['seconds']:,.0f} tasks/s "
          f"({left:,} old tasks left)")


if __name__ == "__main__":
    main()
