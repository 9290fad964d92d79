"""The worker protocol's round trips, driven by hand over HTTP."""

from __future__ import annotations

import os

import pytest

from blanket.client import Client, ClientError
from tests.conftest import wait_until

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


def claim_first(server, worker: str, count: int = 1) -> tuple[list[dict], dict]:
    """Queue `count` echo tasks, claim the first by hand: (tasks, its claim)."""
    tasks = [server.client.post("/task/", {"type": "echo"}) for _ in range(count)]
    return tasks, server.client.post(f"/worker/{worker}/claim")


def test_an_end_report_can_take_the_next_task_and_a_reserve(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (first, second, third, _), claim = claim_first(server, worker, 4)
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0, "claim_next": 2})
    assert answer["next"]["task"]["id"] == second["id"]
    assert answer["reserve"]["task"]["id"] == third["id"]
    assert answer["reserve"]["task"]["token"] and answer["reserve"]["type"]["name"] == "echo"
    # the worker shows the task it runs next, not the one it keeps in reserve
    assert server.client.get(f"/worker/{worker}")["task"] == second["id"]


def test_a_worker_running_its_reserve_says_so_and_takes_the_next_reserve(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (first, second, third), claim = claim_first(server, worker, 3)
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0,
        "claim_next": 1, "running": 12345})
    assert answer["next"] is None and answer["reserve"]["task"]["id"] == second["id"]
    assert server.client.get(f"/worker/{worker}")["task"] == 12345
    assert server.client.get(f"/task/{third['id']}")["state"] == "QUEUED"


def test_no_reserve_is_taken_while_an_idle_worker_could_run_it(make_server):
    server = make_server(types={"echo": ECHO})
    busy = register(server, "busy")
    idle = register(server, "idle")  # registered and not busy: waiting for work
    (first, second, third), claim = claim_first(server, busy, 3)
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0, "claim_next": 2})
    assert answer["next"]["task"]["id"] == second["id"] and answer["reserve"] is None
    assert server.client.post(f"/worker/{idle}/claim")["task"]["id"] == third["id"]


def test_a_released_reserve_is_queued_again_and_a_started_task_is_not(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (first, second), claim = claim_first(server, worker, 2)
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0, "claim_next": 2})
    reserve = answer["next"]["task"]
    back = server.client.post(f"/task/{reserve['id']}/release", {"token": reserve["token"]})
    assert (back["state"], back["worker"], back["attempt"]) == ("QUEUED", None, 0)
    again = server.client.post(f"/worker/{worker}/claim")["task"]
    assert again["id"] == second["id"] and again["attempt"] == 1
    server.client.post(f"/task/{again['id']}/started", {"token": again["token"], "pid": 1})
    status, refused = server.client.request(
        "POST", f"/task/{again['id']}/release", body={"token": again["token"]}, ok=(409,))
    assert status == 409 and "RUNNING" in refused["error"]["message"]
    assert server.client.get(f"/task/{again['id']}")["state"] == "RUNNING"


def test_a_reserve_of_a_worker_that_died_is_queued_again_with_its_attempt_given_back(
        make_server):
    # retries = 0: the task the worker ran (it may have started) fails, but the reserve it
    # only held is queued again in its old place, its attempt not counted.
    server = make_server(types={"echo": ECHO},
                         env={"BLANKET_LOST_AFTER": "1", "BLANKET_HEARTBEAT_INTERVAL": "0.2"})
    worker = register(server)
    (first, second, third), claim = claim_first(server, worker, 3)
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0, "claim_next": 2})
    assert (answer["next"]["task"]["id"], answer["reserve"]["task"]["id"]) == (
        second["id"], third["id"])
    # The worker falls silent (killed hard): the reaper ends both attempts.
    wait_until(lambda: server.client.get(f"/task/{third['id']}")["state"] == "QUEUED",
               timeout=20)
    back = server.client.get(f"/task/{third['id']}")
    assert (back["attempt"], back["attempts"][-1]["state"]) == (0, "LOST")
    assert back["attempts"][-1]["refunded"] is True
    assert "held the task in reserve" in back["attempts"][-1]["error"]
    lost = server.client.get(f"/task/{second['id']}?wait=10")
    assert lost["state"] == "FAILED" and "its worker died 1 time" in lost["error"]
    other = register(server, "other")
    again = server.client.post(f"/worker/{other}/claim")["task"]
    assert (again["id"], again["attempt"]) == (third["id"], 1)


