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

import pytest

from blanket.client import ClientError
from tests.conftest import wait_until

# A step that records that it ran (in the data dir's steps.log) and sleeps a little.
STEP = ('command = "sleep {{ SECONDS }}; echo {{ NAME }} >> ../../../steps.log"\n'
        '[environment.defaults]\nSECONDS = "0"\nNAME = "step"\n')

DIAMOND = '''
description = "a, then b and c side by side, then d"
[environment]
WHO = "world"

[steps.a]
command = """echo a >> ../../../steps.log
echo '{"GREETING": "hello", "COUNT": 2}' > results.json"""

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
    make_server.worker(server)  # two workers
    make_server.worker(server)
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
    assert tasks["b"]["run"] == {"id": run["id"], "step": "b", "item": 0, "round": 1}
    plain = server.client.post("/task/", {"type": "step"})
    assert "run" not in server.client.get(f"/task/{plain['id']}")


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


FAN = '''
[steps.list]
command = """python3 -c 'import json; json.dump({"ITEMS": list(range(1, 51)), "FACTOR": 3}, \\
  open("results.json", "w"))'"""

[steps.each]
command = """echo "{\\\\"PRODUCT\\\\": $(( ITEM * FACTOR ))}" > results.json"""
after = ["list"]
each = "{{ ITEMS }}"

