"""Checkpoint benchmark: claim and submission latency of the SQLite store while another
thread stores tasks in bulk, which fills the WAL and so makes checkpoints; and the WAL
file's largest size meanwhile.

Run: .venv/bin/python -P bench/checkpoints.py [--samples 5000] [--batch 1000] [--rate 10000]
     [--dir /var/tmp]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import shutil
import tempfile
import threading
import time

from bench.harness import percentile
from blanket.store.base import Claim, NewTask
from blanket.store.sqlite import SQLiteStore


def task(now: float) -> NewTask:
    return NewTask(type="free", environment={"INPUT": "a.pdf", "LEVEL": "3"},
                   tags=("unix",), score=now, added=now)


def figures(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (f"p50 {percentile(ms, 0.5):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
            f"p99.9 {percentile(ms, 0.999):.2f} ms, max {max(ms):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000, help="claims and submissions timed")
    parser.add_argument("--batch", type=int, default=1000, help="tasks a bulk insert")
    parser.add_argument("--rate", type=float, default=10_000, help="tasks a second stored in bulk")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="blanket-bench-", dir=args.dir))
    store = SQLiteStore(base / "blanket.db")
    wal = base / "blanket.db-wal"
    stop = threading.Event()
    stored = [0]
    largest = [0]

    def intake() -> None:
        due = time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            due += args.batch / args.rate
            store.add_tasks([task(time.time())] * args.batch)
            stored[0] += args.batch
            largest[0] = max(largest[0], os.stat(wal).st_size)

    try:
        store.add_tasks([task(time.time())] * args.samples)  # something to claim
        thread = threading.Thread(target=intake)
        began = time.perf_counter()
        thread.start()
        claim = Claim("bench", frozenset({"unix"}), {}, time.time())
        claims, submissions = [], []
        for _ in range(args.samples):
            start = time.perf_counter()
            store.claim_task(claim)
            claims.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.add_task(task(time.time()))
            submissions.append(time.perf_counter() - start)
        stop.set()
        thread.join()
        seconds = time.perf_counter() - began
    finally:
        store.close()
        shutil.rmtree(base, ignore_errors=True)
    print(f"under bulk intake ({args.batch:,} tasks a transaction, {stored[0] / seconds:,.0f} "
          f"tasks/s stored meanwhile, {args.rate:,.0f} asked):")
    print(f"  claim (SQLiteStore.claim_task): {figures(claims)}")
    print(f"  submission (SQLiteStore.add_task, durable): {figures(submissions)}")
    print(f"  largest WAL file: {largest[0] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