def test_end_reports_with_a_bad_claim_or_running_are_refused(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (task,), claim = claim_first(server, worker)
    for body, word in (({"claim_next": 3}, "claim_next"), ({"claim_next": "2"}, "claim_next"),
                       ({"running": "7"}, "running"), ({"running": True}, "running")):
        status, answer = server.client.request("POST", f"/task/{task['id']}/finished", body={
            "token": claim["task"]["token"], "state": "SUCCESS", **body}, ok=(400,))
        assert status == 400 and word in answer["error"]["message"]
    assert server.client.get(f"/task/{task['id']}")["state"] == "CLAIMED"  # nothing changed


def test_a_paused_worker_running_its_reserve_is_shown_running_it(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (first, second), claim = claim_first(server, worker, 2)
    server.client.post(f"/worker/{worker}/pause")
    answer = server.client.post(f"/task/{first['id']}/finished", {
        "token": claim["task"]["token"], "state": "SUCCESS", "exit_code": 0,
        "claim_next": 1, "running": 777})
    assert answer["next"] is None and answer["reserve"] is None  # paused: nothing new
    shown = server.client.get(f"/worker/{worker}")
    assert (shown["state"], shown["task"]) == ("paused", 777)
    assert server.client.get(f"/task/{second['id']}")["state"] == "QUEUED"


def test_a_running_tasks_log_is_appended_from_its_offset_and_resends_are_skipped(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    (task,), claim = claim_first(server, worker)
    token = {"Blanket-Token": claim["task"]["token"]}
    path = f"/task/{task['id']}/log/stdout"

    def send(offset: int, data: bytes) -> dict:
        return server.client.upload(f"{path}?offset={offset}", data, token,
                                    content_type="application/octet-stream")

    assert send(0, b"one\n") == {"size": 4}
    assert send(0, b"one\ntwo\n") == {"size": 8}  # what it had is skipped
    assert send(8, b"three\n") == {"size": 14}
    assert server.client.get(path) == "one\ntwo\nthree\n"
    with pytest.raises(ClientError) as gap:  # beyond the end: send again from 0
        send(20, b"lost\n")
    assert gap.value.status == 409 and "from offset 0" in gap.value.message
    for bad_path, headers, status in (
            (f"{path}?offset=x", token, 400),
            (f"/task/{task['id']}/log/secrets?offset=0", token, 404),
            (f"{path}?offset=14", {"Blanket-Token": "not-the-token"}, 409)):
        with pytest.raises(ClientError) as refused:
            server.client.upload(bad_path, b"more\n", headers,
                                 content_type="application/octet-stream")
        assert refused.value.status == status
    assert server.client.get(path) == "one\ntwo\nthree\n"  # nothing refused was written


# a worker process's slots: their end reports in one exchange

def two_slots_holding(server, count: int) -> tuple[list[str], list[dict], list[dict]]:
    """Two slots of a worker process, `count` echo tasks queued, each slot holding one of
    them: (the slots, the tasks, their claimed tasks)."""
    slots = [register(server, f"proc-{n}") for n in (1, 2)]
    tasks = [server.client.post("/task/", {"type": "echo"}) for _ in range(count)]
    claims = [server.client.post(f"/worker/{slot}/claim")["task"] for slot in slots]
    return slots, tasks, claims


def test_an_exchange_ends_each_slots_task_and_brings_each_its_next(make_server):
    server = make_server(types={"echo": ECHO})
    slots, (first, second, third, fourth), claims = two_slots_holding(server, 4)
    assert [c["id"] for c in claims] == [first["id"], second["id"]]
    answer = server.client.post("/exchange", {"reports": [
        {"task": claims[0]["id"], "token": claims[0]["token"], "state": "SUCCESS",
         "exit_code": 0, "claim_next": 1, "worker": slots[0]},
        {"task": claims[1]["id"], "token": claims[1]["token"], "state": "FAILED",
         "exit_code": 3, "error": "boom", "claim_next": 1, "worker": slots[1],
         "started": {"pid": 42, "at": claims[1]["claimed"]}},
    ]})
    ended = answer["ended"]
    assert [(e["task"], e["state"], e["refused"]) for e in ended] == [
        (first["id"], "SUCCESS", None), (second["id"], "FAILED", None)]
    assert [e["next"]["task"]["id"] for e in ended] == [third["id"], fourth["id"]]
    assert [e["next"]["task"]["worker"] for e in ended] == slots
    failed = server.client.get(f"/task/{second['id']}")
    assert (failed["exit_code"], failed["error"], failed["pid"]) == (3, "boom", 42)


def test_slots_ending_together_each_take_their_next_task_and_a_reserve(make_server):
    server = make_server(types={"echo": ECHO})
    slots, tasks, claims = two_slots_holding(server, 6)
    answer = server.client.post("/exchange", {"reports": [
        {"task": claim["id"], "token": claim["token"], "state": "SUCCESS", "exit_code": 0,
         "claim_next": 2, "worker": slot} for claim, slot in zip(claims, slots, strict=True)]})
    taken = [(e["next"]["task"]["id"], e["reserve"]["task"]["id"]) for e in answer["ended"]]
    assert taken == [(tasks[2]["id"], tasks[3]["id"]), (tasks[4]["id"], tasks[5]["id"])]
    assert [server.client.get(f"/worker/{slot}")["task"] for slot in slots] == [
        tasks[2]["id"], tasks[4]["id"]]


def test_a_refused_report_in_an_exchange_leaves_the_others_to_end(make_server):
    server = make_server(types={"echo": ECHO})
    slots, tasks, claims = two_slots_holding(server, 2)
    answer = server.client.post("/exchange", {"reports": [
        {"task": claims[0]["id"], "token": "an-old-attempt", "state": "SUCCESS",
         "worker": slots[0]},
        {"task": claims[1]["id"], "token": claims[1]["token"], "state": "SUCCESS",
         "worker": slots[1]},
    ]})
    refused, ended = answer["ended"]
    assert refused["status"] == 409 and "no longer held" in refused["refused"]
    assert refused["state"] is None and ended["state"] == "SUCCESS"
    assert server.client.get(f"/task/{tasks[0]['id']}")["state"] == "CLAIMED"


def test_an_exchange_may_not_end_or_claim_for_another_tokens_workers(make_server):
    server = make_server(types={"echo": ECHO})
    mine = server.client.__class__(server.url, token=server.token("w-mine", "worker"))
    theirs = server.client.__class__(server.url, token=server.token("w-theirs", "worker"))
    for client, name in ((mine, "mine"), (theirs, "theirs")):
        client.post("/worker/", {"id": name, "tags": [], "host": "h", "pid": 1})
    server.client.post("/task/", {"type": "echo"})
    server.client.post("/task/", {"type": "echo"})
    held = theirs.post("/worker/theirs/claim")["task"]
    own = mine.post("/worker/mine/claim")["task"]
    answer = mine.post("/exchange", {"reports": [
        {"task": held["id"], "token": held["token"], "state": "SUCCESS", "worker": "mine"},
        {"task": own["id"], "token": own["token"], "state": "SUCCESS", "claim_next": 1,
         "worker": "theirs"},
    ]})
    assert [(e["status"], e["state"]) for e in answer["ended"]] == [(403, None), (403, None)]
    assert "another token" in answer["ended"][0]["refused"]
    assert server.client.get(f"/task/{held['id']}")["state"] == "CLAIMED"
    assert server.client.get(f"/task/{own['id']}")["state"] == "CLAIMED"


@pytest.mark.parametrize(("body", "word"), [
    ({"reports": []}, "reports"),
    ({"reports": [{"task": 1, "token": "t", "state": "SUCCESS", "worker": "w"}] * 65},
     "reports"),
    ({"reports": [{"task": 1, "token": "t", "state": "QUEUED", "worker": "w"}]}, "state"),
    ({"reports": [{"task": 1, "token": "t", "state": "SUCCESS", "worker": "../w"}]},
     "worker"),
    ({"reports": [{"task": 0, "token": "t", "state": "SUCCESS", "worker": "w"}]}, "task"),
])
def test_an_exchange_outside_its_limits_is_refused_naming_the_field(make_server, body, word):
    server = make_server(types={"echo": ECHO})
    status, answer = server.client.request("POST", "/exchange", body=body, ok=(400,))
    assert status == 400 and word in answer["error"]["message"]


def test_a_refused_report_in_an_exchange_claims_nothing_for_its_slot(make_server):
    """A report the exchange refuses (its attempt is over: a retry of a report whose answer
    was lost, a task reaped or removed) must not claim for its slot: the answer carries no
    claim, so what it took would sit CLAIMED, never run, until the reaper spends an attempt
    of it."""
    server = make_server(types={"echo": ECHO})
    slot = register(server, "proc-1")
    tasks = [server.client.post("/task/", {"type": "echo"}) for _ in range(3)]
    claim = server.client.post(f"/worker/{slot}/claim")["task"]
    answer = server.client.post("/exchange", {"reports": [
        {"task": claim["id"], "token": "an-old-attempt", "state": "SUCCESS",
         "claim_next": 2, "worker": slot}]})
    (refused,) = answer["ended"]
    assert refused["status"] == 409 and refused["next"] is None and refused["reserve"] is None
    assert [server.client.get(f"/task/{t['id']}")["state"] for t in tasks[1:]] == [
        "QUEUED", "QUEUED"]


def test_a_refused_report_leaves_its_slots_record_and_the_queue_to_the_others(make_server):
    """A refused report's claims take nothing at all, not even for a moment: its slot's
    record keeps the task it holds, and a report beside it that may claim gets the task."""
    server = make_server(types={"echo": ECHO})
    slots, held, claims = two_slots_holding(server, 2)
    last = server.client.post("/task/", {"type": "echo"})
    answer = server.client.post("/exchange", {"reports": [
        {"task": claims[0]["id"], "token": "an-old-attempt", "state": "SUCCESS",
         "claim_next": 1, "worker": slots[0]},
        {"task": claims[1]["id"], "token": claims[1]["token"], "state": "SUCCESS",
         "exit_code": 0, "claim_next": 1, "worker": slots[1]}]})
    refused, ended = answer["ended"]
    assert refused["status"] == 409 and refused["next"] is None
    assert ended["next"]["task"]["id"] == last["id"]
    assert server.client.get(f"/worker/{slots[0]}")["task"] == held[0]["id"]


# an answer that never reached its worker (the server killed, the connection broken) is
# asked for again and answered again, rather than left claimed until it counts as lost

def test_a_claim_asked_again_with_its_key_is_answered_the_same_task(make_server):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    first, second = (server.client.post("/task/", {"type": "echo"}) for _ in range(2))
    taken = server.client.post(f"/worker/{worker}/claim?wait=0&key=k-1")["task"]
    again = server.client.post(f"/worker/{worker}/claim?wait=0&key=k-1")["task"]
    assert taken["id"] == first["id"]
    assert (again["id"], again["token"], again["attempt"]) == (
        taken["id"], taken["token"], taken["attempt"])
    assert server.client.post(f"/worker/{worker}/claim?wait=0&key=k-2")["task"]["id"] == \
        second["id"]
    # another worker's claim with the same key is a claim of its own: nothing is left
    other = register(server, "other")
    status, _ = server.client.request("POST", f"/worker/{other}/claim?wait=0&key=k-1")
    assert status == 204


def test_a_paused_worker_asking_again_with_its_key_gets_that_claim_and_nothing_new(
        make_server):
    """The pause came between a claim and its lost answer: the task claimed before the pause
    is answered again (as a running task goes on while paused), rather than left claimed
    until it counts as lost; a new claim takes nothing."""
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    first, second = (server.client.post("/task/", {"type": "echo"}) for _ in range(2))
    taken = server.client.post(f"/worker/{worker}/claim?wait=0&key=k-1")["task"]
    server.client.post(f"/worker/{worker}/pause")
    again = server.client.post(f"/worker/{worker}/claim?wait=0&key=k-1")["task"]
    assert taken["id"] == first["id"]
    assert (again["id"], again["token"]) == (taken["id"], taken["token"])
    assert server.client.get(f"/worker/{worker}")["task"] == taken["id"]
    status, _ = server.client.request("POST", f"/worker/{worker}/claim?wait=0&key=k-2")
    assert status == 204
    assert server.client.get(f"/task/{second['id']}")["state"] == "QUEUED"


def test_a_worker_told_to_stop_asking_again_with_its_key_gives_that_claim_back(make_server):
    """The stop came between a claim and its lost answer: the worker leaves without the
    task, which goes back to the queue at once with its attempt unspent, rather than stay
    claimed by no one until it counts as lost."""
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    first = server.client.post("/task/", {"type": "echo"})
    taken = server.client.post(f"/worker/{worker}/claim?wait=0&key=k-1")["task"]
    server.client.request("DELETE", f"/worker/{worker}?mode=finish")
    status, _ = server.client.request("POST", f"/worker/{worker}/claim?wait=0&key=k-1",
                                      ok=(410,))
    assert status == 410
    task = server.client.get(f"/task/{first['id']}")
    assert taken["id"] == first["id"]
    assert (task["state"], task["attempt"], task["worker"]) == ("QUEUED", 0, None)


@pytest.mark.parametrize("key", ["a" * 65, "a/b", "a%20b", "%C3%A9", "a%00"])
def test_a_claim_key_outside_its_limits_is_refused_saying_what_it_may_be(make_server, key):
    server = make_server(types={"echo": ECHO})
    worker = register(server)
    server.client.post("/task/", {"type": "echo"})
    status, answer = server.client.request(
        "POST", f"/worker/{worker}/claim?wait=0&key={key}", ok=(400,))
    assert status == 400 and "key" in answer["error"]["message"], answer
    assert server.client.get("/task/?state=QUEUED&count")["count"] == 1
    # an empty key is no key: an ordinary claim
    assert server.client.post(f"/worker/{worker}/claim?wait=0&key=")["task"]["attempt"] == 1


def test_an_exchange_sent_again_is_answered_what_the_first_claimed(make_server):
    server = make_server(types={"echo": ECHO})
    slot = register(server, "proc-1")
    tasks = [server.client.post("/task/", {"type": "echo"}) for _ in range(4)]
    claim = server.client.post(f"/worker/{slot}/claim")["task"]
    report = {"reports": [{"task": claim["id"], "token": claim["token"], "state": "SUCCESS",
                           "exit_code": 0, "claim_next": 2, "worker": slot}]}
    (first,) = server.client.post("/exchange", report)["ended"]
    (again,) = server.client.post("/exchange", report)["ended"]
    assert again["refused"] is None and again["state"] == "SUCCESS"
    for part in ("next", "reserve"):
        assert (again[part]["task"]["id"], again[part]["task"]["token"]) == (
            first[part]["task"]["id"], first[part]["task"]["token"])
    assert [first["next"]["task"]["id"], first["reserve"]["task"]["id"]] == [
        tasks[1]["id"], tasks[2]["id"]]
    assert server.client.get(f"/task/{tasks[3]['id']}")["state"] == "QUEUED"
    assert len(server.client.get(f"/task/{claim['id']}")["attempts"]) == 1
    # Once the next task has started, the same report is refused again as before.
    server.client.post(f"/task/{tasks[1]['id']}/started", {
        "token": first["next"]["task"]["token"], "pid": 1})
    server.client.post(f"/task/{tasks[2]['id']}/release", {
        "token": first["reserve"]["task"]["token"]})
    (late,) = server.client.post("/exchange", report)["ended"]
    assert late["status"] == 409 and late["next"] is None and late["reserve"] is None


def test_a_worker_token_fetches_only_the_bundles_of_tasks_its_workers_hold(make_server):
    """A bundle holds its type's file, secret defaults and all: a worker token limited to
    some tags reads no other type's, and no version before one of its workers holds a task
    of it."""
    server = make_server(types={
        "echo": ECHO,
        "prod": 'command = "true"\ntags = ["prod"]\n'
                '[environment.defaults]\nAPI_KEY = { value = "PROD-SECRET", secret = true }\n'})
    token = server.token("untrusted", "worker", tags=["untrusted"])
    worker = Client(server.url, token=token)
    prod = server.client.get("/task_type/prod")["version"]
    echo = server.client.get("/task_type/echo")["version"]
    for version in (prod, echo):  # no task of it held: not even a type it could take
        with pytest.raises(ClientError) as refused:
            worker.request("GET", f"/version/{version}.tar.gz")
        assert refused.value.status == 403 and "tasks its workers hold" in str(refused.value)
    slot = worker.post("/worker/", {"id": "w", "tags": ["untrusted"], "host": "here",
                                    "pid": os.getpid()})["id"]
    server.client.post("/task/", {"type": "prod"})
    task = server.client.post("/task/", {"type": "echo"})
    claim = worker.post(f"/worker/{slot}/claim")
    assert claim["task"]["id"] == task["id"]  # the prod task is not one it may take
    status, _ = worker.request("GET", claim["bundle"])
    assert status == 200
    with pytest.raises(ClientError) as refused:
        worker.request("GET", f"/version/{prod}.tar.gz")
    assert refused.value.status == 403
    worker.post(f"/task/{task['id']}/finished", {"token": claim["task"]["token"],
                                                 "state": "SUCCESS", "exit_code": 0})
    with pytest.raises(ClientError) as refused:  # held no longer
        worker.request("GET", claim["bundle"])
    assert refused.value.status == 403
    assert server.client.request("GET", f"/version/{prod}.tar.gz")[0] == 200  # admin
