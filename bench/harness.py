"""What the benchmark scripts share: ports, waiting, health checks, percentiles.

Run the scripts with `python -P bench/NAME.py` (as `make bench` does): without -P this folder
comes first on sys.path and bench/queue.py shadows the standard library's queue module."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from blanket.client import Client

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.01) -> T:
    """Poll `check` until it returns a truthy value; give up with SystemExit."""
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            raise SystemExit(f"gave up waiting for {check}")
        time.sleep(interval)
    return value


def healthy(client: Client) -> bool:
    try:
        return client.request("GET", "/health", ok=(503,))[0] == 200
    except Exception:
        return False


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Running:
    """A server and `blanket worker -n 2` on temp dirs: their folder, client and processes."""

    base: Path
    client: Client
    server: subprocess.Popen
    workers: subprocess.Popen


@contextlib.contextmanager
def server_with_workers(types: dict[str, str], prefix: str, root: Path | None = None,
                        keep: bool = False) -> Iterator[Running]:
    """A `blanket server` on a free loopback port with `types`, and a worker process with
    two slots sharing its data dir, in a new folder under `root` (default: the system's
    temporary folder); both stopped on the way out, and the folder removed unless `keep`
    (a benchmark that measures something else next leaves the mass delete for the end)."""
    with contextlib.ExitStack() as cleanup:
        base = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        if not keep:
            cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        folder = base / "conf.d" / "types"
        folder.mkdir(parents=True)
        for name, text in types.items():
            (folder / f"{name}.toml").write_text(text)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "BLANKET_SETTINGS": str(base / "none.toml"),
               "BLANKET_LOG_LEVEL": "warning"}
        env.pop("BLANKET_SERVER", None)
        blanket = [sys.executable, "-m", "blanket"]
        server = subprocess.Popen([*blanket, "server", "--port", str(port), "--config-dir",
                                   str(base / "conf.d"), "--data-dir", str(base / "var"),
                                   "--inbox-dir", str(base / "inbox")], env=env, cwd=base)
        workers = None
        try:
            client = Client(url, timeout=60)
            wait_until(lambda: healthy(client), timeout=30)
            workers = subprocess.Popen([*blanket, "-q", "--server", url, "worker", "-n", "2",
                                        "--data-dir", str(base / "var")], env=env, cwd=base)
            wait_until(lambda: len(client.get("/worker/")) == 2, timeout=30)
            yield Running(base, client, server, workers)
        finally:
            for proc in (workers, server):
                if proc is not None:
                    proc.terminate()
                    proc.wait(60)
