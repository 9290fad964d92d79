"""Tasks that wait for other tasks, through a real server and workers: a diamond (a, then b
and c side by side on two workers, then d once both succeeded); a failure skips what waits
for it (and what waits for that), `after_policy = "always"` runs anyway; the CLI, the inbox
and the API take `after`; mistakes are refused with what to fix; a server killed while a
chain waits finishes it after a restart, each task run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from blanket.client import ClientError
from tests.conftest import wait_until

STEP = 'command = "sleep {{ SECONDS }}; echo {{ NAME }} >> ../../../steps.log"\n' \
       '[environment.defaults]\nSECONDS = "0"\nNAME = "step"\n'
FAIL = 'command = "exit 3"\n'
ENDED = ("SUCCESS", "FAILED", "TIMEDOUT", "STOPPED", "SKIPPED", "LOST")


def submit(server, type_name: str = "step", **fields) -> dict:
    return server.client.post("/task/", {"type": type_name, **fields})


def ended(server, task_id: int, timeout: float = 30) -> dict:
    return server.wait_for_task(task_id, states=ENDED, timeout=timeout)


def test_a_diamond_runs_its_middle_side_by_side_and_its_end_once_both_succeeded(make_server):
    server = make_server(types={"step": STEP})
    make_server.worker(server, slots=2)
    a = submit(server, environment={"NAME": "a"})
    b = submit(server, environment={"NAME": "b", "SECONDS": "1"}, after=[a["id"]])
    c = submit(server, environment={"NAME": "c", "SECONDS": "1"}, after=[a["id"]])
    d = submit(server, environment={"NAME": "d"}, after=[b["id"], c["id"]])
    assert (b["state"], d["state"]) == ("WAITING", "WAITING")
    assert d["waiting"]["code"] == "after" and f"{b['id']}, {c['id']}" in d["waiting"]["message"]
    last = ended(server, d["id"])
    tasks = {name: server.client.get(f"/task/{t['id']}") for name, t in
             (("a", a), ("b", b), ("c", c), ("d", d))}
    assert {t["state"] for t in tasks.values()} == {"SUCCESS"}
    assert last["after"] == [b["id"], c["id"]]
    assert tasks["a"]["finished"] <= min(tasks["b"]["started"], tasks["c"]["started"])
    # b and c ran at the same time, on the two slots
    assert tasks["b"]["started"] < tasks["c"]["finished"]
    assert tasks["c"]["started"] < tasks["b"]["finished"]
    assert tasks["d"]["started"] >= max(tasks["b"]["finished"], tasks["c"]["finished"])
    runs = (server.data_dir / "steps.log").read_text().split()
    assert sorted(runs) == ["a", "b", "c", "d"] and runs[0] == "a" and runs[-1] == "d"


def test_a_failure_skips_what_waits_for_it_unless_it_runs_always(make_server):
    server = make_server(types={"step": STEP, "fail": FAIL})
    make_server.worker(server, slots=2)
    bad = submit(server, "fail")
    skipped = submit(server, after=[bad["id"]])
    behind = submit(server, after=[skipped["id"]])
    anyway = submit(server, after=[bad["id"]], after_policy="always")
    assert ended(server, bad["id"])["state"] == "FAILED"
    done = ended(server, behind["id"])
    first = server.client.get(f"/task/{skipped['id']}")
    assert (first["state"], done["state"]) == ("SKIPPED", "SKIPPED")
    assert f"task {bad['id']}, which it waited for, ended FAILED" in first["error"]
    assert ended(server, anyway["id"])["state"] == "SUCCESS"
    assert first["started"] is None and first["attempts"] == []  # it never ran


def test_the_cli_and_the_inbox_take_after(make_server):
    server = make_server(types={"step": STEP, "fail": FAIL})
    bad = submit(server, "fail")
    env = {**os.environ, "BLANKET_TOKEN": server.admin_token}
    made = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url, "submit",
                           "step", "--after", str(bad["id"]), "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    waiting = json.loads(made.stdout)
    assert (waiting["state"], waiting["after"]) == ("WAITING", [bad["id"]])
    listed = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url, "ps"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert any(line.split()[:3] == [str(waiting["id"]), "step", "WAITING"]
               for line in listed.stdout.splitlines()), listed.stdout
    inbox = server.inbox_dir / "later.json"
    inbox.parent.mkdir(parents=True, exist_ok=True)
    inbox.write_text(json.dumps({"type": "step", "after": [bad["id"]],
                                 "after_policy": "always"}))
    entry = wait_until(lambda: [p.name for p in (server.inbox_dir / "done").glob("*")],
                       timeout=10)[0]
    from_inbox = server.client.get(f"/task/{int(entry.split('-', 1)[0])}")
    assert (from_inbox["state"], from_inbox["after_policy"]) == ("WAITING", "always")

    make_server.worker(server)
    waited = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url, "wait",
                             str(waiting["id"]), "--timeout", "30"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert waited.returncode == 126, waited  # skipped: no exit code of its own
    assert ended(server, from_inbox["id"])["state"] == "SUCCESS"


@pytest.mark.parametrize("after, expected", [
    ([999999], "task 999999 was not submitted before this one"),
    (["x"], "after[0]: must be integer"),
    ("12,x", "is not a list of task ids"),
    (list(range(1, 1002)), "less than or equal to 1000 items"),
])
def test_a_wrong_after_is_refused_and_nothing_is_stored(make_server, after, expected):
    server = make_server(types={"step": STEP})
    with pytest.raises(ClientError) as refused:
        submit(server, after=after)
    assert refused.value.status == 400 and expected in str(refused.value)
    assert server.client.get("/task/") == []


def test_a_bad_policy_says_which_there_are(make_server):
    server = make_server(types={"step": STEP})
    first = submit(server)
    with pytest.raises(ClientError) as refused:
        submit(server, after=[first["id"]], after_policy="sometimes")
    assert "success" in str(refused.value) and "always" in str(refused.value)


def test_stopping_a_waiting_task_skips_what_waits_for_it(make_server):
    server = make_server(types={"step": STEP})
    root = submit(server)
    waiting = submit(server, after=[root["id"]])
    behind = submit(server, after=[waiting["id"]])
    server.client.post(f"/task/{waiting['id']}/stop")
    assert server.client.get(f"/task/{waiting['id']}")["state"] == "STOPPED"
    assert server.client.get(f"/task/{behind['id']}")["state"] == "SKIPPED"


def test_a_chain_survives_a_killed_server_and_runs_each_task_once(make_server):
    server = make_server(types={"step": STEP})
    chain = [submit(server, environment={"NAME": "n0"})]
    for n in range(1, 6):
        chain.append(submit(server, environment={"NAME": f"n{n}"}, after=[chain[-1]["id"]]))
    server.stop(signal.SIGKILL)
    server.start()
    make_server.worker(server)
    assert ended(server, chain[-1]["id"])["state"] == "SUCCESS"
    assert (server.data_dir / "steps.log").read_text().split() == [f"n{n}" for n in range(6)]


def test_one_request_holds_at_most_10000_waits(make_server):
    server = make_server(types={"step": STEP})
    first = submit(server)
    with pytest.raises(ClientError) as refused:
        server.client.post("/task/", [{"type": "step", "after": [first["id"]]}] * 10
                           + [{"type": "step", "after": list(range(1, 1001))}] * 10)
    assert "at most 10000" in str(refused.value)
    assert len(server.client.get("/task/")) == 1
