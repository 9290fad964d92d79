"""What `blanket server` listens on: a TCP address (plain HTTP on loopback, else HTTPS unless
`insecure`) and a unix socket, each served by granian (HTTP and TLS in Rust) in this process
over the same app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

# granian's WSGI worker is run directly (granian's own servers run it in another process or
# thread with their own signal handling and sockets): granian is pinned to one version.
from granian._futures import _new_cbscheduler
from granian._granian import SocketHolder, WorkerSignal, WSGIWorker

from blanket.config.settings import Settings, is_loopback
from blanket.errors import InvalidInput
from blanket.server.httppool import LISTEN_BACKLOG, SHRINK_AFTER, Dispatcher, listen_backlog
from blanket.tls import certificate_fingerprint, ensure_self_signed, server_context

SOCKET_MODE = 0o660  # the server's user and group may connect, nobody else
RUNTIME_THREADS = 1  # granian's Rust runtime threads (HTTP, TLS): one is plenty for 2 cores
RUNTIME_BLOCKING_THREADS = 8  # the Rust runtime's own blocking threads (not Python's)
STOP_TIMEOUT = 5.0  # seconds the requests in progress get to finish at shutdown
MOST_CONNECTIONS = 65536  # connections held at once, at most
MIN_CONNECTIONS = 2048  # fewer allowed (ulimit -n) is warned about
FILE_MARGIN = 256  # open files kept for everything but connections

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


class Listener:
    """One address (TCP, with or without TLS, or a unix socket) served by a granian WSGI
    worker inside this process: the app's state (store, catalog, wake-ups) is here, so there
    is one worker, whose Rust runtime reads and writes HTTP and calls `dispatcher`. The socket
    is bound here, then handed to granian, which owns it from `serve` on."""

    def __init__(self, address: tuple[str, int] | str, dispatcher: Dispatcher,
                 tls: tuple[Path, Path] | None = None, threads: int = 64,
                 backlog: int = LISTEN_BACKLOG):
        self.bind_addr = address
        self.dispatcher = dispatcher
        self.tls = tls
        self.threads = threads
        self.backlog = backlog
        self.socket: socket.socket | None = None
        self.ready = False  # bound
        self.inode: int | None = None  # of the unix socket file it made
        self._signal: WorkerSignal | None = None
        self._stopped = threading.Event()

    @property
    def is_unix(self) -> bool:
        return isinstance(self.bind_addr, str)

    def prepare(self) -> None:
        """Bind the address (listening starts in `serve`)."""
        self.socket = self._bind_unix() if self.is_unix else self._bind_tcp()
        self.ready = True

    def _bind_tcp(self) -> socket.socket:
        host, port = self.bind_addr
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it: an answer granian writes in two parts (a
            # streamed body) must not wait for the client's delayed ACK (40 ms) in between.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if family == socket.AF_INET6 and host in ("::", ""):  # both stacks, as cheroot did
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        if port == 0:
            self.bind_addr = (host, sock.getsockname()[1])
        return sock

    def _bind_unix(self) -> socket.socket:
        path = str(self.bind_addr)
        claim_socket_path(Path(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # On Linux the file bind() makes takes the socket's mode (less the umask), so it is
            # never more open than SOCKET_MODE, not even for a moment.
            os.fchmod(sock.fileno(), SOCKET_MODE)
            sock.bind(path)
            os.chmod(path, SOCKET_MODE)
            self.inode = os.stat(path).st_ino
        except OSError:
            sock.close()
            raise
        return sock

    def serve(self) -> None:
        """Start serving on granian's threads; returns at once."""
        if self.socket is None:
            raise RuntimeError("prepare() first")
        self.socket.listen(self.backlog)
        holder = SocketHolder(self.socket.detach(), self.is_unix, self.backlog)
        self.socket = None  # granian's now: it closes it when it stops
        cert, key = (str(self.tls[0]), str(self.tls[1])) if self.tls else (None, None)
        worker = WSGIWorker(
            1, (None, holder), None,
            threads=RUNTIME_THREADS,  # the Rust runtime's: HTTP parsing, TLS, sockets
            blocking_threads=RUNTIME_BLOCKING_THREADS,
            py_threads=max(1, self.threads),  # the most threads running short requests
            py_threads_idle_timeout=int(SHRINK_AFTER),
            backpressure=max_connections(),
            http_mode="1", http1_opts=None, http2_opts=None, static_files=None,
            ssl_enabled=self.tls is not None, ssl_cert=cert, ssl_key=key,
            ssl_key_password=None, ssl_protocol_min="tls1.2", ssl_ca=None, ssl_crl=[],
            ssl_client_verify=False, metrics=(None, None))
        self._signal = WorkerSignal()
        self._signal.add_cb(self._stopped.set)  # called once granian has let go of everything
        # granian's scheduler wants an event loop even though a WSGI worker never runs one
        loop = asyncio.new_event_loop()
        scheduler = _new_cbscheduler(loop, self.dispatcher, impl_asyncio=False)
        serve = worker.serve_mtr_uds if self.is_unix else worker.serve_mtr
        serve(scheduler, loop, self._signal)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, let the requests in progress finish (at most `timeout` seconds),
        close the socket; remove the unix socket file if it is still ours."""
        if self._signal is not None:
            self._signal.set()
            if not self._stopped.wait(timeout):
                log.warning("HTTP requests still running at shutdown", listener=describe(self))
        elif self.socket is not None:
            self.socket.close()
            self.socket = None
        if self.is_unix:
            self.remove_socket()

    def remove_socket(self) -> None:
        """Remove our socket file (not one another server has put there since)."""
        path = str(self.bind_addr)
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == self.inode:
                os.unlink(path)


def max_connections() -> int:
    """Connections granian keeps open at once (each held long poll is one): as many as the
    process may open files (raised to the hard limit, up to 65,536), less a margin for the
    store, logs and tasks' files. Past it granian accepts no new connection until one
    closes, so a short request would wait behind held long polls: warn when it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_CONNECTIONS + FILE_MARGIN
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return MOST_CONNECTIONS
    most = max(64, min(MOST_CONNECTIONS, soft - FILE_MARGIN))
    if most < MIN_CONNECTIONS:
        log.warning("few open files allowed: the server holds at most this many connections "
                    "at once (each waiting worker or client holds one); raise ulimit -n",
                    connections=most)
    return most


def make_http_servers(settings: Settings, app: Callable) -> list[Listener]:
    """One granian listener per address in the settings, TCP first, sharing one Dispatcher:
    short requests on granian's threads (at most `threads`), waiting ones on the dispatcher's
    own pool (at most `max_threads`)."""
    dispatcher = app if isinstance(app, Dispatcher) else Dispatcher(
        app, max(settings.threads, settings.max_threads))
    servers: list[Listener] = []
    backlog = listen_backlog()
    if settings.serves_tcp:
        files = tls_files(settings)
        if files is not None:
            server_context(*files)  # a clear message when the pair does not load
        servers.append(Listener((settings.host, settings.port), dispatcher, files,
                                settings.threads, backlog))
    if settings.unix_socket is not None:
        servers.append(Listener(str(settings.unix_socket.absolute()), dispatcher, None,
                                settings.threads, backlog))
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


def describe(server: Listener) -> str:
    """The address a listener listens on, for messages."""
    address = server.bind_addr
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
