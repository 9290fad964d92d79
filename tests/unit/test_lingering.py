"""Kept-alive connections linger on their HTTP thread: a client's next request, sent within
the linger, is answered there without a trip through cheroot's selector; a silent one goes
back to the selector and is still answered later; a lingering thread gives way at once to a
connection waiting for a thread."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from cheroot import wsgi

from blanket.server.listeners import LINGER, LingeringConnection


class CountingServer(wsgi.Server):
    """Counts connections handed back to the selector between requests."""

    handed_back = 0

    def put_conn(self, conn) -> None:
        self.handed_back += 1
        super().put_conn(conn)


def app(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(threading.get_ident()).encode()]


def serve(connection_class: type, threads: int) -> Iterator[CountingServer]:
    server = CountingServer(("127.0.0.1", 0), app, numthreads=threads, max=threads,
                            shutdown_timeout=1)
    server.ConnectionClass = connection_class
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(5)


@pytest.fixture
def lingering() -> Iterator[CountingServer]:
    yield from serve(LingeringConnection, threads=2)


def get(connection: http.client.HTTPConnection) -> str:
    connection.request("GET", "/")
    answer = connection.getresponse()
    assert answer.status == 200
    return answer.read().decode()


def test_quick_requests_on_one_connection_stay_on_its_thread(lingering: CountingServer):
    connection = http.client.HTTPConnection(*lingering.bind_addr[:2], timeout=10)
    threads = {get(connection) for _ in range(20)}
    assert len(threads) == 1
    assert lingering.handed_back == 0  # the selector never saw the connection between them
    connection.close()


def test_plain_cheroot_hands_each_kept_connection_back():
    # What lingering saves: without it, every request goes through the selector.
    for server in serve(wsgi.Server.ConnectionClass, threads=2):
        assert isinstance(server, CountingServer)
        connection = http.client.HTTPConnection(*server.bind_addr[:2], timeout=10)
        for _ in range(5):
            get(connection)
        assert server.handed_back >= 4
        connection.close()


def test_a_connection_silent_past_the_linger_is_still_answered(lingering: CountingServer):
    connection = http.client.HTTPConnection(*lingering.bind_addr[:2], timeout=10)
    get(connection)
    time.sleep(LINGER * 3)
    assert lingering.handed_back == 1  # back to the selector, not held by the thread
    get(connection)
    connection.close()


class LongLinger(LingeringConnection):
    next_request_wait = 30.0


def test_a_lingering_thread_gives_way_to_a_waiting_connection():
    # One HTTP thread, lingering up to 30 s on the first connection: the second connection
    # waits in the pool's queue, and the thread takes it at once instead.
    for server in serve(LongLinger, threads=1):
        assert isinstance(server, CountingServer)
        first = http.client.HTTPConnection(*server.bind_addr[:2], timeout=10)
        get(first)
        second = http.client.HTTPConnection(*server.bind_addr[:2], timeout=10)
        began = time.monotonic()
        get(second)
        assert time.monotonic() - began < 5
        get(first)  # handed back meanwhile, answered all the same
        first.close()
        second.close()


def test_a_connection_the_client_closes_is_closed_by_the_server(lingering: CountingServer):
    # cheroot's own `linger` attribute leaves a socket open on close: ours must not set it.
    sock = socket.create_connection(lingering.bind_addr[:2], timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while data := sock.recv(65536):  # a socket left open times out here
        answer += data
    assert answer.startswith(b"HTTP/1.1 200")
    sock.close()
