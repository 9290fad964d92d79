"""The hand-written HTTP/1.1 client wire against a real socket that answers as scripted:
odd but valid answers are read, malformed or oversized ones refused, and a kept-alive
connection is reused only while the server keeps it."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable

import pytest

from blanket.client import Client, ServerUnreachable
from blanket.httpwire import MAX_HEADERS, BadResponse, Wire

Script = Callable[[socket.socket], None]


def serve(*scripts: Script) -> tuple[int, threading.Thread]:
    """A listener on a free port; the n-th connection is handled by the n-th script."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def run() -> None:
        with listener:
            for script in scripts:
                conn, _ = listener.accept()
                with conn:
                    script(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            wanted = int(line.split(b":")[1])
            while len(rest) < wanted:
                rest += conn.recv(65536)
    return head


def answers(*raw: bytes, byte_by_byte: bool = False) -> Script:
    def script(conn: socket.socket) -> None:
        for one in raw:
            read_request(conn)
            if byte_by_byte:
                for i in range(len(one)):
                    conn.sendall(one[i:i + 1])
            else:
                conn.sendall(one)
    return script


def wire_to(port: int) -> Wire:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return Wire(sock, f"127.0.0.1:{port}")


def test_an_answer_sent_a_byte_at_a_time_is_read_whole():
    port, _ = serve(answers(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 7\r\n\r\n{\"a\":1}", byte_by_byte=True))
    answer = wire_to(port).exchange("GET", "/x", {}, None)
    assert (answer.status, answer.body, answer.keep) == (200, b'{"a":1}', True)
    assert answer.headers["content-type"] == "application/json"


def test_a_chunked_answer_with_extensions_and_trailers_is_joined():
    port, _ = serve(answers(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"))
    assert wire_to(port).exchange("GET", "/", {}, None).body == b"hello world"


def test_a_kept_alive_connection_carries_several_requests_in_turn():
    one = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1"
    two = b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2"
    port, _ = serve(answers(one, two))
    wire = wire_to(port)
    assert wire.exchange("POST", "/a", {}, b"{}").body == b"1"
    assert wire.exchange("POST", "/b", {}, b"{}").status == 201


def test_an_interim_answer_is_skipped_and_204_has_no_body():
    port, _ = serve(answers(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"))
    answer = wire_to(port).exchange("DELETE", "/t/1", {}, None)
    assert (answer.status, answer.body, answer.keep) == (204, b"", True)


def test_an_answer_without_length_is_read_to_the_close_and_ends_the_connection():
    port, _ = serve(answers(b"HTTP/1.0 200 OK\r\n\r\nall of it"))
    answer = wire_to(port).exchange("GET", "/", {}, None)
    assert (answer.body, answer.keep) == (b"all of it", False)


def test_connection_close_ends_the_connection():
    port, _ = serve(answers(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
    assert wire_to(port).exchange("GET", "/", {}, None).keep is False


@pytest.mark.parametrize(("raw", "error"), [
    (b"", http.client.RemoteDisconnected),
    (b"SSH-2.0-OpenSSH\r\n\r\n", BadResponse),
    (b"HTTP/1.1 2000 OK\r\n\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadResponse),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", BadResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Le", BadResponse),
])
def test_a_malformed_or_truncated_answer_is_refused(raw, error):
    port, _ = serve(answers(raw))
    with pytest.raises(error):
        wire_to(port).exchange("GET", "/", {}, None)


def test_the_request_carries_host_length_and_the_callers_headers():
    seen: list[bytes] = []

    def script(conn: socket.socket) -> None:
        seen.append(read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    port, thread = serve(script)
    wire_to(port).exchange("POST", "/task/", {"Authorization": "Bearer t"}, b'{"a": 1}')
    thread.join(5)
    head = seen[0].decode()
    assert head.startswith("POST /task/ HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}" in head and "Authorization: Bearer t" in head
    assert "Content-Length: 8" in head


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_the_client_opens_a_new_connection_when_the_server_closed_the_kept_one():
    closed, served = threading.Event(), threading.Event()

    def first(conn: socket.socket) -> None:
        answers(OK)(conn)
        conn.close()  # as a server whose keep-alive timed out
        closed.set()

    def second(conn: socket.socket) -> None:
        answers(OK)(conn)
        served.set()

    port, _ = serve(first, second)
    client = Client(f"http://127.0.0.1:{port}", timeout=5)
    assert client.get("/a") == {}
    assert closed.wait(5)
    assert client.get("/b") == {}  # not sent on the closed connection
    assert served.wait(5)


def test_a_read_whose_kept_connection_closes_as_it_is_sent_goes_once_more():
    def first(conn: socket.socket) -> None:
        answers(OK)(conn)
        read_request(conn)  # takes the next request, then drops it unanswered
        conn.shutdown(socket.SHUT_RDWR)

    port, _ = serve(first, answers(OK))
    client = Client(f"http://127.0.0.1:{port}", timeout=5)
    assert client.get("/a") == {}
    assert client.get("/b") == {}


def test_a_post_whose_connection_closes_unanswered_is_not_sent_twice():
    posts: list[bytes] = []

    def first(conn: socket.socket) -> None:
        answers(OK)(conn)
        posts.append(read_request(conn))
        conn.shutdown(socket.SHUT_RDWR)

    port, _ = serve(first, answers(OK))
    client = Client(f"http://127.0.0.1:{port}", timeout=5)
    assert client.get("/a") == {}
    with pytest.raises(ServerUnreachable):
        client.post("/task/", {"type": "x"})
    assert len(posts) == 1


def test_the_client_says_the_server_is_unreachable_when_it_answers_garbage():
    port, _ = serve(answers(b"garbage\r\n\r\n"))
    with pytest.raises(ServerUnreachable):
        Client(f"http://127.0.0.1:{port}", timeout=5).get("/x")
