"""How late scheduled runs become tasks: start a server with N schedules firing every second
(six-field cron), let it run, then compare each task's `added` time with the fire time the
scheduler put in its BLANKET_FIRE_TIME variable.

    python -P bench/schedule.py [-n 200] [--seconds 90]

(-P: bench/queue.py would otherwise shadow the standard library's `queue`.)

No worker runs (overlap = "allow"), so the figure is the scheduler's own lateness: from the
scheduled second to the task being durably queued.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.harness import free_port, healthy, percentile
from blanket.client import Client

SCHEDULE = 'type = "noop"\ncron = "* * * * * *"\noverlap = "allow"\nmissed = "skip"\n'


def write_config(base: Path, count: int) -> None:
    """`count` schedules already in place, so all load at start-up."""
    conf = base / "conf.d"
    (conf / "types").mkdir(parents=True)
    (conf / "types" / "noop.toml").write_text('command = "true"\n')
    (conf / "schedules").mkdir()
    for number in range(count):
        (conf / "schedules" / f"s{number:04d}.toml").write_text(SCHEDULE)


def start_server(base: Path) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    command = [sys.executable, "-m", "blanket", "server", "--port", str(port),
               "--config-dir", str(base / "conf.d"), "--data-dir", str(base / "var"),
               "--inbox-dir", str(base / "inbox")]
    env = {**os.environ, "BLANKET_LOG_LEVEL": "warning"}
    with open(base / "server.log", "ab") as log:
        proc = subprocess.Popen(command, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}", timeout=120)
    deadline = time.monotonic() + 60
    while not healthy(client):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start; see {base / 'server.log'}")
        time.sleep(0.05)
    return proc, client


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def all_tasks(client: Client) -> list[dict]:
    tasks: list[dict] = []
    while True:
        page = client.get(f"/task/?order=oldest&limit=10000&offset={len(tasks)}")
        tasks += page
        if len(page) < 10000:
            return tasks


def lateness_ms(task: dict) -> float:
    fired = datetime.fromisoformat(task["environment"]["BLANKET_FIRE_TIME"].replace("Z", "+00:00"))
    return (task["added"] - fired.timestamp()) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--schedules", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blanket-bench-") as temp:
        base = Path(temp)
        write_config(base, args.schedules)
        proc, _ = start_server(base)
        try:
            time.sleep(args.seconds)  # the measurement window itself
        finally:
            stop(proc)
        # Read the results from a server without schedules, so listing adds no load while
        # the scheduler is being measured.
        for path in (base / "conf.d" / "schedules").iterdir():
            path.unlink()
        proc, client = start_server(base)
        try:
            tasks = [t for t in all_tasks(client) if t.get("schedule")]
        finally:
            stop(proc)
    report(tasks, args.schedules, args.seconds)


def report(tasks: list[dict], schedules: int, seconds: float) -> None:
    late = [lateness_ms(t) for t in tasks]
    fires = {t["environment"]["BLANKET_FIRE_TIME"] for t in tasks}
    expected = schedules * len(fires)
    print(f"schedule lateness: {schedules} schedules every second for {seconds:.0f}s, "
          f"{len(tasks)} runs over {len(fires)} fire seconds ({expected - len(tasks)} missing): "
          f"p50 {statistics.median(late):.1f} ms, p99 {percentile(late, 0.99):.1f} ms, "
          f"max {max(late):.1f} ms late")


if __name__ == "__main__":
    main()
