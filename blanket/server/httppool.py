"""Which thread answers a request. granian reads and writes HTTP in Rust and calls the app on
its blocking threads; that pool adds a thread only when a request finds none idle, and two
requests arriving together may get one new thread between them. A request that waits (a
long poll: `?wait=`, a followed log) would hold one of those threads for its whole wait, so a
short request could queue behind held long polls until one of them ends (seen once in 24
runs: a GET waited ~30 s). Waiting requests are therefore handed at once to a pool of our own
(`WaitPool`) that starts a thread whenever fewer are free than requests wait for one; granian's
threads only run short requests.

An answer streamed chunk by chunk (a download: a log, a task's file, a version bundle) is
also sent from a pool of our own (`Dispatcher.streams`): granian takes each chunk on the
thread that hands it the body and waits there while the client reads, so a client reading
slowly (or not at all) would hold one of the short requests' threads for as long as it
likes."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote

import structlog

from blanket.auth import Identity
from blanket.server.api.access import caller_of
from blanket.server.api.front import body_limit
from blanket.server.api.http import MAX_JSON, close_body
from blanket.server.heldshare import SHARE, Counts, HeldShare, TooManyHeld, caller_key

log = structlog.get_logger("blanket.server")

SHRINK_AFTER = 30.0  # seconds a waiting-request thread stays idle before it stops
SPARE_THREADS = 1  # a free waiting-request thread is always there or started for the next one
LISTEN_BACKLOG = 4096  # connections the kernel queues before the server accepts them
MIN_BACKLOG = 1024
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
UNDELIVERED = "blanket.undelivered"  # environ key: called when the answer found no client
# Requests whose bodies are still arriving that one address may have at once without
# credentials (see BodyGate).
BODIES_PER_ADDRESS = 8
# ... and that one token may have (workers and admins not counted): many callers sharing a
# token send many bodies, each quickly; slow ones still leave most threads to others.
BODIES_PER_TOKEN = 32
IN_ALL = "every address"  # BodyGate's count of all addresses without a token together
# ... and that every address together may have, as a share of the threads answering short
# requests: many addresses sending slowly still leave the rest to callers with tokens.
BODIES_SHARE = 4
READ_AHEAD_CHUNK = 64 * 1024  # bytes read at a time from a waiting request's body


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


def waits(environ: dict) -> bool:
    """Whether this request may be held a long time: a long poll (`?wait=`: a task's end, a
    claim, a heartbeat, a submission that waits), a followed log (server-sent events), or an
    MCP call (a tool may wait, whatever the client accepts)."""
    query = environ.get("QUERY_STRING", "")
    if "%" in query:  # as the route will read it: ?%66ollow follows too
        query = unquote(query)
    return ("wait=" in query or "follow" in query
            or "event-stream" in environ.get("HTTP_ACCEPT", "")
            or environ.get("PATH_INFO", "").rstrip("/") == "/mcp")  # a tool may wait


class WaitPool:
    """Threads for requests that wait. `submit` never leaves a job queued behind busy
    threads: when no thread is free for it one is started (up to `most`), under the same lock
    that counts the free ones, so two jobs arriving together get two threads. A thread idle
    for `idle_timeout` seconds stops."""

    def __init__(self, most: int, idle_timeout: float = SHRINK_AFTER,
                 holding: str = "waiting requests", queued: str = "long polls",
                 name: str = "blanket wait"):
        self.most = most
        self.name = name  # of its threads
        self.holding = holding  # what its threads hold, and what queues when they are all
        self.queued = queued  # taken, for the warning
        self.idle_timeout = idle_timeout
        self._ready = threading.Condition(threading.Lock())
        self._jobs: deque[Callable[[], object]] = deque()
        self.threads = 0  # alive
        self.idle = 0  # alive and not running a job (counted from the moment one is started)
        self._warned_full = False

    def submit(self, job: Callable[[], object]) -> None:
        with self._ready:
            self._add(job)

    def _add(self, job: Callable[[], object]) -> None:
        """Queue `job`, starting a thread for it if none is free (under the lock)."""
        self._jobs.append(job)
        if len(self._jobs) > self.idle:
            if self.threads < self.most:
                self.threads += 1
                self.idle += 1
                threading.Thread(target=self._run, name=self.name,
                                 daemon=True).start()
            elif not self._warned_full:
                self._warned_full = True
                log.warning(f"every thread for {self.holding} is taken and max_threads "
                            f"is reached: {self.queued} queue until one ends; raise "
                            "max_threads", max_threads=self.most)
        self._ready.notify()

    def try_submit(self, job: Callable[[], object]) -> bool:
        """Run `job` on a free thread, or a new one below `most`; False (nothing queued)
        when every thread is taken."""
        with self._ready:
            if len(self._jobs) >= self.idle and self.threads >= self.most:
                if not self._warned_full:
                    self._warned_full = True
                    log.warning(f"every thread for {self.holding} is taken and max_threads "
                                f"is reached: {self.queued} are sent from the threads that "
                                "answer short requests until one ends; raise max_threads",
                                max_threads=self.most)
                return False
            self._add(job)
        return True

    def _run(self) -> None:
        while True:
            with self._ready:
                deadline = time.monotonic() + self.idle_timeout
                while not self._jobs:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.idle -= 1
                        self.threads -= 1
                        return
                    self._ready.wait(left)
                job = self._jobs.popleft()
                self.idle -= 1
            try:
                job()
            except Exception:
                log.exception("a waiting request failed")
            del job  # what it holds (a request, its answer's file) is not kept while idle
            with self._ready:
                self.idle += 1


def _read_ahead(stream, most: int) -> tempfile.SpooledTemporaryFile:
    """Up to `most` bytes of `stream`, kept in memory up to MAX_JSON, on disk past it."""
    body = tempfile.SpooledTemporaryFile(max_size=MAX_JSON)  # noqa: SIM115 (the caller closes it)
    try:
        while most > 0 and (chunk := stream.read(min(READ_AHEAD_CHUNK, most))):
            body.write(chunk)
            most -= len(chunk)
        body.seek(0)
    except BaseException:
        body.close()
        raise
    return body


def has_body(environ: dict) -> bool:
    """Whether a request comes with a body to read (a length over 0, or chunks)."""
    length = environ.get("CONTENT_LENGTH") or ""
    return (length not in ("", "0")
            or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower())


class BodyGate:
    """A request's body is read on one of granian's threads, which a client sending it
    slowly (or never) holds as long as it likes: enough such requests would leave none for
    anyone else. So without credentials that verify (`verified(environ)` gives who sent
    them, or None), one address may have at most `most` requests with bodies in progress at
    once, and every address together at most `most_in_all` (default: no bound); one token
    (from any address) at most `most_per_token`; more are refused at once (429), before
    their bodies are read. Workers and admins are not counted (a fleet shares its token),
    nor are local callers without a token (loopback, the unix socket): they may do more
    than this already. The default counts no one."""

    def __init__(self, verified: Callable[[dict], Identity | None] | None = None,
                 most: int = BODIES_PER_ADDRESS, most_in_all: int | None = None,
                 most_per_token: int = BODIES_PER_TOKEN):
        self.verified = verified
        self.most = most
        self.most_in_all = most_in_all
        self.most_per_token = most_per_token
        self.counts = Counts()  # by caller_key, and IN_ALL: every address together
        self.refusal = _too_many(
            f"this address already has {most} requests whose bodies are still arriving: "
            "wait for one to end, or send a token (Authorization: Bearer TOKEN)")
        self.refusal_in_all = _too_many(
            f"the server already has {most_in_all} requests without a token whose bodies are "
            "still arriving: try again shortly, or send a token (Authorization: Bearer TOKEN)")

    def admit(self, environ: dict) -> tuple[str | None, bytes]:
        """(None, the refusal's body) when refused; else (what to hand `done` once the body
        is read: the caller counted, or "" for a request not counted, b"")."""
        if not has_body(environ) or self.verified is None:
            return "", b""
        key = caller_key(self.verified(environ), environ.get("REMOTE_ADDR") or "")
        if key is None:
            return "", b""
        by_token = key.startswith("token ")
        held = self.counts.take(key, self.most_per_token if by_token else self.most)
        if held is not None:
            return None, (_too_many(f"{key} already has {held} requests whose bodies are "
                                    "still arriving: wait for one to end")
                          if by_token else self.refusal)
        if not by_token and self.most_in_all is not None and \
                self.counts.take(IN_ALL, self.most_in_all) is not None:
            self.counts.give(key)
            return None, self.refusal_in_all
        return key, b""

    def done(self, counted: str) -> None:
        if counted:
            self.counts.give(counted)
            if not counted.startswith("token "):
                self.counts.give(IN_ALL)


def _too_many(message: str) -> bytes:
    return json.dumps({"error": {"code": "too_many_requests", "message": message}}).encode()


class _Started:
    """start_response for granian: keeps the status as a number and the headers."""

    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        self.status = int(status[:3])
        self.headers = headers
        return _no_write


def _no_write(data: bytes) -> None:
    raise RuntimeError("write() is not supported: return the body")


class _Delivered:
    """An answer's body handed to granian chunk by chunk. granian closes it early (before it
    ran out) when the connection is gone: then `undelivered` is called, once."""

    __slots__ = ("_chunks", "_finished", "body", "ended", "undelivered")

    def __init__(self, body: Iterable[bytes], undelivered: Callable[[], object] | None,
                 ended: Callable[[], object]):
        self.body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._finished = False
        self.undelivered = undelivered
        self.ended = ended  # called once it is closed, sent or not

    def __iter__(self) -> _Delivered:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self._finished = True
            raise

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            self.ended()
            if not self._finished and self.undelivered is not None:
                try:
                    self.undelivered()
                except Exception:
                    log.exception("could not undo an answer that found no client")


class Dispatcher:
    """What granian calls for each request, `(protocol, environ)`: short requests are answered
    on the calling thread, waiting ones on the WaitPool's; a streamed answer to a short
    request is sent from a thread of `streams`."""

    def __init__(self, app: Callable, most_waiting: int, gate: BodyGate | None = None):
        self.app = app
        self.waiting = WaitPool(most_waiting)
        self.streams = WaitPool(most_waiting, holding="streamed answers",
                                queued="downloads", name="blanket stream")
        self.gate = gate or BodyGate()
        self.share = HeldShare()  # held requests (waits, streams) a caller may have at once
        # what every environ holds; granian's own wrapper would copy os.environ in as well
        self.base = {"GATEWAY_INTERFACE": "CGI/1.1", "SCRIPT_NAME": "",
                     "SERVER_SOFTWARE": "blanket", "wsgi.version": (1, 0),
                     "wsgi.multithread": True, "wsgi.multiprocess": False,
                     "wsgi.run_once": False, "wsgi.input_terminated": True}

    def __call__(self, proto, scope: dict) -> None:
        environ = self.base | scope
        counted, refusal = self.gate.admit(environ)
        if counted is None:
            proto.response_bytes(429, [("Content-Type", "application/json"),
                                       ("Retry-After", "1"), ("Connection", "close")],
                                 refusal)
            return
        try:
            if waits(environ):
                # granian ends a request's body stream once this call returns: read it here
                # (up to one byte past its route's limit, which RequestFront then refuses),
                # into memory while small, else into a temporary file.
                body = _read_ahead(environ["wsgi.input"], body_limit(environ) + 1)
                environ["wsgi.input"] = body
                environ[SHARE] = self.share  # counted once its caller is known (Access)

                def job() -> None:
                    with body:
                        self.answer(proto, environ, pooled=True)
                self.waiting.submit(job)
            else:
                self.answer(proto, environ)
        finally:
            self.gate.done(counted)

    def answer(self, proto, environ: dict, pooled: bool = False) -> None:
        """Run the app and hand granian its answer; `pooled`: on a thread of our own."""
        started = _Started()
        try:
            body = self.app(environ, started)
        except Exception:
            self.share.release(environ)
            log.exception("the app failed", path=environ.get("PATH_INFO"))
            proto.response_bytes(500, [("Content-Type", "text/plain")], b"server error\n")
            return
        undelivered = environ.get(UNDELIVERED)
        whole = body if isinstance(body, list) else getattr(body, "whole", None)
        if whole is not None and undelivered is None:
            try:
                proto.response_bytes(started.status, started.headers, b"".join(whole))
            finally:
                close_body(body)
                self.share.release(environ)
            return
        if whole is None:  # a stream, which its client may take as long as it likes to read
            try:
                self.share.hold(environ, caller_of(environ))
            except TooManyHeld as refused:
                close_body(body)
                proto.response_bytes(429, [("Content-Type", "application/json"),
                                           ("Retry-After", "1")],
                                     _too_many(refused.message))
                return
        delivered = _Delivered(body, undelivered, lambda: self.share.release(environ))
        # A stream: sent from a thread that may wait as long as its client reads; when
        # every such thread is taken, from this one (nothing queues holding a file open).
        if whole is None and not pooled and self.streams.try_submit(
                lambda: proto.response_iter(started.status, started.headers, delivered)):
            return
        proto.response_iter(started.status, started.headers, delivered)
