"""Where the server listens: plain HTTP only on loopback unless `insecure`, and a unix socket
that is 0660, removed on exit, refused while another server holds it and replaced when
stale."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.longpoll import UNCLAIMED
from blanket.client import Client
from blanket.config.settings import Settings
from blanket.errors import InvalidInput
from blanket.server.httppool import Dispatcher
from blanket.server.listeners import (
    Listener,
    claim_socket_path,
    make_http_servers,
    max_connections,
    refuse_plain_exposure,
)
from blanket.server.serve import Server
from blanket.tls import ensure_self_signed
from tests.conftest import free_port, wait_until


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to about 100 bytes: keep them short whatever the test's name.
    folder = Path(tempfile.mkdtemp(prefix="bl-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


def app(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def unix_listener(path: Path) -> Listener:
    return Listener(str(path), Dispatcher(app, 4), threads=2)


@pytest.fixture
def unix_server(sock_dir: Path) -> Iterator[Listener]:
    server = unix_listener(sock_dir / "b.sock")
    server.prepare()
    server.serve()
    yield server
    server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_plain_http_on_an_address_others_reach_is_refused_saying_what_to_set(host: str):
    with pytest.raises(InvalidInput) as refused:
        refuse_plain_exposure(Settings(host=host))
    message = refused.value.message
    assert f"refusing to serve plain HTTP on {host}" in message
    assert 'tls = "self-signed"' in message and "insecure = true" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_plain_http_on_loopback_is_served(host: str):
    refuse_plain_exposure(Settings(host=host))


@pytest.mark.parametrize("settings", [
    Settings(host="0.0.0.0", insecure=True),
    Settings(host="0.0.0.0", tls="self-signed"),
    Settings(host="0.0.0.0", tls_cert=Path("c.pem"), tls_key=Path("k.pem")),
    Settings(listen=("unix:/tmp/b.sock",), host="0.0.0.0"),  # no TCP is served at all
])
def test_tls_insecure_or_no_tcp_lets_any_address_through(settings: Settings):
    refuse_plain_exposure(settings)


def test_the_server_refuses_before_opening_anything(tmp_path: Path):
    settings = Settings(host="0.0.0.0", data_dir=tmp_path / "var")
    with pytest.raises(InvalidInput, match=r"refusing to serve plain HTTP on 0\.0\.0\.0"):
        Server(settings)
    assert not (tmp_path / "var").exists()


def test_an_absent_path_is_free(sock_dir: Path):
    claim_socket_path(sock_dir / "none.sock")


def test_a_stale_socket_nobody_listens_on_is_removed(sock_dir: Path):
    path = sock_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening, then closed
        dead.bind(str(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    claim_socket_path(path)
    assert not path.exists()


def test_a_socket_another_server_listens_on_is_refused(unix_server: Listener):
    path = Path(unix_server.bind_addr)
    with pytest.raises(InvalidInput, match=f"another server is listening on {path}"):
        claim_socket_path(path)
    second = unix_listener(path)
    with pytest.raises(InvalidInput, match="another server is listening"):
        second.prepare()
    second.remove_socket()  # what stopping the refused one does: the first one's file stays
    assert Client(f"unix:{path}").get("/")["ok"]


def test_a_file_that_is_not_a_socket_is_left_alone(sock_dir: Path):
    path = sock_dir / "notes.txt"
    path.write_text("mine")
    with pytest.raises(InvalidInput, match="exists and is not a socket"):
        claim_socket_path(path)
    assert path.read_text() == "mine"


def test_the_socket_is_0660_and_removed_when_the_server_stops(sock_dir: Path):
    path = sock_dir / "b.sock"
    old_umask = os.umask(0o022)  # a umask that would drop the group's write bit
    try:
        server = unix_listener(path)
        server.prepare()
    finally:
        os.umask(old_umask)
    server.serve()
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    assert Client(f"unix:{path}").get("/")["ok"]
    server.stop()
    assert not path.exists()


def test_a_socket_replaced_meanwhile_is_not_removed(sock_dir: Path):
    path = sock_dir / "b.sock"
    server = unix_listener(path)
    server.prepare()
    path.unlink()
    with socket.socket(socket.AF_UNIX) as other:  # another server's socket now
        other.bind(str(path))
        server.stop()
        assert path.exists()


def test_a_missing_certificate_file_is_named(tmp_path: Path):
    settings = Settings(port=free_port(), tls_cert=tmp_path / "cert.pem",
                        tls_key=tmp_path / "key.pem")
    with pytest.raises(InvalidInput, match=r"cert\.pem does not exist; check tls_cert"):
        make_http_servers(settings, app)


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path):
    cert, _ = ensure_self_signed(tmp_path / "a", "127.0.0.1")
    _, other_key = ensure_self_signed(tmp_path / "b", "127.0.0.1")
    settings = Settings(port=free_port(), tls_cert=cert, tls_key=other_key)
    with pytest.raises(InvalidInput, match=r"cannot use the certificate .* with the key"):
        make_http_servers(settings, app)


def test_long_polls_on_the_tcp_address_and_the_socket_alike_leave_short_requests_answered(
        tmp_path: Path, sock_dir: Path):
    port = free_port()
    path = sock_dir / "b.sock"
    (tmp_path / "conf.d" / "types").mkdir(parents=True)
    (tmp_path / "conf.d" / "types" / "unclaimed.toml").write_text(UNCLAIMED)
    settings = Settings(listen=(f"127.0.0.1:{port}", f"unix:{path}"),
                        port=port, threads=1, config_dir=tmp_path / "conf.d",
                        data_dir=tmp_path / "var", inbox_dir=tmp_path / "inbox")
    server = Server(settings)
    assert len(server.https) == 2
    seen: dict[str, object] = {}

    def hold_then_ask() -> None:
        try:
            wait_until(lambda: all(http._signal is not None for http in server.https))
            clients = [Client(f"http://127.0.0.1:{port}", timeout=30),
                       Client(f"unix:{path}", timeout=30)]
            task = clients[0].post("/task/", {"type": "unclaimed"})
            held = [threading.Thread(target=client.get, args=(f"/task/{task['id']}?wait=3",))
                    for client in clients for _ in range(5)]
            for thread in held:
                thread.start()
            wait_until(lambda: server.dispatcher.waiting.threads >= 10)
            began = time.monotonic()
            seen["health"] = [Client(client.base_url, timeout=5).get("/health")["status"]
                              for client in clients]
            seen["took"] = time.monotonic() - began
            for thread in held:
                thread.join()
        finally:
            server.stop()

    asker = threading.Thread(target=hold_then_ask)
    asker.start()
    server.serve()  # signal handlers are set on the main thread
    asker.join()
    assert seen["health"] == ["ok", "ok"]
    assert seen["took"] < 1.0  # on one short-request thread each, beside 10 held


@pytest.fixture(autouse=True)
def _restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_open_files_are_raised_toward_the_hard_limit_for_held_connections():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files here is {hard}")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert max_connections() >= 4096 - 256
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 4096
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_tcp_connections_send_without_waiting_for_acks():
    """Connections inherit TCP_NODELAY from the listening socket (granian sets it only on
    sockets it binds itself): an answer written in two parts, as a streamed body is, would
    otherwise wait for the client's delayed ACK, 40 ms, between them."""
    server = Listener(("127.0.0.1", 0), Dispatcher(app, 4), threads=2)
    server.prepare()
    try:
        assert server.socket is not None
        assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        server.socket.listen(1)
        with socket.create_connection(server.bind_addr):
            accepted, _ = server.socket.accept()  # as granian's runtime accepts it
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.stop()
