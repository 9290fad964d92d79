"""The outermost look at every request (a WSGI middleware): each one is timed until its
answer is sent, counted by method, route template and status, and logged at debug (the
access log). The route is the template Bottle matched (`/task/<task_id>`), never the path
asked for: a label per path would let any client grow the metrics without bound."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

import structlog

from blanket.server.api.access import caller_of
from blanket.server.api.http import close_body
from blanket.server.metrics import UNROUTED, Metrics

log = structlog.get_logger("blanket.http")
_std = logging.getLogger("blanket.http")  # asked first: an access line nobody keeps costs nothing
MAX_LOGGED_PATH = 300  # characters of a request's path in its access line


class RequestMeter:
    """Times, counts and logs every request `app` answers, including those a middleware
    inside refuses before any route (their route is UNROUTED)."""

    def __init__(self, app: Callable, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        began = time.perf_counter()
        status = [500]  # a request that raises is a 500

        def start(line: str, headers: list, exc_info=None):
            status[0] = int(line[:3])
            return start_response(line, headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            self._done(environ, status[0], began)
            raise
        return _Answer(body, lambda: self._done(environ, status[0], began))

    def _done(self, environ: dict, status: int, began: float) -> None:
        seconds = time.perf_counter() - began
        route = environ.get("bottle.route")
        template = route.rule if route is not None else UNROUTED
        method = environ.get("REQUEST_METHOD", "")
        self.metrics.request(method, template, status, seconds)
        if _std.isEnabledFor(logging.DEBUG):
            caller = caller_of(environ)
            log.debug("request", method=method[:16],
                      path=environ.get("PATH_INFO", "")[:MAX_LOGGED_PATH], route=template,
                      status=status, seconds=round(seconds, 6),
                      client=environ.get("REMOTE_ADDR") or "unix socket",
                      caller=caller.name if caller is not None else None)


class _Answer:
    """An answer's body, passed through; when the server closes it (the body sent, or the
    client gone), the request is done."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]):
        self.body = body
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    @property
    def whole(self) -> list[bytes] | None:
        """The body when it is all there already (a list), for the server to send at once."""
        return self.body if isinstance(self.body, list) else None

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            self.done()
