"""Wake-ups for long polls: claims, waiting submissions and stop requests wait here
instead of polling on a timer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Wakeups:
    """A generation counter under a condition: `notify` wakes every waiter to re-check."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._listeners: tuple[Callable[[], None], ...] = ()
        self.closed = False

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on every notification, from the notifying thread; it must be cheap
        (the store notifies on every submission and finish)."""
        self._listeners = (*self._listeners, listener)

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        for listener in self._listeners:
            listener()

    def close(self) -> None:
        """Release every waiter (server shutdown)."""
        self.closed = True
        self.notify()

    def wait_for(self, check: Callable[[], T | None], timeout: float,
                 next_deadline: Callable[[], float | None] = lambda: None) -> T | None:
        """Call `check` now and after each notification until it returns a value or `timeout`
        passes. `next_deadline` names a time at which to re-check even without a notification
        (a task's start date)."""
        end = time.monotonic() + timeout
        while True:
            with self._cond:
                generation = self._generation
            result = check()
            if result is not None or self.closed:
                return result
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            deadline = next_deadline()
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.time()) + 0.001)
            with self._cond:
                if self._generation == generation:
                    self._cond.wait(remaining)
