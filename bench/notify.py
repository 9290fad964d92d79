"""What notifications cost the end of a task, in the store itself (no HTTP): ends per second
and each end's time with no [[notify]] block, with blocks that no end asks for, and with one
and three targets (a delivery row each, made in the ending transaction); then how fast the
delivery loop's store side (take and settle) goes.

    python -P bench/notify.py [--ends 2000] [--rounds 3] [--database postgresql://...]

Each variant has a store of its own and their ends take turns one by one (the machine and
the disk drift); the figures are each variant's median over the rounds. With --database all
four share one PostgreSQL database.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

from blanket.models import TaskState
from blanket.store import open_store
from blanket.store.base import Claim, DeliveryTarget, NewTask, Outcome, Store

TARGET = json.dumps({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "format": "json",
                     "timeout": 10.0, "label": "http://127.0.0.1/…", "origin": "bench"})
VARIANTS: dict[str, Callable[[str, str | None, str], tuple[DeliveryTarget, ...]]] = {
    "no block": lambda *_: (),
    "blocks, none asks": lambda t, s, event: () if event == "success" else (
        DeliveryTarget("a", TARGET),),
    "1 target": lambda *_: (DeliveryTarget("a", TARGET),),
    "3 targets": lambda *_: tuple(DeliveryTarget(k, TARGET) for k in "abc"),
}


def claimed_tasks(store: Store, ends: int) -> list:
    """`ends` tasks added and claimed, to be ended."""
    now = time.time()
    store.add_tasks([NewTask(type="echo", environment={}, tags=(), score=float(n), added=now)
                     for n in range(ends)])
    return [store.claim_task(Claim(worker="w", tags=frozenset(), now=now)) for _ in range(ends)]


def end_one(store: Store, task) -> float:
    began = time.perf_counter()
    store.finish_task(task.id, task.token, Outcome(TaskState.SUCCESS, 0, None, time.time()))
    return time.perf_counter() - began


def loop_rate(store: Store) -> tuple[int, float]:
    """(deliveries, per second) taken and settled by the loop's store verbs, 16 at a time."""
    began, done = time.perf_counter(), 0
    while batch := store.claim_deliveries(time.time(), time.time() + 60, 16):
        for delivery in batch:
            store.settle_delivery(delivery, time.time(), state="delivered", result="HTTP 204")
        done += len(batch)
    return done, done / max(1e-9, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="", help="a PostgreSQL URL (default: SQLite)")
    args = parser.parse_args()
    results: dict[str, list[list[float]]] = {name: [] for name in VARIANTS}
    loops: list[float] = []
    with tempfile.TemporaryDirectory(prefix="blanket-notify-bench-", dir="/var/tmp") as tmp:
        for round_ in range(args.rounds):
            # One store per variant, their ends taking turns one by one: the disk's and the
            # machine's drift falls on every variant alike.
            stores = {name: open_store(args.database or f"sqlite:///{tmp}/{round_}-{n}.db")
                      for n, name in enumerate(VARIANTS)}
            try:
                tasks = {}
                for name, store in stores.items():
                    store.notify_targets = VARIANTS[name]
                    tasks[name] = claimed_tasks(store, args.ends)
                times: dict[str, list[float]] = {name: [] for name in VARIANTS}
                for n in range(args.ends):
                    names = list(VARIANTS)
                    for name in names[n % len(names):] + names[:n % len(names)]:
                        times[name].append(end_one(stores[name], tasks[name][n]))
                for name in VARIANTS:
                    results[name].append(times[name])
                loops.append(loop_rate(stores["3 targets"])[1])
                if args.database:
                    loop_rate(stores["1 target"])  # leave the shared database without due rows
            finally:
                for store in stores.values():
                    store.close()
    backend = "PostgreSQL" if args.database else "SQLite"
    print(f"{backend}, {args.ends} ends a round, {args.rounds} rounds (median of rounds):")
    base = statistics.median(len(t) / sum(t) for t in results["no block"])
    for name, rounds in results.items():
        rate = statistics.median(len(t) / sum(t) for t in rounds)
        p50 = statistics.median(statistics.median(t) for t in rounds) * 1e6
        p95 = statistics.median(sorted(t)[int(len(t) * 0.95)] for t in rounds) * 1e6
        print(f"  {name:18} {rate:7.0f} ends/s ({rate / base:.2f} of no block), "
              f"end p50 {p50:6.0f} us, p95 {p95:6.0f} us")
    print(f"  delivery loop's store side: {statistics.median(loops):.0f} deliveries/s taken "
          "and settled (16 at a time)")


if __name__ == "__main__":
    main()
