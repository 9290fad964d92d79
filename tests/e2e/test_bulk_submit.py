"""Many tasks in one submission: a JSON array or NDJSON, stored in one transaction or not at
all, each wrong item named."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_api_tasks import TYPES, call

ECHO = {"type": "echo"}


@pytest.fixture
def server(make_server):
    return make_server(types=TYPES)


def count(server) -> int:
    return server.client.get("/task/?count")["count"]


def test_a_json_array_stores_every_task_in_order(server):
    items = [{"type": "echo", "environment": {"N": str(n)}} for n in range(5)]
    status, answer = call(server, "POST", "/task/", json.dumps(items),
                          {"Content-Type": "application/json"})
    assert status == 201 and answer["count"] == 5
    ids = [t["id"] for t in answer["tasks"]]
    assert ids == sorted(ids) and {t["state"] for t in answer["tasks"]} == {"QUEUED"}
    stored = [server.client.get(f"/task/{task_id}") for task_id in ids]
    assert [t["environment"]["N"] for t in stored] == ["0", "1", "2", "3", "4"]
    single = server.client.post("/task/", ECHO)
    assert {t["submitted_by"] for t in stored} == {single["submitted_by"]}


def test_a_json_array_sent_as_form_data_as_curl_d_does_is_a_bulk_submission(server):
    status, answer = call(server, "POST", "/task/", json.dumps([ECHO, ECHO]),
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 201 and answer["count"] == 2, answer


def test_ndjson_takes_one_task_a_line_and_skips_blank_lines(server):
    body = '{"type": "echo"}\n\n{"type": "needs", "environment": {"COUNT": 3}}\n'
    status, answer = call(server, "POST", "/task/", body,
                          {"Content-Type": "application/x-ndjson"})
    assert status == 201 and [t["type"] for t in answer["tasks"]] == ["echo", "needs"]


def test_one_wrong_item_stores_nothing_and_every_wrong_item_is_named(server):
    items = [ECHO, {"type": "nope"}, ECHO, {"type": "needs"}, {"type": "echo", "tags": 5}]
    status, answer = call(server, "POST", "/task/", json.dumps(items))
    assert status == 400
    error = answer["error"]
    assert [item["index"] for item in error["items"]] == [1, 3, 4] and error["refused"] == 3
    assert "unknown task type 'nope'" in error["items"][0]["message"]
    assert "COUNT" in error["items"][1]["message"]
    assert error["message"].startswith("nothing was stored: task 1: ")
    assert count(server) == 0


def test_a_line_that_is_not_json_is_named_by_its_number(server):
    body = '{"type": "echo"}\n{"type": \n'
    status, answer = call(server, "POST", "/task/", body,
                          {"Content-Type": "application/x-ndjson"})
    assert status == 400 and answer["error"]["message"].startswith("line 2 is not valid JSON")
    assert count(server) == 0


@pytest.mark.parametrize(("body", "words"), [
    ("[]", "the list of tasks is empty"),
    (json.dumps([ECHO] * 10_001), "10001 tasks in one request; the limit is 10000"),
    (json.dumps([ECHO, ["echo"]]), "task 1: "),
])
def test_a_list_outside_its_limits_is_refused_saying_what_to_change(server, body, words):
    status, answer = call(server, "POST", "/task/", body)
    assert status == 400 and words in answer["error"]["message"]
    assert count(server) == 0


def test_a_list_over_the_body_limit_is_refused_413(server):
    big = json.dumps([{"type": "echo", "environment": {"X": "x" * 60_000}}] * 150)  # 9 MB
    status, answer = call(server, "POST", "/task/", big)
    assert status == 413 and answer["error"]["code"] == "too_large"
    assert count(server) == 0


def test_one_task_stays_held_to_the_single_body_limit(server):
    one = json.dumps({"type": "echo", "environment": {"X": "x" * (1024 * 1024)}})
    assert call(server, "POST", "/task/", one)[0] == 413


def test_wait_takes_one_task_not_a_list(server):
    status, answer = call(server, "POST", "/task/?wait=5", json.dumps([ECHO, ECHO]))
    assert status == 400 and "?wait waits for one task" in answer["error"]["message"]
    assert count(server) == 0


def test_the_same_list_sent_again_with_its_idempotency_key_stores_nothing_more(server):
    items = json.dumps([ECHO, ECHO, ECHO])
    key = {"Idempotency-Key": "bulk-1"}
    first = call(server, "POST", "/task/", items, key)[1]
    again = call(server, "POST", "/task/", items, key)[1]
    assert [t["id"] for t in again["tasks"]] == [t["id"] for t in first["tasks"]]
    assert count(server) == 3
    for other in ([ECHO, ECHO], [ECHO, ECHO, ECHO, ECHO], [ECHO, ECHO, {**ECHO, "priority": 1}]):
        status, refused = call(server, "POST", "/task/", json.dumps(other), key)
        assert status == 422 and "sent before with a different request" in \
            refused["error"]["message"]
    assert count(server) == 3


def test_one_key_names_one_request_whether_single_or_a_list(server):
    single = {"Idempotency-Key": "either-1"}
    assert call(server, "POST", "/task/", json.dumps(ECHO), single)[0] == 201
    assert call(server, "POST", "/task/", json.dumps([ECHO]), single)[0] == 422
    listed = {"Idempotency-Key": "either-2"}
    assert call(server, "POST", "/task/", json.dumps([ECHO, ECHO]), listed)[0] == 201
    assert call(server, "POST", "/task/", json.dumps(ECHO), listed)[0] == 422
    assert count(server) == 3


def test_a_token_may_submit_in_bulk_only_the_types_it_may_submit(server):
    token = server.token("echoer", "submitter", types=["echo"])
    status, answer = call(server, "POST", "/task/", json.dumps([ECHO, {"type": "gpu"}]),
                          {"Authorization": f"Bearer {token}"})
    assert status == 400 and [i["index"] for i in answer["error"]["items"]] == [1]
    assert "may not submit tasks of type 'gpu'" in answer["error"]["items"][0]["message"]
    assert count(server) == 0


def test_bulk_tasks_run(make_server):
    server = make_server(types=TYPES)
    make_server.worker(server, tags="unix", slots=2)
    answer = server.client.post("/task/", [ECHO] * 20)
    done = [server.wait_for_task(t["id"]) for t in answer["tasks"]]
    assert {d["state"] for d in done} == {"SUCCESS"}
