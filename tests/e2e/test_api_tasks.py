"""The task routes of issue 3, over real HTTP against a server subprocess."""

from __future__ import annotations

import http.client
import io
import json
import tarfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, wait_until

TYPES = {
    "echo": 'command = "echo hi"\ntags = ["unix"]\nallow_extra_environment = true\n',
    "needs": ('command = "echo {{ COUNT }}"\ntags = ["unix"]\n'
              '[environment.required]\nCOUNT = { description = "how many", type = "integer" }\n'
              '[environment.defaults]\nCOLOR = "blue"\n'),
    "gpu": 'command = "nvidia-smi"\ntags = ["gpu"]\n',
}
ERROR_KEYS = {"code", "message"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that only add tasks and read them back."""
    server = ServerProcess(tmp_path_factory.mktemp("api"))
    for name, text in TYPES.items():
        server.write_type(name, text)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh(make_server):
    """A server of its own, for tests that count or claim every task."""
    return make_server(types=TYPES)


def call(server: ServerProcess, method: str, path: str, body: bytes | str | dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, object]:
    """One request on a new connection; (status, decoded JSON or None)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        # As the local admin, so worker routes answer too (test_access tests the roles).
        sent = {"Authorization": f"Bearer {server.admin_token}", **(headers or {})}
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    return response.status, json.loads(raw) if raw else None


def assert_error(answer: tuple[int, object], status: int, *words: str) -> str:
    """The answer is a JSON error with `status`, and its message mentions each word."""
    got, body = answer
    assert got == status, body
    assert isinstance(body, dict) and set(body) == {"error"}
    # a refused list of tasks also names its wrong items
    assert set(body["error"]) in (ERROR_KEYS, ERROR_KEYS | {"items", "refused"})
    message = body["error"]["message"]
    for word in words:
        assert word in message, message
    return message


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte, so no client library cleans the file names."""
    boundary = "blanket-test-" + uuid.uuid4().hex
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
                + content + b"\r\n")
    out += f"--{boundary}--\r\n".encode()
    return out, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def count(server: ServerProcess) -> int:
    return server.client.get("/task/?count")["count"]


def leftovers(server: ServerProcess) -> list[Path]:
    """Anything uploads left behind: task directories and staging folders."""
    found = []
    for folder in (server.data_dir / "tasks", server.data_dir / "tmp"):
        if folder.is_dir():
            found += [p for p in folder.rglob("*") if p.is_file() or p.parent == folder / "tmp"]
    return found


def submit(server: ServerProcess, **fields) -> dict:
    return server.client.post("/task/", {"type": "echo", **fields})


# --- listing ---------------------------------------------------------------------------------

def test_listing_is_newest_first(fresh):
    ids = [submit(fresh)["id"] for _ in range(3)]
    assert [t["id"] for t in fresh.client.get("/task/")] == ids[::-1]


def test_listing_oldest_first_on_request(fresh):
    ids = [submit(fresh)["id"] for _ in range(3)]
    assert [t["id"] for t in fresh.client.get("/task/?order=oldest")] == ids


def test_listing_filters_by_state(fresh):
    queued, stopped = submit(fresh)["id"], submit(fresh)["id"]
    fresh.client.post(f"/task/{stopped}/stop")
    assert [t["id"] for t in fresh.client.get("/task/?state=STOPPED")] == [stopped]
    assert [t["id"] for t in fresh.client.get("/task/?state=queued")] == [queued]


def test_listing_filters_by_type(fresh):
    submit(fresh)
    gpu = fresh.client.post("/task/", {"type": "gpu"})["id"]
    assert [t["id"] for t in fresh.client.get("/task/?type=gpu")] == [gpu]


def test_listing_filters_by_tags_the_task_carries(fresh):
    submit(fresh)
    extra = submit(fresh, tags=["fast"])["id"]
    assert [t["id"] for t in fresh.client.get("/task/?tags=fast")] == [extra]
    assert [t["id"] for t in fresh.client.get("/task/?tags=unix,fast")] == [extra]
    assert fresh.client.get("/task/?tags=fas") == []


def test_listing_filters_by_time_added(fresh):
    first = submit(fresh)
    between = first["added"] + 0.001
    wait_until(lambda: time.time() > between + 0.01)
    second = submit(fresh)
    stamp = urllib.parse.quote(str(between))
    assert [t["id"] for t in fresh.client.get(f"/task/?added_after={stamp}")] == [second["id"]]
    assert [t["id"] for t in fresh.client.get(f"/task/?added_before={stamp}")] == [first["id"]]


def test_listing_takes_iso_dates(fresh):
    submit(fresh)
    assert fresh.client.get("/task/?added_after=2999-01-01T00:00:00Z") == []
    assert len(fresh.client.get("/task/?added_before=2999-01-01T00:00:00%2B01:00")) == 1


def test_listing_pages_with_limit_and_offset(fresh):
    ids = [submit(fresh)["id"] for _ in range(5)]
    assert [t["id"] for t in fresh.client.get("/task/?limit=2&offset=1")] == [ids[3], ids[2]]


def test_count_counts_what_the_filters_select(fresh):
    for _ in range(3):
        submit(fresh)
    fresh.client.post("/task/", {"type": "gpu"})
    assert fresh.client.get("/task/?count") == {"count": 4}
    assert fresh.client.get("/task/?count&type=echo") == {"count": 3}


@pytest.mark.parametrize("query", ["limit=-1", "limit=abc", "offset=-5", "limit=%C2%B2",
                                   "state=SLEEPING", "added_after=yesterday", "order=sideways"])
def test_bad_listing_parameters_are_400(shared, query):
    assert_error(call(shared, "GET", f"/task/?{query}"), 400)


def test_a_huge_limit_is_capped_not_refused(shared):
    assert call(shared, "GET", "/task/?limit=99999999999999999999")[0] == 200


# --- one task --------------------------------------------------------------------------------

def test_get_one_task(shared):
    task = submit(shared)
    assert shared.client.get(f"/task/{task['id']}") == task


def test_unknown_id_is_404(shared):
    assert_error(call(shared, "GET", "/task/987654321"), 404, "987654321")


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "%C2%B2", "9" * 40])
def test_malformed_id_is_400(shared, raw):
    assert_error(call(shared, "GET", f"/task/{raw}"), 400, "id")


# --- submission forms ------------------------------------------------------------------------

def test_post_json(shared):
    status, task = call(shared, "POST", "/task/", {"type": "needs", "environment": {"COUNT": 3}},
                        {"Content-Type": "application/json"})
    assert status == 201
    assert task["environment"] == {"COUNT": "3", "COLOR": "blue"}
    assert task["state"] == "QUEUED"


def test_post_json_without_content_type(shared):
    status, task = call(shared, "POST", "/task/", {"type": "echo"})
    assert (status, task["type"]) == (201, "echo")


def test_post_form_encoded_json_body(shared):
    body = '{"type": "echo", "environment": {"A": 1}}'
    status, task = call(shared, "POST", "/task/", body,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, task["environment"]) == (201, {"A": "1"})


def test_post_form_field_named_data(shared):
    body = urllib.parse.urlencode({"data": json.dumps({"type": "echo", "environment": {"B": 2}})})
    status, task = call(shared, "POST", "/task/", body,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, task["environment"]) == (201, {"B": "2"})


def test_multipart_data_field_with_files(shared):
    body, headers = multipart([("data", None, b'{"type": "echo"}'),
                               ("a", "input.csv", b"x,y\n1,2\n"), ("b", "notes.txt", b"hi")])
    status, task = call(shared, "POST", "/task/", body, headers)
    assert status == 201
    folder = shared.data_dir / "tasks" / "echo" / str(task["id"])
    assert sorted(task["inputs"]) == ["input.csv", "notes.txt"]
    assert (folder / "input.csv").read_bytes() == b"x,y\n1,2\n"
    assert (folder / "notes.txt").read_bytes() == b"hi"


def test_a_submission_carries_at_most_a_thousand_files(fresh):
    """Counted before Bottle parses the parts: 100,000 one-byte files took 200 MB."""
    files = [("f", f"in{n}.txt", b"x") for n in range(1001)]
    body, headers = multipart([("data", None, b'{"type": "echo"}'), *files])
    assert_error(call(fresh, "POST", "/task/", body, headers), 400, "1002 parts",
                 "at most 1000 files")
    assert count(fresh) == 0 and leftovers(fresh) == []
    twice = {"Content-Type": headers["Content-Type"].replace("boundary=", "boundary=X; boundary=")}
    assert_error(call(fresh, "POST", "/task/", body, twice), 400, "boundary more than once")
    body, headers = multipart([("data", None, b'{"type": "echo"}'), *files[:1000]])
    status, task = call(fresh, "POST", "/task/", body, headers)
    assert status == 201 and len(task["inputs"]) == 1000


def test_multipart_data_file(shared):
    body, headers = multipart([("data", "data.json", b'{"type": "echo", "tags": ["x1"]}')])
    status, task = call(shared, "POST", "/task/", body, headers)
    assert (status, task["tags"], task["inputs"]) == (201, ["unix", "x1"], [])


# --- refused submissions store nothing ------------------------------------------------------

REFUSED = [
    ({"type": "nope"}, ["unknown task type", "echo"]),
    ({"type": "needs"}, ["COUNT", "environment"]),
    ({"type": "needs", "environment": {"COUNT": "three"}}, ["COUNT", "integer"]),
    ({"type": "echo", "colour": "red"}, ["colour"]),
    ({"type": "echo", "environment": {"1BAD": "x"}}, ["1BAD"]),
    ({"type": "echo", "environment": {"A": {"nested": 1}}}, ["A"]),
    ({"type": "echo", "not_before": "tomorrow"}, ["not_before"]),
    ({"type": "echo", "priority": "high"}, ["priority"]),
    ({"environment": {}}, ["type"]),
    (["echo"], ["task 0", "object"]),  # a list is many tasks: its item 0 is not one
]


@pytest.mark.parametrize(("payload", "words"), REFUSED)
def test_invalid_submission_is_400_and_stores_nothing(fresh, payload, words):
    before = count(fresh)
    assert_error(call(fresh, "POST", "/task/", json.dumps(payload)), 400, *words)
    assert count(fresh) == before


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"type": "echo"', b"\xff\xfe{}"])
def test_malformed_body_is_400(shared, raw):
    assert_error(call(shared, "POST", "/task/", raw), 400)


def test_invalid_multipart_submission_writes_no_file(fresh):
    body, headers = multipart([("data", None, b'{"type": "needs"}'), ("f", "ok.txt", b"data")])
    assert_error(call(fresh, "POST", "/task/", body, headers), 400, "COUNT")
    assert (count(fresh), leftovers(fresh)) == (0, [])


def test_multipart_without_data_is_400(shared):
    body, headers = multipart([("f", "ok.txt", b"data")])
    assert_error(call(shared, "POST", "/task/", body, headers), 400, "data")


UNSAFE_NAMES = ["../escape.txt", "a/b.txt", "/etc/passwd", "..", ".", "a\\b.txt",
                "bell\x07.txt", "nul\x00.txt", "..hidden"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_file_name_is_400_and_nothing_is_written(fresh, name):
    body, headers = multipart([("data", None, b'{"type": "echo"}'), ("safe", "fine.txt", b"1"),
                               ("bad", name, b"evil")])
    status, answer = call(fresh, "POST", "/task/", body, headers)
    assert status == 400, answer
    assert (count(fresh), leftovers(fresh)) == (0, [])
    assert not (fresh.base / "escape.txt").exists()


def test_two_files_with_one_name_are_refused(fresh):
    body, headers = multipart([("data", None, b'{"type": "echo"}'), ("a", "same.txt", b"1"),
                               ("b", "same.txt", b"2")])
    assert_error(call(fresh, "POST", "/task/", body, headers), 400, "same name")
    assert (count(fresh), leftovers(fresh)) == (0, [])


@pytest.mark.parametrize(("parts", "words"), [
    ([("data", None, b'{"type": "echo"}'), ("data", None, b'{"type": "nope"}')],
     ["more than one part named data"]),
    ([("data", "d.json", b'{"type": "echo"}'), ("data", None, b'{"type": "echo"}')],
     ["more than one part named data"]),
    ([("data", None, b'{"type": "echo"}'), ("input", "", b"scan")],
     ["'input' carry no file name", "input=@scan.pdf"]),
    ([("data", None, b'{"type": "echo"}'), ("notes", None, b"hello")],
     ["'notes' carry no file name"]),
])
def test_a_multipart_part_that_would_be_dropped_is_refused(fresh, parts, words):
    body, headers = multipart(parts)
    assert_error(call(fresh, "POST", "/task/", body, headers), 400, *words)
    assert (count(fresh), leftovers(fresh)) == (0, [])


# --- hostile clients -------------------------------------------------------------------------

def test_huge_json_body_is_413(shared):
    body = b'{"type": "echo", "environment": {"X": "' + b"a" * (2 * 1024 * 1024) + b'"}}'
    assert_error(call(shared, "POST", "/task/", body, {"Content-Type": "application/json"}), 413)
    assert shared.healthy()


def test_deeply_nested_json_is_400(shared):
    body = "[" * 100_000 + "]" * 100_000
    assert_error(call(shared, "POST", "/task/", body, {"Content-Type": "application/json"}), 400)
    assert shared.healthy()


def test_form_field_that_is_not_utf8_is_400(shared):
    assert_error(call(shared, "POST", "/task/", b"data=%FF%FE",
                      {"Content-Type": "application/x-www-form-urlencoded"}), 400, "UTF-8")


def test_multipart_without_a_boundary_is_400(shared):
    assert_error(call(shared, "POST", "/task/", b"x", {"Content-Type": "multipart/form-data"}),
                 400, "boundary")


def test_truncated_multipart_is_400(shared):
    body, headers = multipart([("data", None, b'{"type": "echo"}')])
    assert_error(call(shared, "POST", "/task/", body[:-20], headers), 400)


def test_nan_wait_is_400(shared):
    assert_error(call(shared, "POST", "/task/?wait=nan", {"type": "echo"}), 400, "wait")


# --- errors are JSON everywhere -------------------------------------------------------------

def test_unknown_route_is_a_json_404(shared):
    assert_error(call(shared, "GET", "/no/such/route"), 404, "/no/such/route")


def test_wrong_method_is_a_json_405(shared):
    assert_error(call(shared, "PUT", "/task/"), 405, "PUT")


def test_openapi_lists_the_task_routes(shared):
    paths = shared.client.get("/openapi.json")["paths"]
    assert set(paths["/task/"]) == {"get", "post"}
    assert set(paths["/task/{task_id}"]) == {"get", "delete"}
    for action in ("stop", "rerun", "started", "heartbeat", "finished", "progress"):
        assert "post" in paths[f"/task/{{task_id}}/{action}"]


# --- stop, rerun, idempotency ----------------------------------------------------------------

def test_stopping_a_queued_task_ends_it_stopped(shared):
    task = submit(shared)
    assert shared.client.post(f"/task/{task['id']}/stop")["state"] == "STOPPED"
    assert shared.client.get(f"/task/{task['id']}")["state"] == "STOPPED"


def test_stopping_an_ended_task_is_409(shared):
    task = submit(shared)
    shared.client.post(f"/task/{task['id']}/stop")
    assert_error(call(shared, "POST", f"/task/{task['id']}/stop"), 409, "ended")


def test_rerun_makes_a_new_task_with_the_same_inputs_and_files(shared):
    body, headers = multipart([("data", None, b'{"type": "needs", "environment": {"COUNT": 7},'
                                              b' "tags": ["extra"]}'),
                               ("f", "in.bin", b"\x00\x01payload")])
    old = call(shared, "POST", "/task/", body, headers)[1]
    status, new = call(shared, "POST", f"/task/{old['id']}/rerun")
    assert status == 201 and new["id"] != old["id"]
    assert (new["type"], new["environment"], new["tags"]) == (old["type"], old["environment"],
                                                             old["tags"])
    folder = shared.data_dir / "tasks" / "needs" / str(new["id"])
    assert (folder / "in.bin").read_bytes() == b"\x00\x01payload"


def test_idempotency_key_returns_the_first_task(fresh):
    key = {"Idempotency-Key": "order-42"}
    first = call(fresh, "POST", "/task/", {"type": "echo"}, key)
    again = call(fresh, "POST", "/task/", {"type": "echo"}, key)
    assert first[0] == 201 and again == (200, first[1])
    assert count(fresh) == 1


def test_an_idempotency_key_sent_with_another_request_is_refused_not_answered(fresh):
    key = {"Idempotency-Key": "order-43"}
    status, first = call(fresh, "POST", "/task/", {"type": "echo", "environment": {"A": 1}},
                         key)
    assert status == 201
    # the same request in other words: keys in another order, other spacing, ?wait
    same = '{"environment":{"A":1},   "type":"echo"}'
    assert call(fresh, "POST", "/task/", same, key) == (200, first)
    status, refused = call(fresh, "POST", "/task/", {"type": "echo", "environment": {"A": 2}},
                           key)
    assert status == 422 and refused["error"]["code"] == "idempotency_key_reused"
    assert f"sent before with a different request (it made task {first['id']})" in \
        refused["error"]["message"]
    body, headers = multipart([("data", None, b'{"type": "echo", "environment": {"A": 1}}'),
                               ("f", "in.txt", b"1")])
    assert call(fresh, "POST", "/task/", body, {**headers, **key})[0] == 422  # a file more
    assert count(fresh) == 1 and leftovers(fresh) == []


def test_a_submission_sent_again_with_its_key_and_wait_waits_as_the_first(fresh):
    key = {"Idempotency-Key": "waits-1"}
    status, first = call(fresh, "POST", "/task/?wait=0", {"type": "echo"}, key)
    assert status == 201 and first["state"] == "QUEUED"  # no worker: it stays queued
    began = time.monotonic()
    status, again = call(fresh, "POST", "/task/?wait=1", {"type": "echo"}, key)
    assert (status, again["id"]) == (200, first["id"])
    assert time.monotonic() - began >= 0.9  # it waited, as the first would have


def test_a_multipart_submission_sent_again_with_its_key_is_the_same_request(fresh):
    key = {"Idempotency-Key": "upload-1"}
    parts = [("data", None, b'{"type": "echo"}'), ("f", "in.txt", b"12")]
    status, first = call(fresh, "POST", "/task/", *_with(multipart(parts), key))
    assert status == 201
    assert call(fresh, "POST", "/task/", *_with(multipart(parts), key)) == (200, first)
    parts[1] = ("f", "in.txt", b"123")  # the file's size changed
    assert call(fresh, "POST", "/task/", *_with(multipart(parts), key))[0] == 422
    assert count(fresh) == 1


def _with(body_and_headers: tuple[bytes, dict], extra: dict) -> tuple[bytes, dict]:
    body, headers = body_and_headers
    return body, {**headers, **extra}


# --- with a worker (simulated over HTTP with the worker routes) ----------------------------

class FakeWorker:
    """Speaks the worker protocol over HTTP, the way blanket's worker does."""

    def __init__(self, server: ServerProcess, tags: list[str]):
        self.server = server
        self.id = server.client.request("POST", "/worker/", body={
            "host": "test", "pid": 1, "tags": tags})[1]["id"]

    def claim(self, wait: float = 5) -> dict | None:
        status, body = self.server.client.request("POST", f"/worker/{self.id}/claim?wait={wait}")
        return body["task"] if status == 200 else None

    def started(self, task: dict) -> dict:
        return self.server.client.post(f"/task/{task['id']}/started",
                                       {"token": task["token"], "pid": 123})

    def finished(self, task: dict, state: str = "SUCCESS") -> dict:
        return self.server.client.post(f"/task/{task['id']}/finished",
                                       {"token": task["token"], "state": state, "exit_code": 0})


def test_claim_takes_the_oldest_of_equal_tasks(fresh):
    first = submit(fresh)["id"]
    submit(fresh)
    assert FakeWorker(fresh, ["unix"]).claim()["id"] == first


def test_claim_skips_tasks_whose_tags_the_worker_lacks(fresh):
    fresh.client.post("/task/", {"type": "gpu"})
    echo = submit(fresh)["id"]
    worker = FakeWorker(fresh, ["unix"])
    assert worker.claim()["id"] == echo
    assert worker.claim(wait=0) is None


def test_claim_waits_for_not_before(fresh):
    task = submit(fresh, not_before="+1s")
    worker = FakeWorker(fresh, ["unix"])
    assert worker.claim(wait=0) is None
    claimed = worker.claim(wait=10)
    assert claimed["id"] == task["id"] and time.time() >= task["not_before"]


def test_wait_returns_the_final_task_and_goes_ahead_of_the_queue(fresh):
    older = [submit(fresh)["id"] for _ in range(3)]
    answer: list = []
    waiter = threading.Thread(target=lambda: answer.extend(
        call(fresh, "POST", "/task/?wait=30", {"type": "echo"})))
    waiter.start()
    wait_until(lambda: count(fresh) == 4)
    worker = FakeWorker(fresh, ["unix"])
    claimed = worker.claim()
    assert claimed["id"] not in older
    worker.started(claimed)
    worker.finished(claimed)
    waiter.join(10)
    status, task = answer
    assert (status, task["id"], task["state"]) == (201, claimed["id"], "SUCCESS")


def test_a_waiting_submission_whose_task_is_removed_gets_410_at_once(fresh):
    answer: list = []
    waiter = threading.Thread(target=lambda: answer.extend(
        call(fresh, "POST", "/task/?wait=30", {"type": "echo"})))
    began = time.monotonic()
    waiter.start()
    wait_until(lambda: count(fresh) == 1)
    (task,) = fresh.client.get("/task/")
    assert call(fresh, "DELETE", f"/task/{task['id']}")[0] == 200
    waiter.join(20)
    assert_error(tuple(answer), 410, "removed")  # type: ignore[arg-type]
    assert time.monotonic() - began < 20  # not the full ?wait


def test_delete_of_a_running_task_is_409(fresh):
    task = submit(fresh)
    worker = FakeWorker(fresh, ["unix"])
    worker.started(worker.claim())
    assert_error(call(fresh, "DELETE", f"/task/{task['id']}"), 409, "force")
    assert fresh.client.get(f"/task/{task['id']}")["state"] == "RUNNING"


def test_forced_delete_of_a_running_task_removes_it(fresh):
    task = submit(fresh)
    worker = FakeWorker(fresh, ["unix"])
    claimed = worker.claim()
    worker.started(claimed)
    assert call(fresh, "DELETE", f"/task/{task['id']}?force")[0] == 200
    assert call(fresh, "GET", f"/task/{task['id']}")[0] == 404
    assert_error(call(fresh, "POST", f"/task/{task['id']}/finished",
                      {"token": claimed["token"], "state": "SUCCESS"}), 404)


def test_delete_of_a_queued_task_removes_its_directory(fresh):
    body, headers = multipart([("data", None, b'{"type": "echo"}'), ("f", "x.txt", b"1")])
    task = call(fresh, "POST", "/task/", body, headers)[1]
    assert call(fresh, "DELETE", f"/task/{task['id']}")[0] == 200
    assert leftovers(fresh) == []


def test_report_with_a_stale_token_is_409(fresh):
    submit(fresh)
    worker = FakeWorker(fresh, ["unix"])
    claimed = worker.claim()
    stale = {**claimed, "token": "0" * 32}
    assert_error(call(fresh, "POST", f"/task/{claimed['id']}/started",
                      {"token": stale["token"]}), 409, "refused")
    assert_error(call(fresh, "POST", f"/task/{claimed['id']}/finished",
                      {"token": stale["token"], "state": "SUCCESS"}), 409, "refused")
    assert worker.started(claimed)["state"] == "RUNNING"


def test_report_after_the_task_ended_is_409(fresh):
    submit(fresh)
    worker = FakeWorker(fresh, ["unix"])
    claimed = worker.claim()
    worker.finished(claimed)
    assert_error(call(fresh, "POST", f"/task/{claimed['id']}/heartbeat",
                      {"token": claimed["token"]}), 409)


def test_worker_routes_answer_404_for_unknown_ids(fresh):
    assert_error(call(fresh, "POST", "/worker/nobody/claim"), 404, "nobody")
    assert_error(call(fresh, "POST", "/task/424242/started", {"token": "t"}), 404)
    assert_error(call(fresh, "POST", "/task/424242/finished",
                      {"token": "t", "state": "SUCCESS"}), 404)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_outputs_are_taken_only_from_the_attempt_that_holds_the_task(fresh):
    task = submit(fresh)
    worker = FakeWorker(fresh, ["unix"])
    claimed = worker.claim()
    body = _tar_gz({"stdout.log": b"from afar\n"})
    path = f"/task/{task['id']}/outputs"
    headers = {"Content-Type": "application/gzip"}
    assert_error(call(fresh, "POST", path, body, headers), 409, "refused")
    assert_error(call(fresh, "POST", path, body, {**headers, "Blanket-Token": "stale"}),
                 409, "refused")
    assert_error(call(fresh, "POST", "/task/999999/outputs", body,
                      {**headers, "Blanket-Token": claimed["token"]}), 404)
    status, answer = call(fresh, "POST", path, body,
                          {**headers, "Blanket-Token": claimed["token"]})
    assert (status, answer) == (200, {"task": task["id"], "files": ["stdout.log"]})
    assert fresh.client.get(f"/task/{task['id']}/log/stdout") == "from afar\n"
    worker.finished(claimed)
    assert_error(call(fresh, "POST", path, body, {**headers, "Blanket-Token": claimed["token"]}),
                 409, "SUCCESS")


def test_unsafe_or_broken_outputs_are_refused_and_nothing_is_written(fresh):
    task = submit(fresh)
    claimed = FakeWorker(fresh, ["unix"]).claim()
    headers = {"Content-Type": "application/gzip", "Blanket-Token": claimed["token"]}
    path = f"/task/{task['id']}/outputs"
    assert_error(call(fresh, "POST", path, _tar_gz({"ok.txt": b"x", "../../escape": b"x"}),
                      headers), 400, "outside")
    assert_error(call(fresh, "POST", path, b"not a tar.gz at all", headers), 400, "tar.gz")
    assert_error(call(fresh, "POST", path, b"", headers), 400, "Content-Length")
    listing = fresh.client.get(f"/task/{task['id']}/files/")
    assert listing == []


def test_tasks_are_searched_by_text_but_never_by_a_secret_value(make_server):
    server = make_server(types={"login": 'command = "true"\ntags = ["nowhere"]\n'
                                         '[environment.required]\n'
                                         'USER = { description = "who" }\n'
                                         'PASS = { description = "its password", '
                                         'secret = true }\n'})
    shown = server.client.post("/task/", {"type": "login", "environment": {
        "USER": "ops-robot", "PASS": "s3cret-ops"}})
    assert [t["id"] for t in server.client.get("/task/?q=OPS-rob")] == [shown["id"]]
    assert server.client.get("/task/?q=s3cret") == []  # no oracle for secret values
    assert server.client.get("/task/?count&q=ops")["count"] == 1
    assert [t["id"] for t in server.client.get(f"/task/?by={shown['submitted_by']}")] == [
        shown["id"]]
    assert server.client.get("/task/?by=someone-else") == []


def test_a_listing_takes_a_time_in_the_past_as_minus_a_duration(shared):
    task = submit(shared)
    recent = [t["id"] for t in shared.client.get("/task/?added_after=-1h&limit=1000")]
    assert task["id"] in recent
    assert shared.client.get("/task/?count&added_before=-1h")["count"] == 0
    status, body = call(shared, "GET", "/task/?added_after=-soon")
    assert status == 400 and "added_after" in body["error"]["message"]


@pytest.mark.parametrize(("path", "words"), [
    ("/task/?sort=environment", "sort"),
    ("/task/?sort=id;DROP%20TABLE%20tasks", "sort"),
    ("/task/?q=" + "x" * 201, "?q="),
    ("/task/?order=sideways", "order"),
    ("/stats?window=week", "window"),
])
def test_listing_and_stats_parameters_outside_their_limits_are_400(shared, path, words):
    status, body = call(shared, "GET", path)
    assert status == 400 and words in body["error"]["message"], body


def test_the_seeds_post_tasks_type_refuses_what_is_not_an_environment(shared):
    for body in ("[1]", '"x"', '{"not a name": "v"}', json.dumps({f"V{i}": "x" for i in
                                                                  range(1001)})):
        status, answer = call(shared, "POST", "/tasks/echo/", body)
        assert status == 400, (body[:40], answer)
    assert call(shared, "POST", "/tasks/no_such_type/", "{}")[0] == 400
