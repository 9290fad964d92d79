"""What `blanket server` listens on: a TCP address (plain HTTP on loopback, else HTTPS unless
`insecure`) and a unix socket, each its own cheroot server over the same app."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
from cheroot import errors, wsgi
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter

from blanket.config.settings import Settings, is_loopback
from blanket.errors import InvalidInput
from blanket.tls import certificate_fingerprint, ensure_self_signed, server_context

SOCKET_MODE = 0o660  # the server's user and group may connect, nobody else

log = structlog.get_logger("blanket.server")


def refuse_plain_exposure(settings: Settings) -> None:
    """Refuse plain HTTP on an address other machines can reach, unless `insecure` says so."""
    if not settings.serves_tcp or settings.serves_tls or settings.insecure:
        return
    if is_loopback(settings.host):
        return
    raise InvalidInput(
        f"refusing to serve plain HTTP on {settings.host}, an address other machines can "
        "reach: tokens, submitted values and task output would cross the network unencrypted. "
        "Serve HTTPS (tls = \"self-signed\", or tls_cert and tls_key; flags --tls self-signed, "
        "--tls-cert, --tls-key), or bind to loopback (host = \"127.0.0.1\") or a unix socket "
        "(listen = \"unix:/PATH/blanket.sock\"), or, if something else already encrypts this "
        "network (a VPN, a TLS proxy in front), set insecure = true (--insecure)")


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key TCP is served with (the self-signed pair made on first use),
    or None for plain HTTP."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    if settings.tls:
        return ensure_self_signed(settings.data_dir, settings.host)
    return None


def claim_socket_path(path: Path) -> None:
    """Make way for a unix socket at `path`: refuse when a server answers there or when it is
    not a socket; remove a stale socket file that nobody listens on."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise InvalidInput(f"{path} exists and is not a socket: remove it, or choose another "
                           "path for listen = \"unix:...\"")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:  # nobody listens: left behind by a server that died
        log.info("removing a stale unix socket", path=str(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as e:
        raise InvalidInput(f"cannot tell whether a server listens on {path} ({e}); remove it "
                           "if none does, or choose another path for listen") from None
    finally:
        probe.close()
    raise InvalidInput(f"another server is listening on {path}: stop it first, or choose "
                       "another path for listen = \"unix:...\"")


class HandshakeLaterAdapter(BuiltinSSLAdapter):
    """cheroot's adapter shakes hands on the one thread that accepts connections, so a client
    that connects and stays silent stops every other from connecting for the whole socket
    timeout. This one only wraps the socket there; HandshakeFirstConnection shakes hands on
    the connection's own HTTP thread."""

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        try:
            tls = self.context.wrap_socket(sock, do_handshake_on_connect=False,
                                           server_side=True)
        except OSError as e:
            raise errors.FatalSSLAlert(*e.args) from e
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}


class HandshakeFirstConnection(HTTPConnection):
    """A TLS connection that completes its handshake before its first request is read."""

    shaken = False

    def communicate(self) -> bool:
        if not self.shaken:
            try:
                self.socket.do_handshake()
            except OSError as e:  # plain HTTP, a client that gave up, or one too slow
                log.debug("TLS handshake failed", problem=str(e))
                return False
            self.shaken = True
        return super().communicate()


class UnixSocketServer(wsgi.Server):
    """A cheroot server on a unix socket of mode 0660 that it removes when it stops. cheroot's
    own binding would unlink whatever is at the path, even a live server's socket, and make
    it world-writable (0777)."""

    inode: int | None = None  # of the socket file it made

    def bind_unix_socket(self, bind_addr: str) -> socket.socket:
        claim_socket_path(Path(bind_addr))
        sock = self.prepare_socket(bind_addr, socket.AF_UNIX, socket.SOCK_STREAM, 0,
                                   self.nodelay, self.ssl_adapter, self.reuse_port)
        try:
            # On Linux the file bind() makes takes the socket's mode (less the umask), so it is
            # never more open than SOCKET_MODE, not even for a moment.
            os.fchmod(sock.fileno(), SOCKET_MODE)
            sock.bind(bind_addr)
            os.chmod(bind_addr, SOCKET_MODE)
            self.inode = os.stat(bind_addr).st_ino
        except OSError:
            sock.close()
            raise
        self.socket = sock
        return sock

    def stop(self) -> None:
        super().stop()
        self.remove_socket()

    def remove_socket(self) -> None:
        """Remove our socket file (not one another server has put there since)."""
        path = self.bind_addr
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == self.inode:
                os.unlink(path)


def make_http_servers(settings: Settings, app: Callable) -> list[wsgi.Server]:
    """One cheroot server per address in the settings, TCP first. Each has its own pool of
    `threads` HTTP threads, growing to `max_threads`."""
    options = {"numthreads": settings.threads,
               "max": max(settings.threads, settings.max_threads),
               "server_name": "blanket", "shutdown_timeout": 1}
    servers: list[wsgi.Server] = []
    if settings.serves_tcp:
        tcp = wsgi.Server((settings.host, settings.port), app, **options)
        files = tls_files(settings)
        if files is not None:
            server_context(*files)  # a clear message when the pair does not load
            tcp.ssl_adapter = HandshakeLaterAdapter(str(files[0]), str(files[1]))
            tcp.ConnectionClass = HandshakeFirstConnection
        servers.append(tcp)
    if settings.unix_socket is not None:
        servers.append(UnixSocketServer(str(settings.unix_socket.absolute()), app, **options))
    return servers


def announce_tls(settings: Settings) -> str | None:
    """Print the served certificate's fingerprint, for clients to pin; return it."""
    files = tls_files(settings) if settings.serves_tcp else None
    if files is None:
        return None
    fingerprint = certificate_fingerprint(files[0])
    print(f"blanket: serving HTTPS with {files[0]}, SHA-256 fingerprint {fingerprint}\n"
          f"blanket: clients trust it with --fingerprint {fingerprint} "
          f"(or --ca {files[0]})", file=sys.stderr, flush=True)
    return fingerprint


def describe(server: wsgi.Server) -> str:
    """The address a cheroot server listens on, for messages."""
    address = server.bind_addr
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
