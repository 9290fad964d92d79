"""A soak: many trivial tasks through a real `blanket server` and `blanket worker -n 2`,
printing every --every tasks the resident memory (RSS) and the open file descriptors of the
server, the worker supervisor and each worker; at the end, the growth after the warm-up (the
first --every tasks) against the targets: at most 10 MB of RSS and 10 fds per process.

    python -P bench/soak.py [--tasks 100000] [--every 10000] [--max-minutes 90]

Loopback only; it stops by itself, at the end or after --max-minutes (exit status 1 when a
target is missed or time ran out).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.harness import server_with_workers, wait_until
from blanket.client import Client

ECHO_TYPE = 'command = "echo hello $N"\n[environment.defaults]\nN = "0"\n'
ENDED = "SUCCESS,FAILED,TIMEDOUT,STOPPED,LOST"
RSS_TARGET_MB = 10.0
FD_TARGET = 10


@dataclass(frozen=True)
class Sample:
    """One process at one moment: resident memory in MB and open file descriptors."""

    rss_mb: float
    fds: int


def sample(pid: int) -> Sample:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return Sample(rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")))


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`, oldest first."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def run_block(client: Client, first: int, count: int, total: int, deadline: float) -> None:
    """Submit tasks first..first+count-1 (2 threads, as the workers run them) and wait until
    `total` tasks have ended."""
    def submit(n: int) -> None:
        client.post("/task/", {"type": "echo", "environment": {"N": n}})

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(submit, range(first, first + count)))

    def ended() -> bool:
        return client.get(f"/task/?count&state={ENDED}&type=echo")["count"] >= total

    wait_until(ended, timeout=max(1.0, deadline - time.monotonic()), interval=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--max-minutes", type=float, default=90.0)
    args = parser.parse_args()
    if args.tasks < 2 * args.every:
        raise SystemExit("--tasks must be at least twice --every (the first block warms up)")
    deadline = time.monotonic() + args.max_minutes * 60
    with server_with_workers({"echo": ECHO_TYPE}, "blanket-soak-") as running:
        ok = soak(running.client, running.server.pid, running.workers.pid,
                  running.base / "var" / "blanket.db", args, deadline)
    raise SystemExit(0 if ok else 1)


def soak(client: Client, server: int, supervisor: int, database: Path,
         args: argparse.Namespace, deadline: float) -> bool:
    """Run the blocks, printing a line after each; True when every target holds."""
    pids = {"server": server, "supervisor": supervisor}
    for n, pid in enumerate(children_of(supervisor), 1):
        pids[f"worker-{n}"] = pid
    print(f"soak: {args.tasks} tasks of a trivial type through blanket server and blanket "
          f"worker -n 2 ({', '.join(f'{name} {pid}' for name, pid in pids.items())})",
          flush=True)
    print(f"{'tasks':>7} {'seconds':>8} {'tasks/s':>8}  " + "  ".join(
        f"{name + ' MB/fds':>20}" for name in pids) + f"  {'db MB':>6}", flush=True)
    began = time.monotonic()
    warm: dict[str, Sample] = {}
    last: dict[str, Sample] = {}
    warm_db = 0.0
    done = 0
    while done < args.tasks:
        count = min(args.every, args.tasks - done)
        block_began = time.monotonic()
        try:
            run_block(client, done, count, done + count, deadline)
        except SystemExit:
            print(f"stopped: --max-minutes {args.max_minutes:g} ran out after {done} tasks")
            return False
        done += count
        rate = count / (time.monotonic() - block_began)
        last = {name: sample(pid) for name, pid in pids.items()}
        warm_db = warm_db or database.stat().st_size / 2**20
        warm = warm or last
        print(f"{done:>7} {time.monotonic() - began:>8.0f} {rate:>8.0f}  " + "  ".join(
            f"{s.rss_mb:>13.1f} / {s.fds:>4}" for s in last.values())
            + f"  {database.stat().st_size / 2**20:>6.1f}", flush=True)
    db_growth = database.stat().st_size / 2**20 - warm_db
    failed = client.get("/task/?count&state=FAILED,TIMEDOUT,STOPPED,LOST&type=echo")["count"]
    print(f"tasks that did not succeed: {failed}")
    ok = failed == 0
    print(f"growth after the warm-up (the first {args.every} tasks), targets "
          f"<= {RSS_TARGET_MB:g} MB RSS and <= {FD_TARGET} fds:")
    for name in pids:
        rss = last[name].rss_mb - warm[name].rss_mb
        fds = last[name].fds - warm[name].fds
        holds = rss <= RSS_TARGET_MB and fds <= FD_TARGET
        ok = ok and holds
        print(f"  {name:<11} RSS {rss:+7.1f} MB  fds {fds:+4d}  "
              f"{'holds' if holds else 'MISSED'}")
    print(f"meanwhile the database grew {db_growth:.1f} MB: the server's SQLite page cache "
          "(up to 8 MiB, blanket/store/sqlite.py) grows with it until full")
    return ok


if __name__ == "__main__":
    main()
