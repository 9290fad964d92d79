"""Wake-ups for long polls: claims, waiting submissions and heartbeats wait here instead of
polling on a timer.

Each waiter names the topics it cares about, and a change wakes only the waiters of its
topics: a submission wakes idle claims (QUEUE), not the heartbeat of every running task nor
every client waiting for its own task's end. With a hundred tasks running, a change then
costs one check, not a hundred.

QUEUE is relayed rather than broadcast: a new task wakes one idle claim, not all of them
(with fifty idle workers, each submission would otherwise cost fifty claim attempts, and
each end another fifty). The claim woken passes the wake-up on when it took a task (there
may be more) or when it could not take one another waiter might (say, it lacks a tag the
task needs); otherwise the relay ends. A relay that finds no waiter armed (each is busy
checking) is kept for the next one that arms, so no change is missed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

QUEUE = "queue"  # the claimable tasks may have changed: a task queued, a slot freed, a type
DELIVERIES = "deliveries"  # a task's end made notifications to send (the delivery loop)
RELAYED = frozenset({QUEUE})


def task_topic(task_id: int) -> str:
    """A task's state or stop request changed."""
    return f"task:{task_id}"


def worker_topic(worker_id: str) -> str:
    """A worker was paused, resumed or asked to stop."""
    return f"worker:{worker_id}"


@dataclass(eq=False)
class _Waiter:
    event: threading.Event = field(default_factory=threading.Event)
    armed: bool = False  # waiting (not checking): a relayed wake-up may go to it
    hops: int | None = None  # set when a relayed wake-up reached it: how far it came


class Wakeups:
    """Waiters by topic; `notify(*topics)` wakes those waiters, `notify()` every waiter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Per topic, its waiters in the order a relayed wake-up tries them (a dict keeps
        # insertion order; the one woken moves to the back).
        self._waiters: dict[str, dict[_Waiter, None]] = {}
        self._pending: dict[str, deque[int]] = {}  # relayed wake-ups nobody was armed for
        self._listeners: tuple[Callable[[], None], ...] = ()
        self.closed = False

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` on every notification, from the notifying thread; it must be cheap
        (the store notifies on every submission and finish)."""
        self._listeners = (*self._listeners, listener)

    def notify(self, *topics: str) -> None:
        """Wake the waiters of `topics` (one, for a relayed topic); with none, every waiter
        (the catalog changed, a change came from another server without saying what, or
        shutdown)."""
        with self._lock:
            if topics:
                events = [w.event for topic in topics if topic not in RELAYED
                          for w in self._waiters.get(topic, ())]
                events += [e for topic in topics if topic in RELAYED
                           if (e := self._relay_locked(topic, 0)) is not None]
            else:
                events = [w.event for waiters in self._waiters.values() for w in waiters]
        for event in events:
            event.set()
        for listener in self._listeners:
            listener()

    def _relay(self, topic: str, hops: int) -> None:
        with self._lock:
            event = self._relay_locked(topic, hops)
        if event is not None:
            event.set()

    def _relay_locked(self, topic: str, hops: int) -> threading.Event | None:
        """The event of the next armed waiter of `topic`, which then goes to the back; with
        none armed, the wake-up waits for the next to arm. A relay that has been through
        every waiter ends."""
        waiters = self._waiters.get(topic)
        if not waiters or hops >= len(waiters):
            return None
        for waiter in waiters:
            if waiter.armed:
                waiter.armed, waiter.hops = False, hops
                del waiters[waiter]
                waiters[waiter] = None
                return waiter.event
        pending = self._pending.setdefault(topic, deque())
        if len(pending) < len(waiters):
            pending.append(hops)
        return None

    def close(self) -> None:
        """Release every waiter (server shutdown)."""
        self.closed = True
        self.notify()

    def wait_for(self, check: Callable[[], T | None], timeout: float, *,
                 topics: Iterable[str],
                 next_deadline: Callable[[], float | None] = lambda: None,
                 passes_on: Callable[[], bool] = lambda: True) -> T | None:
        """Call `check` now and after each notification of `topics` until it returns a value
        or `timeout` passes. `next_deadline` names a time at which to re-check even without
        a notification (a task's start date). When a relayed wake-up brought it and `check`
        found nothing, `passes_on` says whether another waiter might still use it."""
        topics = tuple(topics)
        relayed = next((t for t in topics if t in RELAYED), None)
        waiter = _Waiter()
        with self._lock:
            for topic in topics:
                self._waiters.setdefault(topic, {})[waiter] = None
        hops: int | None = None  # the relayed wake-up this check answers, if any
        try:
            end = time.monotonic() + timeout
            while True:
                waiter.event.clear()  # a notification from here on means: check again
                result = check()
                if relayed is not None and hops is not None:
                    if result is not None:
                        self._relay(relayed, 0)  # it took one: there may be more
                    elif passes_on():
                        self._relay(relayed, hops + 1)
                    hops = None
                if result is not None or self.closed:
                    return result
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return None
                deadline = next_deadline()
                if deadline is not None:
                    remaining = min(remaining, max(0.0, deadline - time.time()) + 0.001)
                with self._lock:
                    pending = self._pending.get(relayed) if relayed is not None else None
                    if pending:  # a relayed wake-up came while we checked: it is ours
                        hops = pending.popleft()
                        continue
                    waiter.armed = True
                waiter.event.wait(remaining)
                with self._lock:
                    waiter.armed = False
                    hops, waiter.hops = waiter.hops, None
        finally:
            with self._lock:
                waiter.armed = False
                for topic in topics:
                    waiters = self._waiters.get(topic)
                    if waiters is not None:
                        waiters.pop(waiter, None)
                        if not waiters:
                            del self._waiters[topic]
                            self._pending.pop(topic, None)
                if hops is not None and relayed is not None:
                    # A relayed wake-up reached us as we left: hand it on, not lose it.
                    event = self._relay_locked(relayed, hops)
                    if event is not None:
                        event.set()
