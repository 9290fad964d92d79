"""Request bodies are checked against the schemas /openapi.json publishes: what the document
forbids is refused with a 400 naming the field, never a 500, and nothing is stored."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.conftest import ServerProcess

ECHO = 'command = "echo hi"\nallow_extra_environment = true\n'


def post(server: ServerProcess, path: str, raw: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=raw, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {server.admin_token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("schemas"))
    server.write_type("echo", ECHO)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/task/", b'{"type": "echo", "not_before": NaN}', "NaN"),
    ("/task/", b'{"type": "echo", "not_before": Infinity}', "Infinity"),
    ("/task/", b'{"type": "echo", "not_before": 1e400}', "out of range"),
    ("/task/", b'{"type": "echo", "priority": 10001}', "priority"),
    ("/task/", b'{"type": "echo", "colour": "red"}', "unknown field(s) colour"),
    ("/task/", b'{"type": "echo", "environment": {"A": [1]}}', "environment.A"),
    ("/task/", b'{"type": ""}', "type"),
    ("/task/", b'[1, 2]', "must be object"),
    ("/task/1/progress", b'{"progress": NaN}', "NaN"),
    ("/task/1/progress", b'{"progress": 1e400}', "out of range"),
    ("/task/1/progress", b'{"progress": 5, "token": [1]}', "token"),
    ("/task/1/started", b'{"token": "t", "pid": [1]}', "pid"),
    ("/task/1/started", b'{"token": "t", "directory": ["x"]}', "directory"),
    ("/task/1/finished", b'{"token": "t", "state": "DONE"}', "state"),
    ("/task/1/finished", b'{"token": "t", "state": "SUCCESS", "exit_code": 99999999999}',
     "exit_code"),
    ("/task/1/release", b'{}', "token"),
    ("/worker/", b'{"host": "h", "pid": 12345678901234567890123}', "pid"),
    ("/worker/", b'{"host": "h", "pid": 1, "tags": ["a b"]}', "tags"),
    ("/token/", b'{"name": "x", "role": "root"}', "role"),
])
def test_a_body_the_document_forbids_is_a_400_naming_what_to_fix(server, path, raw, field):
    status, body = post(server, path, raw)
    assert status == 400, body
    assert field in body["error"]["message"]
    assert server.client.get("/task/?count")["count"] == 0


def test_the_published_schema_is_the_one_enforced(server):
    document = server.client.get("/openapi.json")
    one, many = document["paths"]["/task/"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["oneOf"]  # a task, or a list of them
    assert many["items"] == one
    top = one["properties"]["priority"]["maximum"]
    assert post(server, "/task/", json.dumps({"type": "echo", "priority": top}).encode())[0] == 201
    assert post(server, "/task/", json.dumps({"type": "echo",
                                             "priority": top + 1}).encode())[0] == 400
