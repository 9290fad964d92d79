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
from contextlib import nullcontext

from bench.queue import WORKER_TAGS, build_backlog, percentiles
from blanket.config.retention import Retention
from blanket.models import TaskFilter
from blanket.server.queue import Queue
from blanket.server.retention import RetentionRules
from blanket.server.sweeper import Sweeper
from blanket.store.base import Claim
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
        for task_id in range(first, first + count):
            folder = data.task("old", task_id)
            folder.mkdir(parents=True)
            (folder / "stdout.log").write_bytes(b"hello\n")
            (folder / "stderr.log").write_bytes(b"")


def claims(store: SQLiteStore, claim: Claim, gap: float, until: threading.Event | None,
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
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="blanket-bench-retention-", dir=args.dir))
    try:
        now = time.time()
        data = DataDir(base / "var")
        data.root.mkdir()
        build_backlog(data.store, args.queued, now)
        started = time.perf_counter()
        add_old_tasks(data, args.old, now, not args.no_folders)
        folders = "" if args.no_folders else " with folders"
        print(f"setup: {args.queued:,} queued (half eligible), {args.old:,} old finished tasks"
              f"{folders} in {time.perf_counter() - started:.1f}s")
        store = SQLiteStore(data.store)
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
        store.close()
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
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
