"""The size of the HTTP thread pool: long polls each hold a thread while they wait, so the
pool grows to keep a few threads free for everything else, and gives the extra threads back
once the waiting is over."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog
from cheroot.workers.threadpool import ThreadPool

log = structlog.get_logger("blanket.server")

SPARE_THREADS = 8  # HTTP threads kept free for short requests while long polls wait
SHRINK_AFTER = 30.0  # seconds threads must sit idle beyond the spare ones before they stop
LISTEN_BACKLOG = 4096  # connections the kernel queues before the server accepts them
MIN_BACKLOG = 1024
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def listen_backlog() -> int:
    """The listen backlog to ask for; warns when the kernel caps it below MIN_BACKLOG."""
    try:
        cap = int(SOMAXCONN.read_text())
    except (OSError, ValueError):
        return LISTEN_BACKLOG
    if cap < MIN_BACKLOG:
        log.warning("the kernel caps the listen backlog: bursts of connections (many workers "
                    "or waiting clients at once) may be reset; raise it with "
                    f"sysctl -w net.core.somaxconn={LISTEN_BACKLOG}", somaxconn=cap)
    return LISTEN_BACKLOG


class PoolSizer:
    """Called every few tenths of a second: grow the pool (up to its max) when fewer than
    `spare` threads are free or requests queue; once more than `spare` threads have stayed
    free for `shrink_after` seconds, stop the extra ones (never below the pool's start size
    plus `spare`)."""

    def __init__(self, pool: Callable[[], ThreadPool | None], spare: int = SPARE_THREADS,
                 shrink_after: float = SHRINK_AFTER,
                 clock: Callable[[], float] = time.monotonic):
        self.pool = pool
        self.spare = spare
        self.shrink_after = shrink_after
        self.clock = clock
        self._quiet_since: float | None = None
        self._surplus: deque[tuple[float, int]] = deque()  # (when, extra idle threads)
        self._warned_full = False

    def step(self) -> None:
        pool = self.pool()
        if pool is None:
            return
        if pool._pending_shutdowns:
            pool.shrink(0)  # takes the threads that have stopped off the pool's list
        idle, queued = pool.idle, pool.qsize
        if idle < self.spare or queued:
            self._quiet_since = None
            if self.spare + queued > idle:  # a request just accepted may find an idle thread
                self._grow(pool, self.spare + queued - idle)
            return
        # never below the start size plus the spare threads
        surplus = min(idle - self.spare, len(pool._threads) - pool.min - self.spare)
        if surplus <= 0:
            self._quiet_since = None
            return
        now = self.clock()
        if self._quiet_since is None:
            self._quiet_since = now
            self._surplus.clear()
        self._surplus.append((now, surplus))
        while self._surplus[0][0] < now - self.shrink_after:
            self._surplus.popleft()
        if now - self._quiet_since < self.shrink_after:
            return
        # as many threads as stayed idle beyond the spare ones all along the last period
        extra = min(count for _, count in self._surplus)
        if extra > 0:
            pool.shrink(extra + len(pool._pending_shutdowns))  # shrink() counts those too
            self._surplus = deque((when, count - extra) for when, count in self._surplus)
            log.debug("fewer HTTP threads: the long polls are over",
                      threads=len(pool._threads) - extra)

    def _grow(self, pool: ThreadPool, wanted: int) -> None:
        before = len(pool._threads)
        pool.grow(wanted)
        after = len(pool._threads)
        if after > before:
            log.info("more HTTP threads for waiting requests", threads=after,
                     max_threads=pool.max)
        elif not self._warned_full:
            self._warned_full = True
            log.warning("every HTTP thread is taken and max_threads is reached: requests wait "
                        "until a long poll ends; raise max_threads", max_threads=pool.max)
