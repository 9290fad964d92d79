"""Workflow files through a real server and workers: a diamond runs its middle side by side
and its end once both succeeded, values flowing between steps through results files; a
failed step skips what comes after it and fails the run, and a rerun runs only what did not
succeed; a fan-out over 50 items with a fan-in; mistakes in a file are problems with their
line; a run started from the CLI, a schedule and the inbox; a server killed mid-run finishes
it after a restart with every step run once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import wait_until

# A step that records that it ran (in the data dir's steps.log) and sleeps a little.
STEP = ('command = "sleep {{ SECONDS }}; echo {{ NAME }} >> ../../../steps.log"\n'
        '[environment.defaults]\nSECONDS = "0"\nNAME = "step"\n')

DIAMOND = '''
description = "a, then b and c side by side, then d"
[environment]
WHO = "world"

[steps.a]
command = """echo a >> ../../../steps.log; echo '{"GREETING": "hello", "COUNT": 2}' > results.json"""

[steps.b]
type = "step"
after = ["a"]
environment = { NAME = "b-{{ GREETING }}", SECONDS = "1" }

[steps.c]
type = "step"
after = ["a"]
environment = { NAME = "c-{{ WHO }}", SECONDS = "1" }

[steps.d]
command = "echo d-$GREETING-$COUNT-$WHO >> ../../../steps.log"
after = ["b", "c"]
'''


def run_ended(server, run_id: int, timeout: float = 60) -> dict:
    return wait_until(lambda: _ended(server, run_id), timeout=timeout)


def _ended(server, run_id: int) -> dict | None:
    run = server.client.get(f"/run/{run_id}")
    return run if run["state"] != "running" else None


def steps_of(run: dict) -> dict:
    return {s["name"]: s for s in run["steps"]}


def ran(server) -> list[str]:
    log = server.data_dir / "steps.log"
    return log.read_text().split() if log.exists() else []


def test_a_diamond_runs_b_and_c_side_by_side_then_d_with_values_between_steps(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("diamond", DIAMOND)
    server.start()
    make_server.worker(server, slots=2)
    run = server.client.post("/workflow/diamond/run", {})
    assert run["state"] == "running" and run["workflow"] == "diamond"
    assert steps_of(run)["a"]["state"] == "running" and steps_of(run)["d"]["state"] == "pending"
    done = run_ended(server, run["id"])
    assert done["state"] == "succeeded", done
    steps = steps_of(done)
    assert {s["state"] for s in steps.values()} == {"succeeded"}
    tasks = {name: server.client.get(f"/task/{s['tasks'][0]['id']}")
             for name, s in steps.items()}
    assert all(len(s["tasks"]) == 1 for s in steps.values())
    assert tasks["b"]["started"] < tasks["c"]["finished"]
    assert tasks["c"]["started"] < tasks["b"]["finished"]
    assert tasks["d"]["started"] >= max(tasks["b"]["finished"], tasks["c"]["finished"])
    assert tasks["a"]["finished"] <= min(tasks["b"]["started"], tasks["c"]["started"])
    assert sorted(ran(server)) == ["a", "b-hello", "c-world", "d-hello-2-world"]
    # each step's task records its type's version; the run its workflow's
    assert all(t["version"] for t in tasks.values())
    assert done["version"] == server.client.get("/workflow/diamond")["version"]
    assert tasks["d"]["type"] == "workflow.diamond.d"


FLAKY = '''
[steps.a]
command = "echo a >> ../../../steps.log"
[steps.b]
command = "test -f {marker} && echo b >> ../../../steps.log"
after = ["a"]
[steps.c]
command = "echo c >> ../../../steps.log"
after = ["a"]
[steps.d]
command = "echo d >> ../../../steps.log"
after = ["b", "c"]
'''


def test_a_failed_step_skips_what_follows_and_a_rerun_runs_only_what_did_not_succeed(
        make_server, tmp_path):
    marker = tmp_path / "b-may-succeed"
    server = make_server(start=False)
    server.write_workflow("flaky", FLAKY.format(marker=marker))
    server.start()
    make_server.worker(server, slots=2)
    run = server.client.post("/workflow/flaky/run", {})
    failed = run_ended(server, run["id"])
    assert failed["state"] == "failed"
    steps = steps_of(failed)
    assert [steps[n]["state"] for n in "abcd"] == ["succeeded", "failed", "succeeded",
                                                   "skipped"]
    assert "ended FAILED" in steps["b"]["reason"] and "step b" in failed["reason"]
    assert steps["d"]["tasks"] == [] and "step b did not succeed" in steps["d"]["reason"]
    assert sorted(ran(server)) == ["a", "c"]
    marker.write_text("")
    again = server.client.post(f"/run/{run['id']}/rerun", {})
    assert again["state"] == "running" and again["round"] == 2
    done = run_ended(server, run["id"])
    assert done["state"] == "succeeded", done
    steps = steps_of(done)
    assert [len(steps[n]["tasks"]) for n in "abcd"] == [1, 2, 1, 1]
    assert sorted(ran(server)) == ["a", "b", "c", "d"]  # a and c did not run again
    refused = server.client.request("POST", f"/run/{run['id']}/rerun", body={}, ok=(409,))
    assert refused[0] == 409
