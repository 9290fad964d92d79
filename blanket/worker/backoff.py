"""How a worker waits before trying the server again: doubling delays up to a cap, cut
short when what it waits for happens, ended when its patience runs out. (Not the retry
policy of tasks: that is blanket/server/retry.py.)"""

from __future__ import annotations

import math
import threading
import time

FIRST_DELAY = 0.05
MAX_DELAY = 2.0


class Backoff:
    """The delays between tries of one thing; `reset` after it worked."""

    def __init__(self, *, first: float = FIRST_DELAY, most: float = MAX_DELAY,
                 patience: float = math.inf, until: threading.Event | None = None):
        """`patience`: seconds from now after which `pause` gives up; `until`: an event that
        ends the wait at once and makes `pause` give up (the worker stopping, say)."""
        self.first = first
        self.most = most
        self.deadline = time.monotonic() + patience
        self.until = until
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def pause(self) -> bool:
        """Wait the next delay and return True; False, without waiting, when the delay
        would pass the deadline or `until` is set."""
        if time.monotonic() + self.delay > self.deadline or self.given_up():
            return False
        if self.until is not None:
            self.until.wait(self.delay)
        else:
            time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)
        return True

    def given_up(self) -> bool:
        return self.until is not None and self.until.is_set()
