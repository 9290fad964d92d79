"""Input a client controls never makes a real server fail (5xx): bodies with NaN, Infinity
or numbers out of range, fields of the wrong type, lone surrogates, non-ASCII headers; and
random JSON to every worker route, to POST /task/ and to /task/ID/progress."""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blanket.client import Client
from tests.conftest import ServerProcess, wait_until

ECHO = 'command = "echo hi"\n'


@dataclass
class Target:
    """A server with a registered worker holding a claimed task (and its attempt token)."""

    server: ServerProcess
    worker: str
    task: int
    token: str

    def send(self, method: str, path: str, body: bytes | str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
            sent = {"Authorization": f"Bearer {self.server.admin_token}",
                    "Content-Type": "application/json", "Content-Length": str(len(raw or b"")),
                    **(headers or {})}
            for name, value in sent.items():
                conn.putheader(name, value.encode("latin-1"))
            conn.endheaders(raw)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture
def target(make_server) -> Iterator[Target]:
    server = make_server(types={"echo": ECHO})
    worker = server.client.post("/worker/", {"host": "fuzz", "pid": 1, "id": "fuzz"})["id"]
    task = server.client.post("/task/", {"type": "echo"})["id"]
    claim = server.client.post(f"/worker/{worker}/claim?wait=5")
    yield Target(server, worker, task, claim["task"]["token"])


def hostile_cases(t: Target) -> list[tuple[str, str, str, dict[str, str]]]:
    """(method, path, body, headers) of each attack in issue 11, point 4, and its kin."""
    task, token = f"/task/{t.task}", json.dumps(t.token)
    big = "1" + "0" * 22
    cases = [
        ("POST", "/task/", '{"type": "echo", "not_before": Infinity}', {}),
        ("POST", "/task/", '{"type": "echo", "not_before": -Infinity}', {}),
        ("POST", "/task/", '{"type": "echo", "not_before": NaN}', {}),
        ("POST", "/task/", '{"type": "echo", "not_before": 1e300}', {}),
        ("POST", "/task/", '{"type": "echo", "not_before": "+99999999999999d"}', {}),
        ("POST", "/task/", f'{{"type": "echo", "priority": {big}}}', {}),
        ("POST", "/task/", '{"type": "echo"}', {"Idempotency-Key": "\xe9\xff"}),
        ("POST", "/task/", '{"type": "echo"}', {"Idempotency-Key": "k" * 1000}),
        ("POST", "/task/", '{"type": "echo"}', {"Authorization": "Basic \xe9\xe9"}),
        ("GET", "/task/?limit=" + "9" * 5000, "", {}),
        ("POST", "/worker/", f'{{"host": "h", "pid": {big}}}', {}),
        ("POST", "/worker/", '{"host": "h", "pid": 1, "tags": [null]}', {}),
        ("POST", "/worker/", '[]', {}),
        ("POST", f"{task}/started", f'{{"token": {token}, "pid": [1]}}', {}),
        ("POST", f"{task}/started", f'{{"token": {token}, "pid": {big}}}', {}),
        ("POST", f"{task}/started", f'{{"token": {token}, "directory": [1]}}', {}),
        ("POST", f"{task}/started", '[1, 2]', {}),
        ("POST", f"{task}/heartbeat?wait=0", '{"token": {"a": 1}}', {}),
        ("POST", f"{task}/heartbeat?wait=0", '42', {}),
        ("POST", f"{task}/release", '{"token": "\\ud800"}', {}),
        ("POST", f"{task}/release", '{"token": ["x"]}', {}),
        ("POST", f"{task}/finished", f'{{"token": {token}, "state": ["SUCCESS"]}}', {}),
        ("POST", f"{task}/finished", f'{{"token": {token}, "state": "FAILED", '
                                     f'"exit_code": {big}}}', {}),
        ("POST", f"{task}/finished", f'{{"token": {token}, "state": "FAILED", '
                                     '"error": {"a": 1}}', {}),
        ("POST", f"{task}/finished", f'{{"token": {token}, "state": "FAILED", '
                                     '"started": {"at": "x", "pid": [1]}}', {}),
        ("POST", f"{task}/finished", f'{{"token": {token}, "state": "FAILED", '
                                     f'"running": {big}}}', {}),
        ("POST", f"{task}/progress", '{"progress": NaN}', {}),
        ("POST", f"{task}/progress", '{"progress": Infinity}', {}),
        ("POST", f"{task}/progress", '{"progress": 1e400}', {}),
        ("POST", f"{task}/progress", '{"progress": 5, "token": [1]}', {}),
        ("POST", f"{task}/progress", '{"progress": 5, "message": ["m"]}', {}),
        ("POST", f"{task}/progress", '"progress"', {}),
    ]
    return cases


def test_each_hostile_body_and_header_is_refused_with_a_4xx(target: Target):
    answers = [(case, *target.send(*case)) for case in hostile_cases(target)]
    failed = [(case, status, body[:200]) for case, status, body in answers
              if not 400 <= status < 500]
    assert not failed
    for _case, _status, body in answers:
        assert json.loads(body)["error"]["message"]  # says what to fix


def test_a_path_with_bytes_that_are_not_utf8_is_refused_not_read_without_them(target: Target):
    """Bottle drops the bytes of a path it cannot decode as UTF-8: `DELETE /task/%FF12`
    removed task 12. Such a path is refused, and the task stays."""
    task = target.server.client.post("/task/", {"type": "echo"})["id"]
    for method, path in (("DELETE", f"/task/%ff{task}"), ("GET", f"/task/{task}%C3"),
                         ("GET", "/worker/%ff")):
        status, body = target.send(method, path)
        assert status == 400 and b"UTF-8" in body, (method, path, status, body)
    assert target.server.client.get(f"/task/{task}")["state"] == "QUEUED"
    status, _ = target.send("GET", f"/task/{task}%C3%A9")  # UTF-8 goes on to the route
    assert status == 400  # (not a task id)


def test_a_field_of_two_forms_says_what_is_wrong_with_the_form_sent(target: Target):
    """`tags` is a list or a string: a bad tag in a list is named, not 'must be valid
    exactly by one definition'."""
    status, body = target.send("POST", "/task/", '{"type": "echo", "tags": ["ok", "a b"]}')
    message = json.loads(body)["error"]["message"]
    assert status == 400 and message.startswith("tags: item 1 must match pattern"), message
    status, body = target.send("POST", "/task/", '{"type": "echo", "not_before": -5}')
    message = json.loads(body)["error"]["message"]
    assert status == 400 and "bigger than or equal to 0" in message, message


def test_nan_not_before_creates_no_task(target: Target):
    before = target.server.client.get("/task/?count")["count"]
    status, _ = target.send("POST", "/task/", '{"type": "echo", "not_before": NaN}')
    assert status == 400
    assert target.server.client.get("/task/?count")["count"] == before


def test_the_attempt_still_works_after_the_attacks(target: Target):
    for case in hostile_cases(target):
        target.send(*case)
    token = json.dumps(target.token)
    status, body = target.send("POST", f"/task/{target.task}/finished",
                               f'{{"token": {token}, "state": "SUCCESS", "exit_code": 0}}')
    assert status == 200, body
    assert json.loads(body)["state"] == "SUCCESS"


KEYS = ["token", "pid", "directory", "state", "exit_code", "error", "handback", "started",
        "claim_next", "running", "progress", "message", "type", "environment", "tags",
        "not_before", "priority", "host", "id", "at"]
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
                     max_size=2)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    SURROGATES, st.sampled_from(["SUCCESS", "FAILED", "echo", "+2h", "fuzz"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=8)
BODIES = st.one_of(VALUES, st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
ROUTES = ["/worker/", "/worker/{worker}/claim?wait=0", "/task/{task}/started",
          "/task/{task}/heartbeat?wait=0", "/task/{task}/finished", "/task/{task}/release",
          "/task/", "/task/{task}/progress"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_random_json_to_worker_and_task_routes_never_fails_the_server(target: Target,
                                                                      route: str, body):
    path = route.format(worker=target.worker, task=target.task)
    status, answer = target.send("POST", path, json.dumps(body, allow_nan=True))
    assert status < 500, (path, body, answer[:300])


def outside_address() -> str:
    """This machine's address on its network (not loopback), as a remote client reaches it."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        address = probe.getsockname()[0]
    except OSError:
        address = ""
    finally:
        probe.close()
    if not address or address.startswith("127."):
        message = "this test needs a network address other than loopback"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return address


def slow_post(address: str, port: int, path: str = "/login", token: str = "") -> socket.socket:
    """A POST whose body's first byte is sent and nothing more (/login reads the body of
    anyone: it is how one signs in)."""
    connection = socket.create_connection((address, port))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    connection.sendall(f"POST {path} HTTP/1.1\r\nHost: {address}\r\n{auth}"
                       "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
                       .encode())
    return connection


def refused_at_once(held: list[socket.socket], count: int, words: bytes = b"") -> None:
    """`count` of the connections were refused at once (429, saying `words`), while the
    others wait for their bodies."""
    answered = wait_until(lambda: len(select.select(held, [], [], 0.1)[0]) >= count and
                          select.select(held, [], [], 0.1)[0], timeout=10)
    assert len(answered) == count
    refusals = [c.recv(4096) for c in answered]
    assert all(r.startswith(b"HTTP/1.1 429 ") and words in r for r in refusals), refusals[0]


def test_slow_bodies_from_one_address_cannot_hold_every_thread(make_server):
    """A request's body is read on one of the server's threads: 100 connections that each
    send a body's first byte and nothing more would hold them all, and the server would
    answer no one (workers included). Without credentials, one address gets 8 at most;
    the others are refused at once, and the server goes on answering."""
    address = outside_address()
    server = make_server(types={"echo": ECHO}, extra_args=("--host", "0.0.0.0"), env={
        "BLANKET_ANONYMOUS": "none", "BLANKET_INSECURE": "true",
        "BLANKET_SERVER_NAMES": address})
    held = []
    try:
        held += [slow_post(address, server.port) for _ in range(100)]
        remote = Client(f"http://{address}:{server.port}", timeout=10)
        assert remote.request("GET", "/health", ok=(503,))[0] == 200
        # a caller with a token is not counted: a worker's reports still get through
        worker = Client(f"http://{address}:{server.port}", timeout=10,
                        token=server.token("w", "worker"))
        assert worker.post("/worker/", {"tags": [], "host": "h", "pid": 1})["id"]
        # the 92 refused got their answer at once; the 8 admitted still wait for their bodies
        refused_at_once(held, 92)
    finally:
        for connection in held:
            connection.close()


def test_slow_bodies_from_every_address_together_leave_threads_for_tokens(make_server):
    """Many addresses, each under its bound of 8, could still hold every thread together:
    without credentials, all addresses together get a quarter of the threads that answer
    short requests (4 of 16 here), and the others are refused at once. One address stands in
    for many: its own bound (8) is above the server's (4)."""
    address = outside_address()
    server = make_server(types={"echo": ECHO}, extra_args=("--host", "0.0.0.0"), env={
        "BLANKET_ANONYMOUS": "none", "BLANKET_INSECURE": "true", "BLANKET_THREADS": "16",
        "BLANKET_SERVER_NAMES": address})
    held = []
    try:
        held += [slow_post(address, server.port) for _ in range(20)]
        refused_at_once(held, 16, b"without a token")
        worker = Client(f"http://{address}:{server.port}", timeout=10,
                        token=server.token("w", "worker"))
        assert worker.post("/worker/", {"tags": [], "host": "h", "pid": 1})["id"]
        assert Client(f"http://{address}:{server.port}", timeout=10).request(
            "GET", "/health", ok=(503,))[0] == 200
    finally:
        for connection in held:
            connection.close()


def _raw_get(address: str, port: int, path: str, token: str) -> socket.socket:
    """A GET sent on a connection of its own, whose answer is not read."""
    connection = socket.create_connection((address, port))
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {address}\r\n"
                       f"Authorization: Bearer {token}\r\n\r\n".encode())
    return connection


def _answer_of(connection: socket.socket) -> bytes:
    connection.settimeout(10)
    return connection.recv(65536)


def test_one_token_holds_at_most_64_long_polls_and_unread_downloads(make_server):
    """Long polls, followed logs and downloads a client does not read each hold a thread of
    the server's pools: one token (or one address without a token) may have 64 held at
    once, so it cannot take every thread from the others; workers are not counted."""
    address = outside_address()
    server = make_server(types={"parked": 'command = "true"\ntags = ["nowhere"]\n'},
                         extra_args=("--host", "0.0.0.0"), env={
                             "BLANKET_ANONYMOUS": "none", "BLANKET_INSECURE": "true",
                             "BLANKET_SERVER_NAMES": address})
    status, task = server.client.request("POST", "/task/", fields={
        "data": '{"type": "parked"}', "f": ("big.bin", os.urandom(8 << 20))})
    assert status == 201
    viewer, other = server.token("alice", "viewer"), server.token("bob", "viewer")
    remote = Client(f"http://{address}:{server.port}", timeout=10, token=viewer)
    polls = [_raw_get(address, server.port, f"/task/{task['id']}?wait=4", viewer)
             for _ in range(70)]  # on a task that will not end: 64 are held, 6 refused
    try:
        # the 6 past the share are refused at once: then every one of them was counted
        wait_until(lambda: len(select.select(polls, [], [], 0.1)[0]) >= 6, timeout=10)
        status, refused = remote.request("GET", f"/task/{task['id']}?wait=1", ok=(429,))
        assert status == 429
        assert "'alice' already has 64 requests held open" in refused["error"]["message"]
        assert remote.get(f"/task/{task['id']}")["id"] == task["id"]  # short ones answer
        someone_else = Client(f"http://{address}:{server.port}", timeout=10, token=other)
        assert someone_else.get(f"/task/{task['id']}?wait=0.1")["state"] == "QUEUED"
        worker = Client(f"http://{address}:{server.port}", timeout=10,
                        token=server.token("w", "worker"))
        slot = worker.post("/worker/", {"tags": [], "host": "h", "pid": 1})["id"]
        assert worker.request("POST", f"/worker/{slot}/claim?wait=0.1", body={})[0] == 204
        # the long polls end with their waits, and their share with them
        wait_until(lambda: not _refused(remote, task["id"]), timeout=15)
        answers = [_answer_of(c)[:13] for c in polls]
        assert answers.count(b"HTTP/1.1 200 ") == 64 and answers.count(b"HTTP/1.1 429 ") == 6
    finally:
        for connection in polls:
            connection.close()
    # downloads nobody reads are held too, each until its client goes
    downloads = [_raw_get(address, server.port, f"/task/{task['id']}/files/big.bin", viewer)
                 for _ in range(80)]
    try:
        answers = [_answer_of(c)[:13] for c in downloads]
        assert answers.count(b"HTTP/1.1 429 ") >= 80 - 64 and b"HTTP/1.1 200 " in answers
    finally:
        for connection in downloads:
            connection.close()
    wait_until(lambda: not _refused(remote, task["id"]), timeout=15)


def _refused(client: Client, task_id: int) -> bool:
    return client.request("GET", f"/task/{task_id}?wait=0.01", ok=(429,))[0] == 429


def test_slow_bodies_of_one_token_cannot_hold_every_thread(make_server):
    """A token holder's bodies were not counted: 256 sent slowly held every thread that
    answers short requests. One token may have 32 in progress; the others get 429 at once,
    and other tokens and workers go on."""
    address = outside_address()
    server = make_server(types={"echo": ECHO}, extra_args=("--host", "0.0.0.0"), env={
        "BLANKET_ANONYMOUS": "none", "BLANKET_INSECURE": "true", "BLANKET_THREADS": "64",
        "BLANKET_SERVER_NAMES": address})
    token = server.token("alice", "submitter")
    held = []
    try:
        held += [slow_post(address, server.port, "/task/", token) for _ in range(40)]
        refused_at_once(held, 8, b"already has 32 requests")
        other = Client(f"http://{address}:{server.port}", timeout=10,
                       token=server.token("bob", "submitter"))
        assert other.post("/task/", {"type": "echo"})["state"] == "QUEUED"
        worker = Client(f"http://{address}:{server.port}", timeout=10,
                        token=server.token("w", "worker"))
        assert worker.post("/worker/", {"tags": [], "host": "h", "pid": 1})["id"]
    finally:
        for connection in held:
            connection.close()
