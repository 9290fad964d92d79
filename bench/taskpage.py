"""Server time of the Tasks page's two requests (the count, and the first page of 50) with
100,000 tasks in the store, for each filter the page offers: none, state, type, tag,
worker, submitter, schedule, a start time, a text search, and sorted by a column. Target:
under 300 ms for the page (both requests) with any filter.

    python -P bench/taskpage.py [--tasks 100000] [--repeat 5] [--dir DIR]

Each figure is the median over --repeat runs of the requests over a kept-alive loopback
connection (the client's own share is a few tenths of a millisecond).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.queue (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time

from bench.queue import Server
from blanket.store.sqlite import SQLiteStore

STATES = ["SUCCESS"] * 80 + ["FAILED"] * 10 + ["QUEUED"] * 5 + ["TIMEDOUT"] * 3 + ["LOST"] * 2
TYPES = [f"type_{n}" for n in range(20)]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def build(path: Path, total: int) -> None:
    """`total` tasks of 20 types in every state, added over the last 30 days."""
    SQLiteStore(path).close()
    rng = random.Random(11)
    now = time.time()
    rows = []
    for i in range(total):
        state = rng.choice(STATES)
        added = now - rng.uniform(0, 30 * 86400)
        ended = state != "QUEUED"
        environment = json.dumps({"HOST": f"{rng.choice(WORDS)}-{i % 500}.example",
                                  "N": str(i)})
        rows.append((rng.choice(TYPES), state, environment, rng.choice(["unix", "unix,gpu"]),
                     float(i), added, f"w-{i % 40}" if ended else None,
                     added + 5 if ended else None, added + 60 if ended else None,
                     f"token-{i % 7}", f"sched-{i % 10}" if i % 3 == 0 else None))
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO tasks (type, state, environment, tags, score, added, worker, started,"
            " finished, submitted_by, schedule) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()


FILTERS = {
    "no filter": "",
    "state=FAILED": "state=FAILED",
    "type=type_7": "type=type_7",
    "tags=gpu": "tags=gpu",
    "worker=w-3": "worker=w-3",
    "by=token-2": "by=token-2",
    "schedule=sched-4": "schedule=sched-4",
    "added_after=-1d": "added_after=-1d",
    "state=FAILED&type=type_7": "state=FAILED&type=type_7",
    "q=charlie-42": "q=charlie-42",
    "q=type_1": "q=type_1",
    "sort=finished": "sort=finished",
    "sort=type&order=asc": "sort=type&order=asc",
    "state=FAILED&sort=started": "state=FAILED&sort=started",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blanket-taskpage-", dir=args.dir) as tmp:
        base = Path(tmp)
        (base / "var").mkdir()
        build(base / "var" / "blanket.db", args.tasks)
        server = Server(base)
        try:
            worst = 0.0
            for label, query in FILTERS.items():
                timings = []
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    status, body = server.request("GET", f"/task/?count&{query}")
                    status2, _ = server.request("GET", f"/task/?limit=50&{query}")
                    timings.append(time.perf_counter() - began)
                    if status != 200 or status2 != 200:
                        raise SystemExit(f"{label}: HTTP {status} {body[:200]!r}")
                count = json.loads(body)["count"]
                took = statistics.median(timings) * 1000
                worst = max(worst, took)
                print(f"tasks page, {args.tasks:,} tasks, {label}: {took:.0f} ms "
                      f"(count {count:,} + first 50)", flush=True)
            print(f"tasks page, slowest filter: {worst:.0f} ms (target < 300 ms)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