[steps.sum]
command = """python3 -c 'import json, os; print(sum(json.loads(os.environ["PRODUCT"])))' \\
  > ../../../sum.txt
echo $ITEM_INDEX > ../../../index.txt"""
after = ["each"]
'''


def test_a_step_fans_out_over_fifty_items_and_the_next_gathers_their_results(make_server):
    server = make_server(start=False)
    server.write_workflow("fan", FAN)
    server.start()
    make_server.worker(server, slots=4)
    run = server.client.post("/workflow/fan/run", {})
    done = run_ended(server, run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    steps = steps_of(done)
    assert len(steps["each"]["tasks"]) == 50
    assert sorted(t["item"] for t in steps["each"]["tasks"]) == list(range(50))
    assert {t["state"] for t in steps["each"]["tasks"]} == {"SUCCESS"}
    assert len(steps["sum"]["tasks"]) == 1
    # 3 * (1 + ... + 50), from the 50 items' results gathered in item order
    assert (server.data_dir / "sum.txt").read_text().strip() == str(3 * 50 * 51 // 2)
    assert (server.data_dir / "index.txt").read_text().strip() == ""  # not a fanned step
    twelfth = server.client.get(f"/task/{steps['each']['tasks'][11]['id']}")
    assert twelfth["environment"]["ITEM"] == "12" and twelfth["environment"]["ITEM_INDEX"] == "11"



def start_wide_run(make_server, step: str, items: int = 250) -> tuple:
    """A server and a run of one step fanned out over `items` items whose tasks stay
    queued (no worker takes `parked`), once all of them are made."""
    server = make_server(types={"parked": 'command = "true"\ntags = ["nowhere"]\n'},
                         start=False)
    server.write_workflow("wide", f'required = ["ITEMS"]\n[steps.{step}]\ntype = "parked"\n'
                                  'each = "{{ ITEMS }}"\n')
    server.start()
    run = server.client.post("/workflow/wide/run",
                             {"environment": {"ITEMS": json.dumps(list(range(items)))}})
    wait_until(lambda: steps_of(server.client.get(f"/run/{run['id']}"))[step][
        "task_count"] == items, timeout=30)
    return server, run


def test_a_wide_fan_out_is_shown_counted_and_its_tasks_paged(make_server):
    server, run = start_wide_run(make_server, "a")  # then one of its tasks is removed
    step = steps_of(server.client.get(f"/run/{run['id']}"))["a"]
    assert (step["item_count"], step["item_states"]) == (250, {"QUEUED": 250})
    assert [t["item"] for t in step["tasks"]] == list(range(100))  # the first page only
    removed = step["tasks"][7]["id"]
    server.client.delete(f"/task/{removed}")
    step = steps_of(server.client.get(f"/run/{run['id']}"))["a"]
    assert step["item_states"] == {"QUEUED": 249, "removed": 1}
    page = server.client.get(f"/run/{run['id']}/tasks?step=a&offset=200&limit=100")
    assert (page["count"], page["offset"], page["limit"]) == (250, 200, 100)
    assert [t["item"] for t in page["tasks"]] == list(range(200, 250))
    gone = server.client.get(f"/run/{run['id']}/tasks?step=a&state=REMOVED")
    assert (gone["count"], [t["id"] for t in gone["tasks"]]) == (1, [removed])
    assert gone["tasks"][0]["state"] is None
    queued = server.client.get(f"/run/{run['id']}/tasks?step=a&state=queued,failed&limit=5")
    assert queued["count"] == 249 and len(queued["tasks"]) == 5
    for query, status, said in (("", 400, "?step=NAME"), ("?step=b", 404, "no step 'b'"),
                                ("?step=a&state=DONE", 400, "unknown state(s) DONE"),
                                ("?step=a&limit=x", 400, "must be an integer"),
                                ("?step=a&limit=0", 400, "limit"),
                                ("?step=%C3%A9tape", 404, "no step '\u00e9tape'")):
        with pytest.raises(ClientError) as refused:
            server.client.get(f"/run/{run['id']}/tasks{query}")
        assert refused.value.status == status and said in str(refused.value), query
    # the CLI counts the items rather than listing them
    shown = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url,
                            "workflow", "show", str(run["id"])], capture_output=True,
                           text=True, timeout=60,
                           env={**os.environ, "BLANKET_TOKEN": server.admin_token})
    assert "250 items: 249 queued, 1 removed" in shown.stdout, shown.stdout + shown.stderr

def test_mistakes_in_a_workflow_file_are_problems_with_their_line(make_server, tmp_path):
    server = make_server(types={"step": STEP}, start=False)
    cycle = server.write_workflow("cycle", '[steps.a]\ncommand = "true"\nafter = ["b"]\n'
                                           '[steps.b]\ncommand = "true"\nafter = ["a"]\n')
    missing = server.write_workflow("missing", '[steps.a]\ncommand = "true"\n'
                                               'after = ["nowhere"]\n')
    typo = server.write_workflow("typo", '[steps.a]\ntype = "stpe"\n')
    good = server.write_workflow("good", '[steps.a]\ntype = "step"\n')
    checked = subprocess.run([sys.executable, "-m", "blanket", "validate",
                              str(server.config_dir)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode != 0
    out = checked.stdout + checked.stderr
    assert f"{cycle}:3: steps wait for each other in a cycle: a -> b -> a" in out
    assert f"{missing}:3: steps.a.after: no step named 'nowhere'" in out
    assert f"{typo}:2: steps.a.type: no task type named 'stpe'" in out
    assert str(good) not in out
    server.start()
    listed = {w["name"]: w for w in server.client.get("/workflow/")}
    assert listed["good"]["problems"] == [] and listed["cycle"]["definition"] is None
    assert listed["cycle"]["problems"][0]["line"] == 3
    refused = server.client.request("POST", "/workflow/cycle/run", body={}, ok=(400,))
    assert refused[0] == 400 and "problems" in refused[1]["error"]["message"]
    unknown = server.client.request("POST", "/workflow/nope/run", body={}, ok=(404,))
    assert "known workflows: cycle, good, missing, typo" in unknown[1]["error"]["message"]
    # a good file broken later keeps its last good definition, and says what is wrong
    before = server.client.get("/workflow/good")["version"]
    server.write_workflow("good", '[steps.a]\ntype = "step"\nafter = ["a"]\n')
    broken = wait_until(lambda: (w := server.client.get("/workflow/good"))["problems"] and w)
    assert broken["version"] == before and "cannot wait for itself" in \
        broken["problems"][0]["message"]


def test_a_run_takes_only_its_declared_variables_and_needs_its_required_ones(make_server):
    server = make_server(start=False)
    server.write_workflow("vars", 'required = ["DAY"]\n[environment]\nWHO = "x"\n'
                                  '[steps.a]\ncommand = "echo $DAY $WHO"\n')
    server.start()
    needs = server.client.request("POST", "/workflow/vars/run", body={}, ok=(400,))
    assert "needs DAY" in needs[1]["error"]["message"]
    odd = server.client.request("POST", "/workflow/vars/run",
                                body={"environment": {"DAY": "1", "LD_PRELOAD": "x"}},
                                ok=(400,))
    assert "does not take this variable" in odd[1]["error"]["message"]
    assert server.client.get("/run/") == []  # nothing was stored
    run = server.client.post("/workflow/vars/run", {"environment": {"DAY": "mon"}})
    task = server.client.get(f"/task/{run['steps'][0]['tasks'][0]['id']}")
    assert task["environment"]["DAY"] == "mon" and task["environment"]["WHO"] == "x"
    # a step's type cannot be submitted on its own
    alone = server.client.request("POST", "/task/", body={"type": "workflow.vars.a"},
                                  ok=(400,))
    assert "workflow's own step" in alone[1]["error"]["message"]


def test_the_cli_runs_a_workflow_and_waits_for_it(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("diamond", DIAMOND)
    server.start()
    make_server.worker(server, slots=2)
    env = {**os.environ, "BLANKET_TOKEN": server.admin_token}
    cli = [sys.executable, "-m", "blanket", "--server", server.url, "workflow"]
    done = subprocess.run([*cli, "run", "diamond", "-e", "WHO=cli", "--wait"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = int(done.stdout.split()[0])
    assert "d: succeeded" in done.stderr and f"run {run_id}: succeeded" in done.stderr
    assert "c-cli" in ran(server)
    shown = subprocess.run([*cli, "show", str(run_id)], capture_output=True, text=True,
                           env=env, timeout=60)
    assert shown.returncode == 0 and "succeeded" in shown.stdout and "d" in shown.stdout
    listed = subprocess.run([*cli, "runs", "diamond", "--json"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    failed = subprocess.run([*cli, "run", "diamond", "-e", "NOPE=1"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert failed.returncode != 0 and "does not take this variable" in failed.stderr
    listed = subprocess.run([*cli, "ls"], capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0 and "diamond" in listed.stdout and "ok" in listed.stdout
    server.write_workflow("fails", '[steps.a]\ncommand = "exit 3"\n')
    wait_until(lambda: any(w["name"] == "fails" for w in server.client.get("/workflow/")))
    failing = subprocess.run([*cli, "run", "fails", "--wait"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert failing.returncode == 1 and "failed: step a: task" in failing.stderr
    again = subprocess.run([*cli, "rerun", failing.stdout.split()[0], "--wait=60"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 1  # failed again, in round 2
    assert server.client.get(f"/run/{failing.stdout.split()[0]}")["round"] == 2
    runs_before = len(server.client.get("/run/"))
    for args in (["run", "diamond", "--wait=soon"],
                 ["rerun", failing.stdout.split()[0], "--wait=soon"]):
        refused = subprocess.run([*cli, *args], capture_output=True, text=True, env=env,
                                 timeout=60)
        assert refused.returncode == 2 and "--wait" in refused.stderr, refused.stderr
    # refused before anything started: no new run, no new round
    assert len(server.client.get("/run/")) == runs_before
    assert server.client.get(f"/run/{failing.stdout.split()[0]}")["round"] == 2


def test_a_schedule_and_the_inbox_start_runs(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("diamond", DIAMOND)
    server.write_schedule("often", 'workflow = "diamond"\nevery = "1h"\n'
                                   'environment = { WHO = "schedule" }\n')
    server.start()
    make_server.worker(server, slots=2)
    first = server.client.post("/schedule/often/run")  # the run's first task
    assert first["type"] == "workflow.diamond.a" and first["schedule"] == "often"
    runs = server.client.get("/run/?workflow=diamond")
    assert [r["schedule"] for r in runs] == ["often"] and runs[0]["submitted_by"] == "schedule"
    assert run_ended(server, runs[0]["id"])["state"] == "succeeded"
    assert "c-schedule" in ran(server)
    server.inbox_dir.mkdir(exist_ok=True)
    (server.inbox_dir / "go.toml").write_text('workflow = "diamond"\n'
                                              'environment = { WHO = "inbox" }\n')
    done = wait_until(lambda: list((server.inbox_dir / "done").glob("run*-go.toml")),
                      timeout=30)
    run_id = int(done[0].name.split("-")[0].removeprefix("run"))
    run = run_ended(server, run_id)
    assert run["state"] == "succeeded" and run["submitted_by"] == "inbox"
    (server.inbox_dir / "bad.toml").write_text('workflow = "diamond"\nfiles = 1\n')
    note = wait_until(lambda: (server.inbox_dir / "failed" / "bad.toml.error").exists()
                      and (server.inbox_dir / "failed" / "bad.toml.error").read_text())
    assert "takes only workflow and environment" in note
    broken = server.write_schedule("broken", 'workflow = "nowhere"\nevery = "1h"\n')
    problem = wait_until(lambda: [p for s in server.client.get("/schedule/")
                                  if s["name"] == "broken" for p in s["problems"]])
    assert "no workflow named 'nowhere'" in problem[0]["message"] and problem[0]["line"] == 1
    assert broken.exists()


def test_stopping_a_run_stops_its_tasks_and_starts_nothing_more(make_server):
    server = make_server(start=False)
    server.write_workflow("slow", '[steps.a]\ncommand = "sleep 60"\n'
                                  '[steps.b]\ncommand = "true"\nafter = ["a"]\n')
    server.start()
    make_server.worker(server)
    run = server.client.post("/workflow/slow/run", {})
    task_id = run["steps"][0]["tasks"][0]["id"]
    server.wait_for_task(task_id, states=("RUNNING",))
    stopped = server.client.post(f"/run/{run['id']}/stop")
    assert stopped["state"] == "stopped" and "stopped by local-admin" in stopped["reason"]
    assert server.wait_for_task(task_id)["state"] == "STOPPED"
    final = server.client.get(f"/run/{run['id']}")
    assert steps_of(final)["b"]["tasks"] == [] and final["state"] == "stopped"
    again = server.client.request("POST", f"/run/{run['id']}/stop", body={}, ok=(409,))
    assert again[0] == 409


def test_a_submitter_changes_only_its_own_runs_and_runs_only_the_types_it_may(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("one", '[steps.a]\ntype = "step"\n')
    server.write_workflow("mixed", '[steps.a]\ntype = "step"\n[steps.b]\ncommand = "true"\n')
    server.start()
    from blanket.client import Client
    alice = Client(server.url, token=server.token("alice", "submitter", types=["step"]))
    bob = Client(server.url, token=server.token("bob", "submitter"))
    run = alice.post("/workflow/one/run", {})
    assert run["submitted_by"] == "alice"
    refused = alice.request("POST", "/workflow/mixed/run", body={}, ok=(403,))
    assert "workflow.mixed.b" in refused[1]["error"]["message"]
    other = bob.request("POST", f"/run/{run['id']}/stop", body={}, ok=(403,))
    assert "may change only its own runs" in other[1]["error"]["message"]
    assert alice.post(f"/run/{run['id']}/stop")["state"] == "stopped"


KILLED = '''
[steps.a]
command = "echo a >> ../../../steps.log; sleep 2"
[steps.b]
command = "echo b >> ../../../steps.log; sleep 1"
after = ["a"]
[steps.c]
command = "echo c-$ITEM >> ../../../steps.log"
after = ["b"]
each = "{{ LIST }}"
[steps.d]
command = "echo d >> ../../../steps.log"
after = ["c"]
[environment]
LIST = "x\\ny\\nz"
'''


def test_a_server_killed_mid_run_finishes_it_after_a_restart_each_step_once(make_server):
    # Workers keep their tasks across the restarts (not lost: that is another test's)
    server = make_server(start=False, env={"BLANKET_LOST_AFTER": "60"})
    server.write_workflow("chain", KILLED)
    server.start()
    make_server.worker(server, slots=2)
    run = server.client.post("/workflow/chain/run", {})
    kills = 0
    while kills < 3:  # kill it at a few points along the way
        current = server.client.get(f"/run/{run['id']}")
        if current["state"] != "running":
            break
        steps = steps_of(current)
        if (kills == 0 and steps["a"]["state"] == "running") or \
                (kills == 1 and steps["b"]["state"] == "running") or kills == 2:
            server.kill()
            kills += 1
            server.start()
        else:
            wait_until(lambda seen=steps: steps_of(server.client.get(f"/run/{run['id']}"))
                       != seen, timeout=30)
    assert kills >= 2  # the run was still going after two kills
    done = run_ended(server, run["id"], timeout=90)
    assert done["state"] == "succeeded", (done, server.log_text()[-3000:])
    assert sorted(ran(server)) == ["a", "b", "c-x", "c-y", "c-z", "d"]
    assert [len(s["tasks"]) for s in done["steps"]] == [1, 1, 3, 1]


def test_the_example_workflow_runs_as_its_comment_says(make_server, repo_copy):
    server = make_server(base=repo_copy)
    make_server.worker(server, tags="bash,python,sh,unix", slots=2)
    line = (repo_copy / "conf.d" / "workflows" / "hello.toml").read_text().splitlines()[0]
    command = line.split("`")[1]  # blanket workflow run hello -e FROGS=3 --wait
    env = {**os.environ, "BLANKET_TOKEN": server.admin_token, "BLANKET_SERVER": server.url}
    done = subprocess.run([sys.executable, "-m", *command.split()], capture_output=True,
                          text=True, env=env, timeout=120, cwd=repo_copy)
    assert done.returncode == 0, done.stderr
    run = server.client.get(f"/run/{int(done.stdout.split()[0])}")
    steps = steps_of(run)
    assert [len(steps[n]["tasks"]) for n in ("count", "bash", "python", "each")] == [1, 1, 1, 2]
    python = steps["python"]["tasks"][0]["id"]
    out = server.client.request("GET", f"/task/{python}/log/stdout")[1]
    assert "hello: 3 frogs and 6 cats" in out  # CATS from count's results


def test_wrong_inputs_of_the_workflow_routes_are_refused_saying_what_to_fix(make_server):
    server = make_server(start=False)
    server.write_workflow("w", 'required = ["DAY"]\n[steps.a]\ncommand = "true"\n')
    server.start()
    long = "x" * 201
    for method, path, body, status in [
        ("GET", "/run/?limit=0", None, 400),
        ("GET", "/run/?limit=1e999", None, 400),
        ("GET", "/run/?before=abc", None, 400),
        ("GET", "/run/?state=sideways", None, 400),
        ("GET", f"/run/?workflow={long}", None, 400),
        ("GET", "/run/1?wait=NaN", None, 400),
        ("GET", "/run/99999999999999999999999", None, 400),
        ("GET", "/run/12345", None, 404),
        ("POST", "/run/12345/stop", {}, 404),
        ("POST", "/workflow/w/run", {"environment": {"DAY": "x" * 200_000}}, 400),
        ("POST", "/workflow/w/run", {"environment": {"DAY": "a\x00b"}}, 400),
        ("POST", "/workflow/w/run", {"environment": {"1X": "y", "DAY": "d"}}, 400),
        ("POST", "/workflow/w/run", {"environment": {"DAY": ["a"]}}, 400),
        ("POST", "/workflow/w/run", {"environment": "DAY=1"}, 400),
        ("POST", "/workflow/w/run", {"env": {}}, 400),
        ("POST", "/workflow/w/run", [1, 2], 400),
        ("POST", f"/workflow/{long}/run", {}, 404),
    ]:
        got, answer = server.client.request(method, path, body=body, ok=(400, 404, 413))
        assert got == status, (path, body, got, answer)
        message = answer["error"]["message"]
        assert message and "Traceback" not in message, (path, message)
    assert server.client.get("/run/") == [] and server.client.get("/task/") == []


def test_a_schedule_fires_runs_and_skips_a_fire_while_its_run_is_still_going(make_server):
    server = make_server(start=False)
    server.write_workflow("slow", '[steps.a]\ncommand = "sleep 1.5"\n')
    server.write_schedule("tick", 'workflow = "slow"\nevery = "1s"\noverlap = "skip"\n')
    server.start()
    make_server.worker(server, slots=2)
    runs = wait_until(lambda: (found := server.client.get("/run/?workflow=slow")) and
                      len(found) >= 2 and found[-1]["state"] != "running" and found, timeout=30)
    first, second = runs[-1], runs[-2]
    assert first["schedule"] == second["schedule"] == "tick"
    assert first["finished"] <= second["added"]  # never two at once: fires were skipped
    # a fired run's command step knows its fire time, as a schedule's task does
    step = steps_of(server.client.get(f"/run/{first['id']}"))["a"]
    task = server.client.get(f"/task/{step['tasks'][0]['id']}")
    fired = task["environment"]["BLANKET_FIRE_TIME"]
    assert fired.endswith("Z") and fired == first["environment"]["BLANKET_FIRE_TIME"]
    state = server.client.get("/schedule/tick")
    assert state["last_fire"] is not None


LOGIN = ('command = "test -n \\"$PASS\\""\n'
         '[environment.required]\nPASS = { description = "the password", secret = true }\n')


def test_a_value_a_type_calls_secret_is_never_shown_in_the_run_or_its_tasks(make_server):
    server = make_server(types={"login": LOGIN}, start=False)
    server.write_workflow("deploy", 'required = ["PASS"]\n'
                                    '[steps.a]\ntype = "login"\n'
                                    'environment = { PASS = "{{ PASS }}" }\n'
                                    '[steps.b]\ncommand = "test -n \\"$PASS\\""\n'
                                    'after = ["a"]\n'
                                    'environment = { URL = "https://u:{{ PASS }}@h" }\n')
    server.start()
    make_server.worker(server)
    run = server.client.post("/workflow/deploy/run", {"environment": {"PASS": "hunter2-sec"}})
    done = run_ended(server, run["id"])
    assert done["state"] == "succeeded", done  # both steps got the real value
    from blanket.client import Client
    viewer = Client(server.url, token=server.token("eyes", "viewer"))
    shown = json.dumps([viewer.get(f"/run/{run['id']}"), viewer.get("/run/"),
                        viewer.get("/workflow/deploy")])
    assert "hunter2" not in shown and '"PASS": "***"' in shown
    for step in done["steps"]:
        task = viewer.get(f"/task/{step['tasks'][0]['id']}")
        assert task["environment"]["PASS"] == "***", task
    made_of_it = viewer.get(f"/task/{done['steps'][1]['tasks'][0]['id']}")["environment"]
    assert made_of_it["URL"] == "***"  # made of a secret: secret too
    assert viewer.get("/task/?q=hunter2") == []  # no search finds it either


def test_a_results_file_no_parser_can_read_fails_its_step_not_the_server(make_server):
    server = make_server(start=False)
    deep = server.base / "deep.py"  # nested past what a JSON parser can follow
    deep.write_text('open("results.json", "w").write(\'{"A": \' + "[" * 100000 + '
                    '"]" * 100000 + "}")\n')
    server.write_workflow("bad", f'[steps.a]\ncommand = "python3 {deep}"\n'
                                 '[steps.b]\ncommand = "true"\nafter = ["a"]\n')
    server.write_workflow("good", '[steps.a]\ncommand = "true"\n[steps.b]\ncommand = "true"\n'
                                  'after = ["a"]\n')
    server.start()
    make_server.worker(server, slots=2)
    bad = server.client.post("/workflow/bad/run", {})
    good = server.client.post("/workflow/good/run", {})
    failed = run_ended(server, bad["id"])
    assert failed["state"] == "failed", failed
    assert "is not JSON that can be read: maximum recursion depth" in failed["reason"]
    assert steps_of(failed)["b"]["state"] == "skipped"
    assert run_ended(server, good["id"])["state"] == "succeeded"
    assert "Traceback" not in server.log_text()


def test_a_schedule_whose_workflow_is_gone_does_not_stop_the_others(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("w", '[steps.a]\ncommand = "true"\n')
    server.write_schedule("orphan", 'workflow = "w"\nevery = "1s"\noverlap = "allow"\n')
    # no worker here: every fire of `plain` queues a task (overlap = allow), none is skipped
    server.write_schedule("plain", 'type = "step"\nevery = "1s"\noverlap = "allow"\n')
    server.start()
    (server.config_dir / "workflows" / "w.toml").unlink()
    wait_until(lambda: any(s["problems"] for s in server.client.get("/schedule/")
                           if s["name"] == "orphan"), timeout=30)
    before = server.client.get("/schedule/plain")["last_fire"]
    wait_until(lambda: server.client.get("/schedule/plain")["last_fire"] != before,
               timeout=30)
    # each fire of the orphan is refused (its workflow is gone), and the ticks go on
    wait_until(lambda: "schedule run refused" in server.log_text(), timeout=30)
    assert "scheduler tick failed" not in server.log_text()


def test_a_named_results_file_must_be_left_and_a_removed_command_says_what_to_do(make_server,
                                                                                  tmp_path):
    gate = tmp_path / "gate"
    server = make_server(start=False)
    server.write_workflow("named", '[steps.a]\ncommand = "true"\nresults = "out.json"\n'
                                   '[steps.b]\ncommand = "true"\nafter = ["a"]\n')
    server.write_workflow("edited", f'[steps.a]\ncommand = "while [ ! -e {gate} ]; do '
                                    'sleep 0.05; done"\n[steps.b]\ncommand = "true"\n'
                                    'after = ["a"]\n')
    server.start()
    make_server.worker(server, slots=2)
    named = run_ended(server, server.client.post("/workflow/named/run", {})["id"])
    assert named["state"] == "failed" and "left no out.json" in named["reason"], named
    run = server.client.post("/workflow/edited/run", {})
    server.write_workflow("edited", f'[steps.a]\ncommand = "while [ ! -e {gate} ]; do '
                                    'sleep 0.05; done"\n')
    wait_until(lambda: len(server.client.get("/workflow/edited")["definition"]["steps"]) == 1)
    gate.write_text("")
    edited = run_ended(server, run["id"])
    assert edited["state"] == "failed"
    assert "no longer has this step's command" in edited["reason"], edited
    assert [s["name"] for s in edited["steps"]] == ["a", "b"]  # the file it started from


def test_a_rerun_needs_a_token_that_may_still_run_every_step(make_server):
    server = make_server(types={"step": STEP}, start=False)
    server.write_workflow("w", '[steps.a]\ntype = "step"\n[steps.b]\ncommand = "exit 1"\n'
                               'after = ["a"]\n')
    server.start()
    make_server.worker(server)
    from blanket.client import Client
    wide = server.token("wide", "submitter")
    run = Client(server.url, token=wide).post("/workflow/w/run", {})
    assert run_ended(server, run["id"])["state"] == "failed"
    server.client.delete("/token/wide")
    narrow = Client(server.url, token=server.token("wide", "submitter", types=["step"]))
    refused = narrow.request("POST", f"/run/{run['id']}/rerun", body={}, ok=(403,))
    assert "workflow.w.b" in refused[1]["error"]["message"]
    odd = server.client.request("GET", "/run/abc", ok=(400,))
    assert "'abc' is not a run id" in odd[1]["error"]["message"]
