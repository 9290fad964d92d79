"""How a client reaches the server named by its URL: `http://HOST:PORT`, `https://HOST:PORT`
(trusting a CA file or a pinned certificate fingerprint) or `unix:/PATH` (a unix socket), for
both the http.client connections and the urllib3 pool the client uses."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection as Urllib3Connection
from urllib3.connection import HTTPSConnection as Urllib3TLSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from blanket.errors import InvalidInput
from blanket.tls import check_pinned, client_context, normalize_fingerprint

UNIX_PREFIX = "unix:"
UNIX_HOST = "localhost"  # the Host header over a unix socket: one of every server's names


class BadServerURL(InvalidInput, ValueError):
    """A server URL blanket cannot use."""


@dataclass(frozen=True)
class Target:
    """Where one server is and how to trust it."""

    url: str
    scheme: str  # http, https or unix
    host: str = UNIX_HOST
    port: int = 0
    prefix: str = ""  # a path every request goes under (a server behind a reverse proxy)
    socket_path: str = ""
    context: ssl.SSLContext | None = None
    fingerprint: str | None = None

    @property
    def host_header(self) -> str:
        """The Host header http.client would send: the host, and the port unless it is the
        scheme's own."""
        if self.scheme == "unix":
            return UNIX_HOST
        host = self.host if self.host.isascii() else self.host.encode("idna").decode()
        host = f"[{host}]" if ":" in host else host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def connection(self) -> http.client.HTTPConnection:
        """A new (unconnected) http.client connection to the server."""
        if self.scheme == "unix":
            return UnixHTTPConnection(self.socket_path)
        if self.scheme == "https":
            return VerifiedHTTPSConnection(self.host, self.port, self.context, self.fingerprint,
                                           self.url)
        return http.client.HTTPConnection(self.host, self.port)

    def pool(self, **options: Any) -> urllib3.HTTPConnectionPool:
        """A urllib3 pool of connections to the server (request it with paths, not URLs)."""
        if self.scheme == "unix":
            return UnixConnectionPool(UNIX_HOST, socket_path=self.socket_path, **options)
        if self.scheme == "https":
            if self.fingerprint:
                return PinnedConnectionPool(self.host, self.port, ssl_context=self.context,
                                            pinned=self.fingerprint, server=self.url, **options)
            return urllib3.HTTPSConnectionPool(self.host, self.port, ssl_context=self.context,
                                               **options)
        return urllib3.HTTPConnectionPool(self.host, self.port, **options)


def parse_target(url: str, ca: str | None = None, fingerprint: str | None = None) -> Target:
    """The Target for a server URL, trusting `ca` or the pinned `fingerprint` over https."""
    url = url.rstrip("/")
    if url.startswith(UNIX_PREFIX):
        path = url[len(UNIX_PREFIX):]
        if path.startswith("//"):  # unix:///run/blanket.sock
            path = path[2:]
        if not path:
            raise BadServerURL(f"server URL {url!r}: write unix:/PATH/TO/blanket.sock")
        return Target(url=url, scheme="unix", socket_path=path)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadServerURL(f"server URL {url!r}: use http://HOST:PORT, https://HOST:PORT or "
                         "unix:/PATH/TO/blanket.sock")
    https = parts.scheme == "https"
    pinned = normalize_fingerprint(fingerprint) if https and fingerprint else None
    return Target(url=url, scheme=parts.scheme, host=parts.hostname,
                  port=parts.port or (443 if https else 80), prefix=parts.path.rstrip("/"),
                  context=client_context(ca, pinned) if https else None, fingerprint=pinned)


def _unix_socket(path: str, timeout: object) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # http.client and urllib3 mark "no timeout given" with sentinels of their own
        sock.settimeout(timeout if isinstance(timeout, int | float) else None)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """An http.client connection over a unix socket."""

    def __init__(self, socket_path: str):
        super().__init__(UNIX_HOST)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = _unix_socket(self.socket_path, self.timeout)


class VerifiedHTTPSConnection(http.client.HTTPSConnection):
    """An http.client TLS connection that also checks a pinned fingerprint, if any."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None,
                 fingerprint: str | None, server: str):
        super().__init__(host, port, context=context)
        self.fingerprint = fingerprint
        self.server = server

    def connect(self) -> None:
        super().connect()
        if self.fingerprint:
            try:
                check_pinned(self.sock, self.fingerprint, self.server)
            except BaseException:
                self.close()
                raise


class UnixConnection(Urllib3Connection):
    """A urllib3 connection over a unix socket."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        try:
            return _unix_socket(self.socket_path, self.timeout)
        except TimeoutError as e:
            raise ConnectTimeoutError(self, f"connecting to {self.socket_path} timed out") from e
        except OSError as e:
            raise NewConnectionError(self, f"cannot connect to {self.socket_path}: {e}") from e


class UnixConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = UnixConnection


class PinnedConnection(Urllib3TLSConnection):
    """A urllib3 TLS connection that trusts exactly the certificate with a pinned fingerprint."""

    def __init__(self, *args: Any, pinned: str, server: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pinned = pinned
        self.server = server

    def connect(self) -> None:
        super().connect()
        try:
            check_pinned(self.sock, self.pinned, self.server)  # type: ignore[arg-type]
        except BaseException:
            self.close()
            raise
        self.is_verified = True  # by its fingerprint, which is stricter than by a CA


class PinnedConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = PinnedConnection
