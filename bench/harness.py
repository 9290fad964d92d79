"""What the benchmark scripts share: ports, waiting, health checks, percentiles.

Run the scripts with `python -P bench/NAME.py` (as `make bench` does): without -P this folder
comes first on sys.path and bench/queue.py shadows the standard library's queue module."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
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
