"""The delivery loop: sends the notifications tasks' ends made (rows in the store, made in
the transaction that ended each task), away from the end report's path.

It wakes when an end made deliveries (the DELIVERIES wake-up, from any server sharing the
store) or when a retry falls due, takes the due rows (each held by a lease, so that among
several servers one sends it, and a server that dies sending it leaves it due again when
the lease ends), sends a few at once, each with its target's timeout, and records how it
went: delivered on a 2xx answer (or a command's exit 0), else again after a doubling wait
(1 s ... 1 h), until a day after the task ended, then failed.

Exactly once cannot be promised to a receiver (its answer may be lost after it acted): each
notification carries its delivery id (`Blanket-Delivery`, the same on every retry) for the
receiver to drop a repeat.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from blanket.config.notify import MAX_TIMEOUT
from blanket.errors import BlanketError
from blanket.models import Delivery, Task
from blanket.server.api.taskfiles import Masker, read_tail
from blanket.server.metrics import Metrics
from blanket.server.notifyrules import NotifyRules
from blanket.server.notifysend import (
    GIVE_UP_AFTER,
    TAIL_BYTES,
    Sent,
    body_bytes,
    post,
    retry_delay,
    run_command,
    stderr_tail,
    webhook_headers,
)
from blanket.store.base import Store
from blanket.taskdir import error_log
from blanket.wakeups import DELIVERIES, Wakeups

log = structlog.get_logger("blanket.notify")

BATCH = 16  # rows taken at once at most (no more than there are free senders)
PARALLEL = 4  # sent at once
LEASE = 60.0  # seconds past a target's timeout a taken row stays this server's
IDLE_CHECK = 60.0  # look again this often even without a wake-up (another server's retry)
MIN_PAUSE = 0.05  # seconds between looks for due rows that a wake-up did not announce


class Deliveries:
    """Sends due notifications. `task_dir(type, id)` is a task's folder; `link(id)` its page
    (None when the server's URL is not http(s))."""

    def __init__(self, store: Store, wakeups: Wakeups, rules: NotifyRules,
                 task_dir: Callable[[str, int], Path], link: Callable[[int], str | None],
                 environ: dict[str, str] | None = None, metrics: Metrics | None = None):
        self.store = store
        self.metrics = metrics or Metrics()
        self.wakeups = wakeups
        self.rules = rules
        self.task_dir = task_dir
        self.link = link
        self.environ = os.environ if environ is None else environ
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="blanket-notify")
        self._lock = threading.Lock()
        self._busy = 0  # rows taken and not yet settled (at most PARALLEL)

    # the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deliveries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeups.notify(DELIVERIES)
        if self._thread is not None:
            self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self.stopping.is_set() and not self.wakeups.closed:
            try:
                taken = self.wakeups.wait_for(self._take, IDLE_CHECK, topics=(DELIVERIES,),
                                              next_deadline=self._next_due)
                for delivery in taken or ():  # each on a free sender: a slow target holds
                    self._pool.submit(self._send_and_free, delivery)  # one, not the rest
            except Exception:
                log.exception("delivery loop step failed")
                self.stopping.wait(1.0)

    def _take(self) -> list[Delivery] | None:
        """As many due rows as there are free senders (None: none, or no sender free)."""
        if self.stopping.is_set():
            return []
        with self._lock:
            free = PARALLEL - self._busy
        if free <= 0:
            return None  # a sender that finishes announces DELIVERIES
        now = time.time()
        taken = self.store.claim_deliveries(now, now + LEASE + MAX_TIMEOUT, min(BATCH, free))
        with self._lock:
            self._busy += len(taken)
        return taken or None

    def _send_and_free(self, delivery: Delivery) -> None:
        try:
            self.send(delivery)
        finally:
            with self._lock:
                self._busy -= 1
            self.wakeups.notify(DELIVERIES)

    def _next_due(self) -> float | None:
        """When to look again without a wake-up: the earliest due row, but not at once (a
        row due now that another server is taking is skipped, and would spin the loop);
        never while every sender is busy (the one that finishes first says so)."""
        with self._lock:
            if self._busy >= PARALLEL:
                return None
        due = self.store.next_delivery_at()
        return None if due is None else max(due, time.time() + MIN_PAUSE)

    def run_due(self) -> int:
        """Send what is due now, in this thread (tests, and a step by hand); how many."""
        taken = self._take() or []
        for delivery in taken:
            self.send(delivery)
        return len(taken)

    # one delivery
    def send(self, delivery: Delivery) -> None:
        try:
            sent = self.attempt(delivery)
        except Exception as e:  # a bug must not lose the row: it is retried
            log.exception("delivery failed unexpectedly", delivery=delivery.id)
            sent = Sent(False, f"blanket could not send it: {type(e).__name__}: {e}")
        self._settle(delivery, sent)

    def attempt(self, delivery: Delivery) -> Sent:
        target = delivery.target
        task = self.store.get_task(delivery.task_id)
        tail = self._tail(task) if task is not None else ""
        body = body_bytes(target, delivery, task, tail, self.link(delivery.task_id))
        timeout = float(target.get("timeout", 10.0))
        if target.get("kind") == "command":
            return run_command(str(target["run"]), body, delivery, task, timeout)
        secret: str | None = None
        if "secret_env" in target:
            secret = self.environ.get(target["secret_env"])
            if not secret:
                return Sent(False, f"not sent: the server's environment has no "
                                   f"{target['secret_env']} (secret_env) to sign it with")
        elif target.get("secret") is not None:
            secret = self.rules.inline_secret(delivery.target_key)
            if secret is None:
                return Sent(False, "not sent: blanket.toml no longer holds this target's "
                                   "secret")
        headers = webhook_headers(delivery, body, secret, time.time())
        return post(str(target["url"]), body, headers, timeout)

    def _settle(self, delivery: Delivery, sent: Sent) -> None:
        """The one place a delivery's attempt ends (metrics: count deliveries, failures and
        attempts here)."""
        now = time.time()
        if sent.ok:
            state, retry_at = "delivered", None
        else:
            retry_at = now + retry_delay(delivery.attempts)
            state = "pending" if retry_at <= delivery.created + GIVE_UP_AFTER else "failed"
            retry_at = retry_at if state == "pending" else None
        if not self.store.settle_delivery(delivery, now, state=state, result=sent.result,
                                          retry_at=retry_at):
            log.warning("delivery settled elsewhere (its lease ran out)", delivery=delivery.id)
            return
        kind = "command" if delivery.target.get("kind") == "command" else "webhook"
        if sent.ok:
            self.metrics.notification_delivered(kind)
        else:  # each attempt that failed, retried or not
            self.metrics.notification_failed(kind)
        if state == "delivered":
            log.info("notification delivered", delivery=delivery.id, task=delivery.task_id,
                     on=delivery.event, target=delivery.target.get("label"))
        else:
            log.warning("notification not delivered", delivery=delivery.id,
                        task=delivery.task_id, result=sent.result, attempts=delivery.attempts,
                        state=state, retry_in=None if retry_at is None else round(retry_at - now))

    def _tail(self, task: Task) -> str:
        """The end of the task's error log (its secret values masked); empty if none."""
        directory = self.task_dir(task.type, task.id)
        masker = Masker.of(task)
        for name in (error_log(False), error_log(True)):
            try:  # as the log routes open it: never through a link out of the task's folder
                data, _ = read_tail(directory, name, masker, TAIL_BYTES + 1)
            except (BlanketError, OSError):
                continue
            return stderr_tail(data)
        return ""

