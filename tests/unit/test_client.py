"""The HTTP client against a small real HTTP/1.1 server: kept-alive connections are reused,
ones the server closed are not, errors come back as messages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from blanket.client import Client, ClientError, ServerUnreachable
from tests.conftest import free_port


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.server.requests.append((self.path, self.headers.get("Content-Type"), body))
        busy = self.path.rsplit("/busy", 1)
        if len(busy) == 2 and len(self.server.requests) <= int(busy[1] or 0):
            self.reply(429, {"error": {"code": "too_many_requests", "message": "held open"}})
        elif self.path.endswith("/fail"):
            self.reply(409, {"error": {"code": "conflict", "message": "no longer yours"}})
        elif self.path.endswith("/close"):
            self.reply(200, {"closing": True}, close=True)
        else:
            self.reply(200, {"echo": body, "connection": self.server.connection_of(self)})

    do_GET = do_POST

    def reply(self, status: int, data: object, close: bool = False) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        return None


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), Recorder)
        self.requests: list[tuple[str, str | None, object]] = []
        self.connections: list[int] = []
        self.handlers: list[Recorder] = []

    def connection_of(self, handler: Recorder) -> int:
        key = id(handler.connection)
        if key not in self.connections:
            self.connections.append(key)
            self.handlers.append(handler)
        return self.connections.index(key)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    httpd = RecordingServer(free_port())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(server: RecordingServer, path: str = "") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_json_requests_reuse_one_kept_alive_connection(server):
    client = Client(url(server))
    answers = [client.post("/task/", {"n": n}) for n in range(5)]
    assert [a["echo"] for a in answers] == [{"n": n} for n in range(5)]
    assert {a["connection"] for a in answers} == {0}
    assert all(ctype == "application/json" for _, ctype, _ in server.requests)


def test_a_connection_the_server_closed_is_not_reused(server):
    client = Client(url(server))
    assert client.post("/close")["closing"]
    assert client.post("/again")["connection"] == 0  # a new connection: the first one ended
    first = client.post("/next")["connection"]
    server.handlers[0].connection.shutdown(2)  # the server drops the idle connection
    assert client.post("/after")["connection"] == first + 1


def test_a_base_url_path_prefixes_every_request(server):
    client = Client(url(server, "/blanket/"))
    client.post("/task/", {})
    client.get("/worker/")
    assert [path for path, _, _ in server.requests] == ["/blanket/task/", "/blanket/worker/"]


def test_an_error_answer_raises_with_the_servers_message(server):
    client = Client(url(server))
    with pytest.raises(ClientError) as raised:
        client.post("/task/1/fail", {})
    assert raised.value.status == 409 and raised.value.message == "no longer yours"
    status, data = client.request("POST", "/task/1/fail", body={}, ok=(409,))
    assert status == 409 and data["error"]["code"] == "conflict"


def test_no_server_is_unreachable_with_advice():
    client = Client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServerUnreachable) as raised:
        client.post("/task/", {})
    assert "make run" in raised.value.message and "--server" in raised.value.message


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        Client("ftp://example.org")


def test_a_request_refused_as_busy_is_sent_again_until_there_is_room(server, monkeypatch):
    """429: too many of the caller's requests held open at once, refused before anything
    was done; the client waits a moment and sends it again (a CI fleet sharing one token
    waits for its tasks), giving up with the server's words after BUSY_RETRIES."""
    monkeypatch.setattr("blanket.client.BUSY_PAUSE", 0.01)
    client = Client(url(server), timeout=5)
    assert client.post("/busy3", {"n": 1})["echo"] == {"n": 1}
    assert len(server.requests) == 4
    assert client.request("POST", "/busy99", body={}, ok=(429,))[0] == 429  # asked to see it
    monkeypatch.setattr("blanket.client.BUSY_RETRIES", 3)
    with pytest.raises(ClientError) as refused:
        client.post("/busy99", {})
    assert refused.value.status == 429 and "held open" in refused.value.message
    assert len(server.requests) == 4 + 1 + 3


def test_a_busy_server_is_asked_again_only_within_the_requests_timeout(server, monkeypatch):
    import time
    monkeypatch.setattr("blanket.client.BUSY_PAUSE", 0.2)
    client = Client(url(server), timeout=0.5)
    began = time.monotonic()
    with pytest.raises(ClientError) as refused:
        client.post("/busy99", {})
    assert refused.value.status == 429
    assert time.monotonic() - began < 1.5 and 2 <= len(server.requests) <= 4


def test_a_streamed_answer_is_asked_again_when_busy_and_an_error_is_raised(server, monkeypatch):
    monkeypatch.setattr("blanket.client.BUSY_PAUSE", 0.01)
    client = Client(url(server), timeout=5)
    response = client.stream("/busy2")
    assert json.loads(response.read())["echo"] is None and len(server.requests) == 3
    response.release_conn()
    with pytest.raises(ClientError) as refused:
        client.stream("/fail")
    assert refused.value.status == 409 and "no longer yours" in refused.value.message
