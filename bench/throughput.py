"""Tasks per second through a real server and `blanket worker -n 2`, next to Huey (SqliteHuey,
2 process workers) and to the same shell command run directly by 2 threads (the floor for
this machine), on one workload: each job makes a fresh folder and runs `bash -c "echo hello
N"` with its stdout and stderr in files there, submitted from 2 threads; with what each part
of each system spent in CPU per task in those rounds (where the time goes: bash costs all
three the same). Then the delay from a submission to its command starting on an idle
worker.

    python -P bench/throughput.py [-n 500] [--rounds 3] [--samples 50] [--dir DIR]
                                  [--notify off|unmatched|webhook]

--notify gives the echo type a [[notify]] block: `unmatched` one that no end asks for (the
cost of asking), `webhook` one every end sends to a receiver in this process (a delivery row
made in each end's transaction, and a POST each); the script then says how long after the
last task's end the last notification arrived.

Each round runs the three in turn, the order reversed every other round (the machine drifts).
Everything happens in a new folder under --dir (default /var/tmp): file creation slows for
minutes on a filesystem that has just seen a mass delete (a test run), so point --dir at one
that has not; the script prints which filesystem it used and what a folder costs there.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import argparse
import contextlib
import ctypes
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.harness import percentile, server_with_workers, wait_until
from blanket.client import Client
from blanket.worker.leftovers import Ledger

PR_SET_PDEATHSIG = 1

ECHO_TYPE = 'command = "echo hello $N"\n[environment.defaults]\nN = "0"\n'
# bash's $EPOCHREALTIME is a builtin: the stamp costs no extra process.
STAMP_TYPE = 'command = "echo $EPOCHREALTIME > started.txt"\n'


# The Huey side: a module its consumer imports. The job does what blanket's runner does at
# the least (a folder, the two logs, bash), and appends a byte to `done` when it has.
HUEY_MODULE = """
import os
import subprocess

from huey import SqliteHuey

ROOT = os.environ["BENCH_HUEY_ROOT"]
huey = SqliteHuey(filename=os.path.join(ROOT, "huey.db"), results=False)


@huey.task()
def echo(n):
    folder = os.path.join(ROOT, "jobs", str(n))
    os.mkdir(folder)
    with open(os.path.join(folder, "stdout.log"), "wb") as out, \\
            open(os.path.join(folder, "stderr.log"), "wb") as err:
        subprocess.run(["bash", "-c", f"echo hello {n}"], stdout=out, stderr=err, check=True)
    fd = os.open(os.path.join(ROOT, "done"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b".")
    os.close(fd)
"""


def direct_job(root: Path, n: int) -> None:
    """One job of the floor: the same folder, logs and command, run straight."""
    folder = root / str(n)
    folder.mkdir()
    with open(folder / "stdout.log", "wb") as out, open(folder / "stderr.log", "wb") as err:
        subprocess.run(["bash", "-c", f"echo hello {n}"], stdout=out, stderr=err, check=True)


def direct_rate(root: Path, count: int) -> float:
    """Tasks per second running the jobs straight from 2 threads."""
    root.mkdir(parents=True)
    cpu0 = this_cpu()
    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: direct_job(root, n), range(count)))
    rate = count / (time.perf_counter() - began)
    cpu1 = this_cpu()
    CPU["floor"].append({"the 2 threads": (cpu1[0] - cpu0[0]) / count,
                         "tasks (bash)": (cpu1[1] - cpu0[1]) / count})
    return rate


def huey_rate(root: Path, count: int) -> float:
    """Tasks per second through Huey: SqliteHuey, a consumer with 2 process workers, jobs
    enqueued from 2 threads; from the first enqueue to the last job's end."""
    try:
        import huey  # noqa: F401  (the bench extra: pip install -e '.[bench]')
    except ImportError:
        raise SystemExit("Huey is missing: pip install -e '.[bench]' (make bench does)") from None
    root.mkdir(parents=True)
    (root / "jobs").mkdir()
    (root / "bench_huey_jobs.py").write_text(HUEY_MODULE)
    env = {**os.environ, "BENCH_HUEY_ROOT": str(root), "PYTHONPATH": str(root)}
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "bench_huey_jobs.huey", "-w", "2",
         "-k", "process", "-d", "0.001", "-m", "0.01", "-q"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sys.path.insert(0, str(root))
    os.environ["BENCH_HUEY_ROOT"] = str(root)
    try:
        import importlib

        import bench_huey_jobs  # type: ignore[import-not-found]
        jobs = importlib.reload(bench_huey_jobs)  # this round's folder
        done = root / "done"

        def finished() -> int:
            try:
                return done.stat().st_size
            except FileNotFoundError:
                return 0

        jobs.echo(-1)  # warm up: the consumer is up and its workers have run one job
        wait_until(lambda: finished() >= 1, timeout=60, interval=0.005)
        consumer0, client0 = tree_cpu(consumer.pid), this_cpu()
        began = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(jobs.echo, range(count)))
        wait_until(lambda: finished() >= count + 1, timeout=600, interval=0.002)
        rate = count / (time.perf_counter() - began)
        consumer1, client1 = tree_cpu(consumer.pid), this_cpu()
        CPU["huey"].append({"consumer and its 2 workers": (consumer1[0] - consumer0[0]) / count,
                            "tasks (bash)": (consumer1[1] - consumer0[1]) / count,
                            "enqueuing client": (client1[0] - client0[0]) / count})
        return rate
    finally:
        sys.path.remove(str(root))
        consumer.terminate()
        consumer.wait(30)


