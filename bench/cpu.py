"""CPU time per task of the server and of the worker processes (their own, not the tasks'),
through a real server and `blanket worker -n 2`: a figure the machine's other load barely
moves, unlike tasks per second.

    python -P bench/cpu.py [-n 1000]
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

from bench.harness import server_with_workers, wait_until

ECHO_TYPE = 'command = "echo hello $N"\n[environment.defaults]\nN = "0"\n'
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of the process itself (not its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def worker_pids(root: int) -> list[int]:
    """The worker process and its descendants that are blanket processes (a supervisor's
    children), not the tasks they run."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for child in Path(f"/proc/{pid}/task").glob("*/children"):
            for text in child.read_text().split():
                cmdline = Path(f"/proc/{text}/cmdline").read_bytes()
                if b"blanket" in cmdline and b"worker" in cmdline:
                    todo.append(int(text))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=1000)
    args = parser.parse_args()
    with server_with_workers({"echo": ECHO_TYPE}, "blanket-cpu-") as running:
        client = running.client
        client.post("/task/?wait=30", {"type": "echo"})  # warm: bundle fetched, paths cached
        pids = worker_pids(running.workers.pid)
        server0 = cpu_seconds(running.server.pid)
        workers0 = sum(cpu_seconds(p) for p in pids)
        began = time.perf_counter()

        def submit(n: int) -> None:
            client.post("/task/", {"type": "echo", "environment": {"N": n}})

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(submit, range(args.tasks)))
        wait_until(lambda: client.get("/task/?count&state=SUCCESS")["count"] > args.tasks,
                   timeout=600, interval=0.02)
        elapsed = time.perf_counter() - began
        server = cpu_seconds(running.server.pid) - server0
        workers = sum(cpu_seconds(p) for p in pids) - workers0
    n = args.tasks
    print(f"server CPU per task: {server / n * 1000:.2f} ms")
    print(f"worker processes' CPU per task: {workers / n * 1000:.2f} ms "
          f"({len(pids)} processes)")
    print(f"tasks/s meanwhile: {n / elapsed:.0f} (load-dependent)")


if __name__ == "__main__":
    main()
