"""How long dropped inbox files take to become tasks: start a server, drop N task files
(each written to a temporary name, then renamed in), and time until all are in done/ and
the server counts N tasks.

    python bench/inbox.py [-n 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import free_port, healthy, wait_until
from blanket.client import Client

REPORT_TYPE = 'command = "echo {{ TARGET }}"\n\n[environment.required]\nTARGET = "what"\n'
TASK = 'type = "report"\n[environment]\nTARGET = "region {number}"\n'


def start_server(base: Path) -> tuple[subprocess.Popen, Client]:
    (base / "conf.d" / "types").mkdir(parents=True)
    (base / "conf.d" / "types" / "report.toml").write_text(REPORT_TYPE)
    port = free_port()
    command = [sys.executable, "-m", "blanket", "server", "--port", str(port),
               "--config-dir", str(base / "conf.d"), "--data-dir", str(base / "var"),
               "--inbox-dir", str(base / "inbox")]
    env = {**os.environ, "BLANKET_SETTINGS": str(base / "blanket.toml")}
    with open(base / "server.log", "ab") as log:
        proc = subprocess.Popen(command, cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}")
    wait_until(lambda: healthy(client), timeout=30)
    wait_until(lambda: (base / "inbox" / "done").is_dir(), timeout=30)
    return proc, client


def drop_files(inbox: Path, count: int) -> None:
    for number in range(count):
        partial = inbox / f"r{number:05d}.toml.partial"
        partial.write_text(TASK.format(number=number))
        partial.rename(inbox / f"r{number:05d}.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--files", type=int, default=1000)
    count = parser.parse_args().files
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        proc, client = start_server(base)
        done = base / "inbox" / "done"
        try:
            began = time.perf_counter()
            drop_files(base / "inbox", count)
            dropped = time.perf_counter() - began
            wait_until(lambda: len(os.listdir(done)) >= count)
            wait_until(lambda: client.get("/task/?count")["count"] >= count)
            elapsed = time.perf_counter() - began
        finally:
            proc.terminate()
            proc.wait(30)
        failed = os.listdir(base / "inbox" / "failed")
        if failed:
            raise SystemExit(f"{len(failed)} files failed, e.g. {failed[:3]}")
    print(f"inbox: {count} dropped files became {count} tasks in {elapsed:.2f} s "
          f"({count / elapsed:.0f} files/s; dropping took {dropped:.2f} s; "
          f"includes the 0.5 s settle time)")


if __name__ == "__main__":
    main()