def filesystem_of(path: Path) -> str:
    """The mount point and type of the filesystem holding `path`."""
    best = ("?", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, kind = line.split()[:3]
        if (resolved == point or resolved.startswith(point.rstrip("/") + "/")) and \
                len(point) >= len(best[0]):
            best = (point, kind)
    return f"{best[0]} ({best[1]})"


def spawn_costs(root: Path, count: int = 300) -> dict[str, float]:
    """Seconds per spawn of a task-like process (own session, waited for): plain; with the
    record blanket keeps so a dead worker's tasks die with it, written in place in the
    slot's file (the chosen way) or as a file made and removed per task (the way before);
    and with PR_SET_PDEATHSIG set in the child (the way not taken: a preexec function makes
    subprocess fork the whole interpreter instead of using vfork)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nothing would tell us
            os._exit(1)

    ledger = Ledger(root)
    slot = ledger.slot(1)

    def spawn(preexec: Callable[[], None] | None = None, record: bool = False,
              in_place: bool = False) -> None:
        proc = subprocess.Popen(["/bin/true"], stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)
        keeper = slot if in_place else ledger
        name = keeper.add(proc.pid) if record or in_place else None
        proc.wait()
        keeper.remove(name)

    def cost(**how: object) -> float:
        began = time.perf_counter()
        for _ in range(count):
            spawn(**how)  # type: ignore[arg-type]
        return (time.perf_counter() - began) / count

    cost()  # warm up: the first round pays for what the later ones find cached
    costs = {"plain": cost(), "ledger": cost(record=True), "slot": cost(in_place=True),
             "pdeathsig": cost(preexec=parent_death_signal)}
    slot.close()
    return costs


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


TICKS = os.sysconf("SC_CLK_TCK")
# CPU seconds per task of each part of a system, by system, one entry per round.
CPU: dict[str, list[dict[str, float]]] = {"blanket": [], "huey": [], "floor": []}


def process_cpu(pid: int) -> tuple[float, float]:
    """(its own, its waited-for children's) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) / TICKS,
            (int(fields[13]) + int(fields[14])) / TICKS)


def process_tree(pid: int) -> list[int]:
    """A process and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(child) for child in children.read_text().split())
    return found


def tree_cpu(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of a process and its descendants."""
    own = reaped = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            mine, theirs = process_cpu(member)
            own, reaped = own + mine, reaped + theirs
    return own, reaped


def this_cpu() -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of this process."""
    now = os.times()
    return now.user + now.system, now.children_user + now.children_system


def blanket_rate(client: Client, count: int, offset: int = 0) -> float:
    """Tasks per second from the first submission to the last task's end (`offset` tasks
    had ended before)."""
    def submit(n: int) -> int:
        return client.post("/task/", {"type": "echo", "environment": {"N": n}})["id"]

    def done() -> bool:
        ended = client.get("/task/?count&state=SUCCESS,FAILED,TIMEDOUT,STOPPED,LOST&type=echo")
        return ended["count"] >= count + offset

    began = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        ids = list(pool.map(submit, range(count)))
    wait_until(done, timeout=600, interval=0.02)
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
        return ended["count"] >= count

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


class Receiver:
    """A webhook receiver answering 204 at once, counting what it got."""

    def __init__(self) -> None:
        self.got = 0
        self.last = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(204)
                self.end_headers()
                receiver.got += 1
                receiver.last = time.perf_counter()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


def echo_type(notify: str, receiver: Receiver | None) -> str:
    if notify == "unmatched":
        return ECHO_TYPE + '[[notify]]\non = ["failed"]\nurl = "http://127.0.0.1:9/never"\n'
    if notify == "webhook" and receiver is not None:
        return ECHO_TYPE + f'[[notify]]\non = ["success"]\nurl = "{receiver.url}"\n'
    return ECHO_TYPE


def blanket_round(root: Path, count: int, notify: str = "off") -> float:
    root.mkdir()
    receiver = Receiver() if notify == "webhook" else None
    # The folder stays until the end: its mass delete would slow the next system's files.
    with server_with_workers({"echo": echo_type(notify, receiver)}, "blanket-", root,
                             keep=True) as running:
        running.client.post("/task/?wait=30", {"type": "echo"})  # warm: the bundle is fetched
        server0, workers0 = process_cpu(running.server.pid), tree_cpu(running.workers.pid)
        client0 = this_cpu()
        rate = blanket_rate(running.client, count, offset=1)
        server1, workers1 = process_cpu(running.server.pid), tree_cpu(running.workers.pid)
        client1 = this_cpu()
        CPU["blanket"].append({"server": (server1[0] - server0[0]) / count,
                               "worker process": (workers1[0] - workers0[0]) / count,
                               "tasks (bash)": (workers1[1] - workers0[1]) / count,
                               "submitting client": (client1[0] - client0[0]) / count})
        if receiver is not None:
            ended = time.perf_counter()
            wait_until(lambda: receiver.got >= count + 1, timeout=600, interval=0.01)
            print(f"  {receiver.got} notifications; the last arrived "
                  f"{max(0.0, receiver.last - ended) * 1000:.0f} ms after the tasks ended "
                  "were counted", flush=True)
            receiver.http.shutdown()
        return rate


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where to make the new folder everything runs in")
    parser.add_argument("--notify", choices=("off", "unmatched", "webhook"), default="off",
                        help="a [[notify]] block in the echo type (see above)")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="blanket-throughput-", dir=args.dir) as tmp:
        base = Path(tmp)
        print(f"running in {base}, on {filesystem_of(base)}; a task folder with four files "
              f"costs {folder_cost(base / 'folders') * 1000:.2f} ms of CPU there", flush=True)
        systems: dict[str, Callable[[Path], float]] = {
            "blanket": lambda root: blanket_round(root, args.tasks, args.notify),
            "huey": lambda root: huey_rate(root, args.tasks),
            "floor": lambda root: direct_rate(root, args.tasks),
        }
        rates: dict[str, list[float]] = {name: [] for name in systems}
        for round_ in range(args.rounds):
            order = list(systems) if round_ % 2 == 0 else list(reversed(systems))
            for name in order:
                rates[name].append(systems[name](base / f"{name}-{round_}"))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{name} {rates[name][-1]:.0f}/s" for name in systems), flush=True)
        with server_with_workers({"echo": ECHO_TYPE, "stamp": STAMP_TYPE}, "blanket-",
                                 base) as running:
            drained = drain_rate(running.client, args.tasks)
            delays = start_delays(running.client, running.base / "var", args.samples)
        spawns = spawn_costs(base / "spawns")
    blanket, huey, floor = mean(rates["blanket"]), mean(rates["huey"]), mean(rates["floor"])
    print(f"end to end, {args.tasks} tasks, mean of {args.rounds} rounds: blanket {blanket:.0f} "
          f"tasks/s, Huey {huey:.0f} tasks/s, floor (2 threads of subprocess) {floor:.0f} "
          "tasks/s")
    print(f"ratio blanket / Huey: {blanket / huey:.2f} (target >= 1.0)")
    print(f"ratio blanket / floor: {blanket / floor:.2f} (goal >= 0.65)")
    for name, rounds in CPU.items():
        parts = {part: mean([r[part] for r in rounds]) * 1000 for part in rounds[0]}
        print(f"CPU per task, {name}: " + ", ".join(
            f"{part} {ms:.2f} ms" for part, ms in parts.items())
            + f"; in all {sum(parts.values()):.2f} ms")
    print(f"queued backlog through blanket worker -n 2: {drained:.0f} tasks/s "
          f"(ratio to the floor {drained / floor:.2f})")
    print(f"start delay p50: {percentile(delays, 0.5) * 1000:.1f} ms (target <= 4 ms)")
    print(f"start delay p95: {percentile(delays, 0.95) * 1000:.1f} ms")
    print(f"start delay mean: {statistics.fmean(delays) * 1000:.1f} ms ({len(delays)} samples)")
    print(f"spawn: {spawns['plain'] * 1000:.2f} ms plain, {spawns['slot'] * 1000:.2f} ms with "
          f"the slot's record written in place (chosen), {spawns['ledger'] * 1000:.2f} ms with "
          f"a record file made per task, {spawns['pdeathsig'] * 1000:.2f} ms with "
          "PR_SET_PDEATHSIG in a preexec_fn")


if __name__ == "__main__":
    main()
