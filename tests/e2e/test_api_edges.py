"""Submissions at the edges of HTTP: chunked bodies, reserved names, interrupted uploads."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from blanket.client import Client, ClientError
from blanket.errors import InvalidInput
from blanket.server.intake import check_file_name
from tests.conftest import wait_until

HELLO = 'command = "cat note.txt"\n'


def chunked_post(server, body: bytes, content_type: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/task/")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    for start in range(0, len(body), 7):
        piece = body[start:start + 7]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_a_chunked_json_submission_is_taken(make_server):
    server = make_server(types={"hello": HELLO})
    status, task = chunked_post(server, json.dumps({"type": "hello"}).encode(),
                                "application/json")
    assert status == 201 and task["type"] == "hello"


def test_a_chunked_multipart_submission_keeps_its_files(make_server):
    server = make_server(types={"hello": HELLO})
    boundary = "XyZ"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n'
            '{"type": "hello"}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="note.txt"\r\n'
            'Content-Type: text/plain\r\n\r\nchunked hello\r\n'
            f'--{boundary}--\r\n').encode()
    status, task = chunked_post(server, body, f"multipart/form-data; boundary={boundary}")
    assert status == 201 and task["inputs"] == ["note.txt"]
    note = server.data_dir / "tasks" / "hello" / str(task["id"]) / "note.txt"
    assert note.read_text() == "chunked hello"


@pytest.mark.parametrize("name", ["stdout.log", "stderr.log", "output.log", "task.json",
                                  ".progress", ".blanket-command"])
def test_the_runners_own_file_names_are_reserved(name):
    with pytest.raises(InvalidInput, match="reserved"):
        check_file_name(name)


def test_an_upload_named_like_a_log_is_refused_and_nothing_is_stored(make_server):
    server = make_server(types={"hello": HELLO})
    with pytest.raises(ClientError, match="reserved") as error:
        server.client.request("POST", "/task/", fields={
            "data": '{"type": "hello"}', "f": ("stdout.log", b"forged")})
    assert error.value.status == 400
    assert server.client.get("/task/?count")["count"] == 0


def test_uploads_left_staged_by_a_crash_are_cleared_at_start(make_server):
    server = make_server(types={"hello": HELLO}, start=False)
    leftover = server.data_dir / "tmp" / "abc"
    leftover.mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"x" * 10)
    server.start()
    assert not leftover.exists()


def test_long_polls_do_not_starve_other_requests(make_server):
    # Each ?wait holds an HTTP thread while it waits; with more waiters than the server
    # started threads, the pool grows and other requests are still answered at once.
    server = make_server(types={"echo": 'command = "echo hi"\n'},
                         env={"BLANKET_THREADS": "2", "BLANKET_MAX_THREADS": "64"})
    waiters = []
    for _ in range(6):  # nothing runs these tasks: each submission waits its full time
        client = Client(server.url, timeout=60)
        thread = threading.Thread(target=client.post, args=("/task/?wait=30", {"type": "echo"}),
                                  daemon=True)
        thread.start()
        waiters.append(thread)
    wait_until(lambda: server.client.get("/task/?count&state=QUEUED")["count"] == 6,
               timeout=20)
    quick = Client(server.url, timeout=5)
    for _ in range(3):
        assert quick.get("/health")["status"] in ("ok", "degraded")
    assert all(thread.is_alive() for thread in waiters)  # still waiting, each on its thread
