"""What keeps other web sites out, in front of every route (a WSGI middleware).

- DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 talks to
  blanket with `Host: evil.example`. Only the server's own names are served (421 otherwise).
- Cross-site requests: a form, a `text/plain` fetch or a multipart post from another origin
  reaches the server with that page's `Origin` (or `Sec-Fetch-Site: cross-site`). Changes
  from any origin but the server's own, or one in `allowed_origins`, are refused (403).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from blanket.config.settings import Settings
from blanket.server.api.http import refuse

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def server_names(settings: Settings) -> frozenset[str] | None:
    """The Host names this server answers to; None when `server_names` holds "*"."""
    if "*" in settings.server_names:
        return None
    names = {"localhost", "127.0.0.1", "::1", settings.host,
             urlsplit(settings.url).hostname or "", *settings.server_names}
    if settings.host in WILDCARD_HOSTS:  # reachable by the machine's names and addresses
        names |= _machine_names()
    return frozenset(_hostname(n) for n in names if n)


def _machine_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        with contextlib.suppress(OSError):
            names |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    return names


def _hostname(host: str) -> str:
    """The name part of a Host header value, lower case, without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class BrowserGuard:
    """WSGI middleware: refuse foreign Host headers and cross-origin changes."""

    def __init__(self, app: Callable, names: frozenset[str] | None,
                 allowed_origins: Iterable[str] = ()):
        self.app = app
        self.names = names
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed_origins)

    def __call__(self, environ: dict, start_response: Callable):
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if self.names is not None and _hostname(host) not in self.names:
            return refuse(start_response, "421 Misdirected Request", "misdirected",
                           f"this server does not answer to the name {host!r}; add it to "
                           "the server_names setting if it is really this server's")
        if environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS:
            refused = self._cross_site(environ, host)
            if refused:
                return refuse(start_response, "403 Forbidden", "cross_origin", refused)
        return self.app(environ, _never_sniffed(start_response))

    def _cross_site(self, environ: dict, host: str) -> str | None:
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None:
            own = f"{environ.get('wsgi.url_scheme', 'http')}://{host}".lower()
            if origin.lower() in (own, *self.allowed):
                return None
            return (f"a change requested by a page from {origin!r}, another origin, is "
                    "refused; add that origin to allowed_origins if you trust it")
        if environ.get("HTTP_SEC_FETCH_SITE") in ("cross-site", "same-site"):
            return "a change requested by a page from another site is refused"
        return None


def _never_sniffed(start_response: Callable) -> Callable:
    """Every answer keeps the type it declares: no browser reads a JSON answer as a script
    or a page."""
    def start(status: str, headers: list, exc_info=None):
        if not any(name.lower() == "x-content-type-options" for name, _ in headers):
            headers.append(("X-Content-Type-Options", "nosniff"))
        return start_response(status, headers, exc_info) if exc_info else start_response(
            status, headers)
    return start

