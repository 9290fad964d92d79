"""The HTTP thread pool grows while long polls hold its threads and shrinks back to its
start size (plus the spare threads) once they have been over for a quiet period."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from bench.longpoll import UNCLAIMED, HoldResult, hold_requests
from blanket.config.settings import Settings
from blanket.server.httppool import SPARE_THREADS, PoolSizer
from blanket.server.serve import Server
from tests.conftest import free_port, wait_until

START = 4
HELD = 40


def test_the_pool_grows_for_held_requests_and_shrinks_after_a_quiet_period(tmp_path: Path):
    (tmp_path / "conf.d" / "types").mkdir(parents=True)
    (tmp_path / "conf.d" / "types" / "unclaimed.toml").write_text(UNCLAIMED)
    settings = Settings(port=free_port(), config_dir=tmp_path / "conf.d",
                        data_dir=tmp_path / "var", inbox_dir=tmp_path / "inbox",
                        threads=START, max_threads=200)
    server = Server(settings)
    server.pool_sizer.shrink_after = 0.5
    seen: dict[str, object] = {}

    def load() -> None:
        try:
            wait_until(lambda: server.http.requests is not None and server.http.ready)
            pool = server.http.requests
            token = (settings.data_dir / "admin.token").read_text().strip()
            holding: list[HoldResult] = []
            holder = threading.Thread(target=lambda: holding.append(hold_requests(
                settings.port, token, [], HELD, hold=4)))
            holder.start()
            seen["peak"] = wait_until(lambda: len(pool._threads) >= HELD and len(pool._threads))
            holder.join()
            seen["answers"] = holding[0].statuses
            seen["after"] = wait_until(lambda: len(pool._threads) <= START + SPARE_THREADS
                                       and len(pool._threads), timeout=15)
        finally:
            server.stop()

    loader = threading.Thread(target=load)
    loader.start()
    server.serve()
    loader.join()
    assert seen["answers"] == {201: HELD}
    assert seen["peak"] >= HELD
    assert seen["after"] <= START + SPARE_THREADS


@pytest.fixture(autouse=True)
def _restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class FakePool:
    """The parts of cheroot's ThreadPool the sizer uses; `busy` threads hold a request."""

    def __init__(self, start: int, most: int = 100):
        self.min, self.max = start, most
        self._threads = list(range(start))
        self._pending_shutdowns: list[None] = []
        self.busy = 0
        self.qsize = 0

    @property
    def idle(self) -> int:
        return len(self._threads) - self.busy

    def grow(self, amount: int) -> None:
        self._threads += list(range(min(amount, self.max - len(self._threads))))

    def shrink(self, amount: int) -> None:
        del self._threads[:max(0, min(amount, len(self._threads) - self.min))]


def test_the_sizer_grows_at_once_and_shrinks_only_what_stayed_idle_a_whole_period():
    pool, now = FakePool(START), [0.0]
    sizer = PoolSizer(lambda: pool, spare=SPARE_THREADS, shrink_after=30, clock=lambda: now[0])
    pool.busy, pool.qsize = START, 30  # every thread taken, 30 requests waiting
    sizer.step()
    assert len(pool._threads) == START + SPARE_THREADS + 30
    grown = len(pool._threads)
    pool.busy, pool.qsize = 10, 0  # most of the long polls are over
    for second in range(30):
        now[0] = second
        sizer.step()
    assert len(pool._threads) == grown  # not yet: 29 s of quiet
    pool.busy = 20  # some threads were needed again within the period
    now[0] = 29.5
    sizer.step()
    pool.busy = 0
    now[0] = 30
    sizer.step()
    # what stayed idle beyond the spare ones all along the last 30 s
    assert len(pool._threads) == grown - (grown - 20 - SPARE_THREADS)
    for second in range(31, 100):
        now[0] = second
        sizer.step()
    assert len(pool._threads) == START + SPARE_THREADS  # the floor


class BusyPool:
    """Stands in for cheroot's ThreadPool: `idle` free threads, `qsize` accepted requests."""

    def __init__(self, idle: int, qsize: int, threads: int, most: int):
        self.idle, self.qsize, self.min, self.max = idle, qsize, threads, most
        self._threads = [object()] * threads
        self._pending_shutdowns: list = []
        self.grown: list[int] = []

    def grow(self, amount: int) -> None:
        self.grown.append(amount)


def test_a_request_waiting_beside_enough_idle_threads_is_no_alarm():
    pool = BusyPool(idle=SPARE_THREADS + 2, qsize=1, threads=SPARE_THREADS + 2, most=1024)
    sizer = PoolSizer(lambda: pool)
    with structlog.testing.capture_logs() as logged:
        sizer.step()
    assert pool.grown == []
    assert not [entry for entry in logged if entry["log_level"] == "warning"], logged
