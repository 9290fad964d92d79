"""Backup benchmark: how long `blanket backup` and `blanket restore` take for a store of many
tasks, and what a backup costs the submissions that go on meanwhile (the latency of one
durable add_task, during a backup and without one).

Run: .venv/bin/python -P bench/backup.py [--tasks 100000] [--folders 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import shutil
import tempfile
import threading
import time

from bench.harness import percentile
from blanket.backup.create import make_backup
from blanket.backup.restore import restore_backup
from blanket.store.base import NewTask
from blanket.store.sqlite import SQLiteStore
from blanket.taskdir import DataDir


def task(n: int) -> NewTask:
    return NewTask(type=f"type{n % 20}", environment={"N": str(n), "PATH_IN": f"/data/{n}"},
                   tags=("unix",), score=float(n), added=time.time())


def fill(root: Path, tasks: int, folders: int) -> SQLiteStore:
    layout = DataDir(root)
    store = SQLiteStore(layout.store)
    for start in range(0, tasks, 10_000):
        store.add_tasks([task(n) for n in range(start, min(tasks, start + 10_000))])
    layout.versions.mkdir()
    for n in range(20):
        (layout.versions / f"{n:064x}.tar.gz").write_bytes(bytes(4096))
    for n in range(1, folders + 1):  # queued tasks with an input each
        folder = layout.task(f"type{(n - 1) % 20}", n)
        folder.mkdir(parents=True)
        (folder / "input.json").write_text(f'{{"rows": {n}}}\n' * 20)
    return store


def latencies(store: SQLiteStore, seconds: float, during=None) -> tuple[list[float], float]:
    """add_task latencies (ms) for `seconds`, or while `during` runs; and how long it ran."""
    taken: list[float] = []
    done = threading.Event()
    elapsed = [0.0]

    def side() -> None:
        started = time.monotonic()
        if during is not None:
            during()
        else:
            time.sleep(seconds)
        elapsed[0] = time.monotonic() - started
        done.set()

    thread = threading.Thread(target=side)
    thread.start()
    n = 0
    while not done.is_set():
        started = time.perf_counter()
        store.add_task(task(n))
        taken.append((time.perf_counter() - started) * 1000)
        n += 1
    thread.join()
    return taken, elapsed[0]


def show(label: str, values: list[float]) -> None:
    print(f"  {label}: {len(values)} adds, p50 {percentile(values, 0.5):.2f} ms, "
          f"p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="blanket-bench-backup-", dir=args.dir))
    try:
        root = base / "var"
        started = time.monotonic()
        store = fill(root, args.tasks, args.folders)
        db_mb = DataDir(root).store.stat().st_size / 1e6
        print(f"store of {args.tasks} tasks ({db_mb:.1f} MB), {args.folders} task folders, "
              f"20 versions, made in {time.monotonic() - started:.1f}s")
        quiet = make_backup(root, f"sqlite:///{DataDir(root).store}", base / "quiet.tgz")
        print(f"backup, nothing else running: {quiet.seconds:.2f}s, "
              f"{quiet.size / 1e6:.1f} MB written, {db_mb / quiet.seconds:.1f} MB of store/s")
        busy: list = []
        during, took = latencies(store, 0, lambda: busy.append(make_backup(
            root, f"sqlite:///{DataDir(root).store}", base / "busy.tgz")))
        alone, _ = latencies(store, took)
        print(f"backup while add_task runs in a loop: {busy[0].seconds:.2f}s")
        show("add_task during the backup", during)
        show("add_task without a backup", alone)
        started = time.monotonic()
        restore_backup(base / "busy.tgz", base / "restored")
        print(f"restore: {time.monotonic() - started:.2f}s")
        store.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
