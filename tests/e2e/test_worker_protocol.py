"""The worker protocol's round trips, driven by hand over HTTP."""

from __future__ import annotations

import os

ECHO = 'command = "echo hi"\n'


def register(server, worker_id: str = "hand") -> str:
    return server.client.post("/worker/", {"id": worker_id, "tags": [], "host": "here",
                                           "pid": os.getpid()})["id"]


def test_a_claim_binds_the_version_and_shows_the_worker_busy(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    task = server.client.post("/task/", {"type": "echo"})
    claim = server.client.post(f"/worker/{worker}/claim")
    version = server.client.get("/task_type/echo")["version"]
    assert claim["task"]["id"] == task["id"] and claim["task"]["version"] == version
    assert claim["bundle"] == f"/version/{version}.tar.gz"
    shown = server.client.get(f"/worker/{worker}")
    assert (shown["state"], shown["task"]) == ("busy", task["id"])


def test_an_end_report_can_carry_the_start_and_take_the_next_task(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    first = server.client.post("/task/", {"type": "echo"})
    second = server.client.post("/task/", {"type": "echo"})
    claim = server.client.post(f"/worker/{worker}/claim")
    token = claim["task"]["token"]
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": token, "state": "SUCCESS", "exit_code": 0, "claim_next": True,
        "started": {"pid": 123, "directory": "/somewhere/1", "at": claim["task"]["claimed"]}})
    ended = answer["task"]
    assert (ended["state"], ended["pid"], ended["directory"]) == ("SUCCESS", 123, "/somewhere/1")
    assert ended["started"] == claim["task"]["claimed"]
    assert answer["next"]["task"]["id"] == second["id"]
    assert answer["next"]["task"]["state"] == "CLAIMED" and answer["next"]["task"]["token"]


def test_an_end_report_asking_for_more_on_an_empty_queue_gets_none(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    task = server.client.post("/task/", {"type": "echo"})
    token = server.client.post(f"/worker/{worker}/claim")["task"]["token"]
    answer = server.client.post(f"/task/{task['id']}/finished", {
        "token": token, "state": "FAILED", "exit_code": 2, "claim_next": True})
    assert answer["task"]["state"] == "FAILED" and answer["next"] is None
