"""Wake-ups for long polls: claims, waiting submissions and heartbeats wait here instead of
polling on a timer.

Each waiter names the topics it cares about, and a change wakes only the waiters of its
topics: a submission wakes idle claims (QUEUE), not the heartbeat of every running task nor
every client waiting for its own task's end. With a hundred tasks running, a change then
costs one check, not a hundred.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

QUEUE = "queue"  # the claimable tasks may have changed: a task queued, a slot freed, a type


def task_topic(task_id: int) -> str:
    """A task's state or stop request changed."""
    return f"task:{task_id}"


def worker_topic(worker_id: str) -> str:
    """A worker was paused, resumed or asked to stop."""
    return f"worker:{worker_id}"


class Wakeups:
    """Waiters by topic; `notify(*topics)` wakes those waiters, `notify()` every waiter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._listeners: tuple[Callable[[], None], ...] = ()
        self.closed = False

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on every notification, from the notifying thread; it must be cheap
        (the store notifies on every submission and finish)."""
        self._listeners = (*self._listeners, listener)

    def notify(self, *topics: str) -> None:
        """Wake the waiters of `topics`; with none, every waiter (the catalog changed, a
        change came from another server without saying what, or shutdown)."""
        with self._lock:
            if topics:
                events = [e for topic in topics for e in self._waiters.get(topic, ())]
            else:
                events = [e for waiters in self._waiters.values() for e in waiters]
        for event in events:
            event.set()
        for listener in self._listeners:
            listener()

    def close(self) -> None:
        """Release every waiter (server shutdown)."""
        self.closed = True
        self.notify()

    def wait_for(self, check: Callable[[], T | None], timeout: float, *,
                 topics: Iterable[str],
                 next_deadline: Callable[[], float | None] = lambda: None) -> T | None:
        """Call `check` now and after each notification of `topics` until it returns a value
        or `timeout` passes. `next_deadline` names a time at which to re-check even without
        a notification (a task's start date)."""
        topics = tuple(topics)
        event = threading.Event()
        with self._lock:
            for topic in topics:
                self._waiters.setdefault(topic, set()).add(event)
        try:
            end = time.monotonic() + timeout
            while True:
                event.clear()  # a notification from here on means: check again
                result = check()
                if result is not None or self.closed:
                    return result
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return None
                deadline = next_deadline()
                if deadline is not None:
                    remaining = min(remaining, max(0.0, deadline - time.time()) + 0.001)
                event.wait(remaining)
        finally:
            with self._lock:
                for topic in topics:
                    waiters = self._waiters.get(topic)
                    if waiters is not None:
                        waiters.discard(event)
                        if not waiters:
                            del self._waiters[topic]
