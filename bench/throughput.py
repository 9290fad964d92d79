"""Tasks per second through a real server and `blanket worker -n 2`, next to the same shell
command run directly by 2 threads (the floor for this machine), and the delay from a
submission to its command starting on an idle worker.

    python bench/throughput.py [-n 500] [--samples 50]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import argparse
import ctypes
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.harness import percentile, server_with_workers, wait_until
from blanket.client import Client
from blanket.worker.leftovers import Ledger

PR_SET_PDEATHSIG = 1

ECHO_TYPE = 'command = "echo hello $N"\n[environment.defaults]\nN = "0"\n'
# bash's $EPOCHREALTIME is a builtin: the stamp costs no extra process.
STAMP_TYPE = 'command = "echo $EPOCHREALTIME > started.txt"\n'


def direct_rate(count: int) -> float:
    """Tasks per second running the command straight from 2 threads."""
    def one(n: int) -> None:
        subprocess.run(["bash", "-c", f"echo hello {n}"], stdout=subprocess.DEVNULL, check=True)

    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - began)


def spawn_costs(root: Path, count: int = 300) -> dict[str, float]:
    """Seconds per spawn of a task-like process (own session, waited for): plain; with the
    ledger record blanket keeps so a dead worker's tasks die with it (the chosen way); and
    with PR_SET_PDEATHSIG set in the child (the way not taken: a preexec function makes
    subprocess fork the whole interpreter instead of using vfork)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nothing would tell us
            os._exit(1)

    ledger = Ledger(root)

    def spawn(preexec: Callable[[], None] | None = None, record: bool = False) -> None:
        proc = subprocess.Popen(["/bin/true"], stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)
        name = ledger.add(proc.pid) if record else None
        proc.wait()
        ledger.remove(name)

    def cost(**how: object) -> float:
        began = time.perf_counter()
        for _ in range(count):
            spawn(**how)  # type: ignore[arg-type]
        return (time.perf_counter() - began) / count

    cost()  # warm up: the first round pays for what the later ones find cached
    return {"plain": cost(), "ledger": cost(record=True),
            "pdeathsig": cost(preexec=parent_death_signal)}


def folder_cost(root: Path, count: int = 200) -> float:
    """CPU seconds to make a task's folder with its four files, as the runner does. On some
    filesystems this grows several times over for minutes after a mass delete (a test run),
    and only blanket's side of the comparison makes files: printed to read the figures by."""
    began = time.process_time()
    for n in range(count):
        folder = root / str(n)
        folder.mkdir(parents=True)
        for name in (".blanket-command", "stdout.log", "stderr.log", "task.json"):
            (folder / name).write_bytes(b"x\n")
    return (time.process_time() - began) / count


def blanket_rate(client: Client, count: int) -> float:
    """Tasks per second from the first submission to the last task's end."""
    def submit(n: int) -> int:
        return client.post("/task/", {"type": "echo", "environment": {"N": n}})["id"]

    def done() -> bool:
        ended = client.get("/task/?count&state=SUCCESS,FAILED,TIMEDOUT,STOPPED,LOST&type=echo")
        return ended["count"] >= count

    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(submit, range(count)))
    wait_until(done, timeout=600, interval=0.01)
    elapsed = time.perf_counter() - began
    failed = client.get("/task/?count&state=FAILED,TIMEDOUT,STOPPED,LOST&type=echo")["count"]
    if failed or len(ids) != count:
        raise SystemExit(f"{failed} of {count} tasks did not succeed")
    return count / elapsed


def drain_rate(client: Client, count: int) -> float:
    """Tasks per second through the workers once a backlog of `count` is queued (the workers
    are paused while it is submitted)."""
    workers = [w["id"] for w in client.get("/worker/")]
    for worker in workers:
        client.post(f"/worker/{worker}/pause")
    for n in range(count):
        client.post("/task/", {"type": "echo", "environment": {"N": n}})

    def done() -> bool:
        ended = client.get("/task/?count&state=SUCCESS&type=echo")
        return ended["count"] >= 2 * count

    began = time.perf_counter()
    for worker in workers:
        client.post(f"/worker/{worker}/resume")
    wait_until(done, timeout=600, interval=0.01)
    return count / (time.perf_counter() - began)


def start_delays(client: Client, data_dir: Path, samples: int) -> list[float]:
    """Seconds from submission to the command's own first instruction, one task at a time.
    The submission waits for the task's end (`?wait`) rather than polling for it, so the
    measuring client sends nothing while the task is on its way to the worker."""
    delays = []
    for _ in range(samples):
        time.sleep(0.05)  # the workers are idle, waiting in their long poll
        submitted = time.time()
        task = client.post("/task/?wait=30", {"type": "stamp"})
        if task["state"] != "SUCCESS":
            raise SystemExit(f"start-delay task {task['id']} ended {task['state']}")
        stamp = data_dir / "tasks" / "stamp" / str(task["id"]) / "started.txt"
        delays.append(float(stamp.read_text()) - submitted)
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=500)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with server_with_workers({"echo": ECHO_TYPE, "stamp": STAMP_TYPE},
                             "blanket-bench-") as running:
        base, client = running.base, running.client
        folders = folder_cost(base / "folders")
        spawns = spawn_costs(base / "spawns")
        floor = direct_rate(args.tasks)
        rate = blanket_rate(client, args.tasks)
        drained = drain_rate(client, args.tasks)
        delays = start_delays(client, base / "var", args.samples)
    print(f"direct, 2 threads of subprocess: {floor:.0f} tasks/s")
    print(f"end to end, blanket worker -n 2: {rate:.0f} tasks/s ({args.tasks} tasks)")
    print(f"ratio end to end / direct: {rate / floor:.2f} (target >= 0.6)")
    print(f"queued backlog through blanket worker -n 2: {drained:.0f} tasks/s "
          f"(ratio {drained / floor:.2f})")
    print(f"start delay p50: {percentile(delays, 0.5) * 1000:.1f} ms (target < 5 ms)")
    print(f"start delay p95: {percentile(delays, 0.95) * 1000:.1f} ms")
    print(f"start delay mean: {statistics.fmean(delays) * 1000:.1f} ms ({len(delays)} samples)")
    print(f"spawn: {spawns['plain'] * 1000:.2f} ms plain, {spawns['ledger'] * 1000:.2f} ms with "
          f"the ledger record (chosen), {spawns['pdeathsig'] * 1000:.2f} ms with "
          "PR_SET_PDEATHSIG in a preexec_fn")
    print(f"filesystem: a task folder with four files took {folders * 1000:.2f} ms of CPU "
          "(about 0.1 ms on a quiet ext4)")


if __name__ == "__main__":
    main()
