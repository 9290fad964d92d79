"""Workers end to end: a real server and real `blanket worker` processes over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, wait_until

ECHO = 'command = "echo hello {{ NAME }}"\n[environment.defaults]\nNAME = "world"\n'
# A task that runs until the test creates `go` in its directory.
HOLD = 'command = "while [ ! -e go ]; do sleep 0.02; done; echo released"\n'
pytestmark = pytest.mark.timeout(60)


def task_dir(server: ServerProcess, task: dict) -> Path:
    return server.data_dir / "tasks" / task["type"] / str(task["id"])


def submit(server: ServerProcess, type_name: str, **fields) -> dict:
    return server.client.post("/task/", {"type": type_name, **fields})


def wait_for_state(server: ServerProcess, task_id: int, *states: str) -> dict:
    return server.wait_for_task(task_id, states=states)


def release(server: ServerProcess, task: dict) -> None:
    (task_dir(server, task) / "go").touch()


def test_a_command_that_exits_zero_ends_success_with_its_output_kept(make_server):
    server = make_server(types={"echo": ECHO})
    make_server.worker(server)
    task = submit(server, "echo", environment={"NAME": "frogs"})
    done = server.wait_for_task(task["id"])
    assert (done["state"], done["exit_code"]) == ("SUCCESS", 0)
    folder = task_dir(server, task)
    assert (folder / "stdout.log").read_text() == "hello frogs\n"
    assert json.loads((folder / "task.json").read_text())["environment"] == {"NAME": "frogs"}


def test_a_command_that_exits_non_zero_ends_failed_with_its_exit_code(make_server):
    server = make_server(types={"fail": 'command = "echo oops >&2; exit 3"\n'})
    make_server.worker(server)
    done = server.wait_for_task(submit(server, "fail")["id"])
    assert (done["state"], done["exit_code"]) == ("FAILED", 3)
    assert (task_dir(server, done) / "stderr.log").read_text() == "oops\n"


def test_uploaded_files_are_in_the_working_directory(make_server):
    server = make_server(types={"cat": 'command = "cat data.txt"\n'})
    make_server.worker(server)
    _, task = server.client.request("POST", "/task/", fields={
        "data": json.dumps({"type": "cat"}), "data.txt": ("data.txt", b"uploaded bytes\n")})
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS"
    assert (task_dir(server, task) / "stdout.log").read_text() == "uploaded bytes\n"


def test_files_sections_are_copied_and_rendered_with_the_task_values(make_server):
    server = make_server(start=False)
    assets = server.config_dir / "types" / "greet-assets"
    assets.mkdir(parents=True)
    (assets / "greeting.txt").write_text("Hello {{ NAME }} from task {{ BLANKET_TASK_ID }}\n")
    server.write_type("greet", 'command = "cat greeting.txt"\n'
                               '[environment.defaults]\nNAME = "nobody"\n'
                               '[[files]]\nsrc = "greet-assets/"\ndest = "."\n')
    server.start()
    make_server.worker(server)
    task = submit(server, "greet", environment={"NAME": "Ada"})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    assert (task_dir(server, task) / "stdout.log").read_text() == \
        f"Hello Ada from task {task['id']}\n"


def test_shell_metacharacters_in_a_value_reach_the_command_literally(make_server):
    server = make_server(types={"say": 'command = "echo {{ WORDS }}"\n'
                                       '[environment.required]\nWORDS = { description = "x" }\n'})
    make_server.worker(server)
    hostile = "$(touch pwned); echo `id` > x | & ; 'quoted' \"double\""
    task = submit(server, "say", environment={"WORDS": hostile})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    folder = task_dir(server, task)
    assert (folder / "stdout.log").read_text() == hostile + "\n"
    assert not (folder / "pwned").exists() and not (folder / "x").exists()


def test_progress_written_to_the_progress_file_is_shown_by_the_api(make_server):
    server = make_server(types={"slow": 'command = "echo \\"42 halfway there\\" > .progress;'
                                        ' while [ ! -e go ]; do sleep 0.02; done"\n'})
    make_server.worker(server)
    task = submit(server, "slow")
    shown = wait_until(lambda: (t := server.client.get(f"/task/{task['id']}"))["progress"] == 42
                       and t)
    assert shown["progress_message"] == "halfway there"
    release(server, task)
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"


def test_a_task_past_its_timeout_ends_timedout(make_server):
    server = make_server(types={"forever": 'command = "sleep 30"\ntimeout = "1s"\n'})
    make_server.worker(server)
    done = server.wait_for_task(submit(server, "forever")["id"])
    assert done["state"] == "TIMEDOUT"
    assert "timed out" in done["error"]


def test_stopping_a_running_task_ends_it_stopped_within_a_second(make_server):
    server = make_server(types={"hold": HOLD})
    make_server.worker(server)
    task = submit(server, "hold")
    wait_for_state(server, task["id"], "RUNNING")
    asked = time.monotonic()
    server.client.post(f"/task/{task['id']}/stop")
    done = wait_for_state(server, task["id"], "STOPPED", "SUCCESS", "FAILED")
    assert done["state"] == "STOPPED"
    assert time.monotonic() - asked < 1.0


def test_a_failing_task_is_retried_with_growing_delays_and_each_attempt_recorded(make_server):
    server = make_server(types={"flaky": 'command = "exit 1"\nretries = 2\nretry_delay = 0.3\n'})
    make_server.worker(server)
    done = server.wait_for_task(submit(server, "flaky")["id"])
    assert done["state"] == "FAILED"
    attempts = done["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["state"] == "FAILED" for a in attempts)
    first_gap = attempts[1]["claimed"] - attempts[0]["finished"]
    second_gap = attempts[2]["claimed"] - attempts[1]["finished"]
    assert 0.3 <= first_gap < second_gap
    assert second_gap >= 0.6


def test_a_worker_never_takes_a_task_needing_a_tag_it_lacks(make_server):
    server = make_server(types={"gpu": 'tags = ["gpu"]\n' + ECHO, "cpu": 'tags = ["cpu"]\n' + ECHO})
    make_server.worker(server, tags="cpu", args=("--id", "cpu-only"))
    needs_gpu = submit(server, "gpu")
    cpu = server.wait_for_task(submit(server, "cpu")["id"])
    assert cpu["worker"] == "cpu-only"
    assert server.client.get(f"/task/{needs_gpu['id']}")["state"] == "QUEUED"
    make_server.worker(server, tags="cpu,gpu", args=("--id", "both"))
    gpu = server.wait_for_task(needs_gpu["id"])
    assert (gpu["state"], gpu["worker"]) == ("SUCCESS", "both")


def test_a_task_reaches_the_one_idle_worker_able_to_run_it(make_server):
    # A new task wakes one idle claim at a time: those that cannot take it pass it on.
    server = make_server(types={"gpu": 'tags = ["gpu"]\n' + ECHO})
    make_server.worker(server, tags="cpu", processes=3)
    wait_until(lambda: len(server.client.get("/worker/")) == 3)
    make_server.worker(server, tags="gpu", args=("--id", "gpu-one"))
    make_server.worker(server, tags="gpu", args=("--id", "gpu-napping"))
    wait_until(lambda: len(server.client.get("/worker/")) == 5)
    server.client.post("/worker/gpu-napping/pause")
    for _ in range(3):
        task = submit(server, "gpu")
        done = server.wait_for_task(task["id"], timeout=10)  # well within a 30 s long poll
        assert (done["state"], done["worker"]) == ("SUCCESS", "gpu-one")


def test_max_concurrent_holds_with_several_workers(make_server):
    server = make_server(types={"one": 'max_concurrent = 1\ncommand = "echo $EPOCHREALTIME > '
                                       'start; sleep 0.2; echo $EPOCHREALTIME > end"\n'})
    make_server.worker(server, processes=3)
    wait_until(lambda: len(server.client.get("/worker/")) == 3)
    tasks = [submit(server, "one") for _ in range(4)]
    spans = []
    for task in tasks:
        assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
        folder = task_dir(server, task)
        spans.append((float((folder / "start").read_text()), float((folder / "end").read_text())))
    spans.sort()
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))


def test_a_reserve_held_behind_a_long_task_is_given_back_for_another_worker(make_server):
    server = make_server(types={"echo": ECHO, "hold": HOLD})
    submit(server, "echo")
    long, after = submit(server, "hold"), submit(server, "echo")
    first = make_server.worker(server, args=("--id", "first"))
    # `first` runs the echo task, whose end report brings `long` and `after` as its reserve; once
    # `long` outlives the runner's first poll, `after` goes back to the queue
    wait_for_state(server, long["id"], "RUNNING")
    given_back = re.compile(rf"reserve given back .*\btask={after['id']}\b")
    wait_until(lambda: given_back.search(first.log.read_text()), timeout=10)
    assert server.client.get(f"/task/{after['id']}")["state"] == "QUEUED"
    make_server.worker(server, args=("--id", "second"))
    done = server.wait_for_task(after["id"])
    assert (done["state"], done["worker"], done["attempt"]) == ("SUCCESS", "second", 1)
    assert len(done["attempts"]) == 1  # given back unstarted: no attempt recorded
    assert server.client.get(f"/task/{long['id']}")["state"] == "RUNNING"
    release(server, long)
    assert server.wait_for_task(long["id"])["state"] == "SUCCESS"


def test_a_worker_stopped_amid_short_tasks_leaves_none_claimed(make_server):
    server = make_server(types={"echo": ECHO})
    tasks = [submit(server, "echo") for _ in range(300)]
    worker = make_server.worker(server)

    def done() -> int:
        return server.client.get("/task/?count&state=SUCCESS")["count"]

    wait_until(lambda: done() >= 30, timeout=30)
    worker.stop()  # SIGTERM: the task it runs ends, its reserve goes back
    assert worker.proc.returncode == 0
    states = {t["id"]: t for t in server.client.get("/task/?limit=1000")}
    assert {states[t["id"]]["state"] for t in tasks} <= {"SUCCESS", "QUEUED"}
    for task in states.values():
        assert task["attempt"] == (1 if task["state"] == "SUCCESS" else 0)
    assert 30 <= done() < 300


def test_a_task_does_not_start_before_its_not_before(make_server):
    server = make_server(types={"echo": ECHO})
    make_server.worker(server)
    not_before = time.time() + 1.0
    task = submit(server, "echo", not_before=not_before)
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS"
    assert done["started"] >= not_before


def test_workers_are_listed_with_tags_pid_host_state_task_and_heartbeat(make_server):
    server = make_server(types={"hold": HOLD})
    worker = make_server.worker(server, tags="unix,bash", args=("--id", "lister"))
    task = submit(server, "hold")
    wait_for_state(server, task["id"], "RUNNING")
    [listed] = server.client.get("/worker/")
    assert listed["id"] == "lister"
    assert listed["tags"] == ["bash", "unix"]
    assert listed["pid"] == worker.proc.pid
    assert listed["host"]
    assert (listed["state"], listed["task"]) == ("busy", task["id"])
    assert time.time() - listed["heartbeat"] < 5
    release(server, task)


def test_removing_a_worker_in_finish_mode_lets_its_task_end_then_it_exits(make_server):
    server = make_server(types={"hold": HOLD})
    worker = make_server.worker(server, args=("--id", "leaver"))
    task = submit(server, "hold")
    wait_for_state(server, task["id"], "RUNNING")
    server.client.delete("/worker/leaver")
    assert server.client.get("/worker/leaver")["state"] == "stopping"
    release(server, task)
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    assert worker.proc.wait(10) == 0
    assert server.client.get("/worker/") == []


def test_removing_a_worker_in_handback_mode_queues_its_task_again(make_server):
    server = make_server(types={"hold": HOLD})
    worker = make_server.worker(server, args=("--id", "first"))
    task = submit(server, "hold")
    wait_for_state(server, task["id"], "RUNNING")
    server.client.delete("/worker/first?mode=handback")
    assert worker.proc.wait(10) == 0
    assert server.client.get(f"/task/{task['id']}")["state"] == "QUEUED"
    release(server, task)
    make_server.worker(server, args=("--id", "second"))
    done = server.wait_for_task(task["id"])
    assert (done["state"], done["worker"]) == ("SUCCESS", "second")


def test_an_idle_worker_removed_exits_at_once(make_server):
    server = make_server()
    worker = make_server.worker(server, args=("--id", "idle-one"))
    wait_until(lambda: server.client.get("/worker/"))
    server.client.delete("/worker/idle-one")
    assert worker.proc.wait(5) == 0


def test_a_paused_worker_takes_no_task_until_resumed(make_server):
    server = make_server(types={"echo": ECHO})
    make_server.worker(server, args=("--id", "napper"))
    wait_until(lambda: server.client.get("/worker/"))
    assert server.client.post("/worker/napper/pause")["state"] == "paused"
    task = submit(server, "echo")
    time.sleep(0.5)  # a paused worker must not take it meanwhile
    assert server.client.get(f"/task/{task['id']}")["state"] == "QUEUED"
    server.client.post("/worker/napper/resume")
    assert server.wait_for_task(task["id"], timeout=5)["state"] == "SUCCESS"


def test_a_supervisor_restarts_a_crashed_worker(make_server):
    server = make_server()
    make_server.worker(server, processes=2, args=("--id", "pool"))
    workers = wait_until(lambda: len(w := server.client.get("/worker/")) == 2 and w)
    victim = next(w for w in workers if w["id"] == "pool-1")
    os.kill(victim["pid"], signal.SIGKILL)
    restarted = wait_until(lambda: (w := server.client.get("/worker/pool-1"))["pid"]
                           != victim["pid"] and w)
    assert restarted["state"] == "idle"


def test_the_readme_quick_start_runs_its_first_task_with_the_servers_own_workers(
        make_server, repo_copy):
    # No worker_tags: the server's own workers get what this machine can run.
    server = make_server(base=repo_copy, extra_args=("--workers", "2"))
    workers = wait_until(lambda: len(w := server.client.get("/worker/")) == 2 and w)
    assert {"unix", "bash", "sh", "python"} <= set(workers[0]["tags"])
    python = server.client.post("/task/", {"type": "python_hello", "environment": {
        "frogs": 3}})
    assert server.wait_for_task(python["id"])["state"] == "SUCCESS"
    task = server.client.post("/task/", {"type": "bash_task", "environment": {
        "PANDAS": "four", "Frogs": 5, "CATS": 2}})
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS"
    assert (task_dir(server, task) / "stdout.log").read_text().startswith(
        "PANDAS=four Frogs=5 CATS=2\n")


def run_elsewhere(make_server, server: ServerProcess, type_name: str) -> tuple[Path, dict, dict]:
    """Run one task with an uploaded input.txt on a worker with a data dir of its own (as on
    another machine): (that data dir, the task as submitted, the task once it succeeded)."""
    elsewhere = server.base / "other-machine"
    make_server.worker(server, data_dir=elsewhere)
    _, task = server.client.request("POST", "/task/", fields={
        "data": json.dumps({"type": type_name}), "input.txt": ("input.txt", b"uploaded\n")})
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS"
    return elsewhere, task, done


def test_a_worker_with_its_own_data_dir_fetches_the_bundle_and_the_uploads(make_server):
    server = make_server(start=False)
    assets = server.config_dir / "types" / "remote-assets"
    assets.mkdir(parents=True)
    (assets / "script.sh").write_text("echo from the bundle\n")
    server.write_type("remote", 'command = "bash script.sh; cat input.txt"\n'
                                '[[files]]\nsrc = "remote-assets/"\n')
    server.start()
    elsewhere, task, done = run_elsewhere(make_server, server, "remote")
    folder = elsewhere / "tasks" / "remote" / str(task["id"])
    assert (folder / "stdout.log").read_text() == "from the bundle\nuploaded\n"
    assert (elsewhere / "bundles" / done["version"]).is_dir()


def test_a_worker_on_another_machine_hands_its_outputs_to_the_server(make_server):
    server = make_server(types={"report": (
        'command = "echo printed; echo warned >&2; mkdir -p made; cat input.txt > made/copy.txt"'
        '\n')})
    elsewhere, task, _ = run_elsewhere(make_server, server, "report")
    # What ran on the other machine can be read on the server, as for a local worker.
    assert server.client.get(f"/task/{task['id']}/log/stdout") == "printed\n"
    assert server.client.get(f"/task/{task['id']}/log/stderr") == "warned\n"
    files = {f["path"] for f in server.client.get(f"/task/{task['id']}/files/")}
    assert {"stdout.log", "stderr.log", "task.json", "made/copy.txt", "input.txt"} <= files
    assert server.client.get(f"/task/{task['id']}/files/made/copy.txt") == "uploaded\n"
    record = json.loads((task_dir(server, task) / "task.json").read_text())
    assert record["id"] == task["id"]
    # and the worker still keeps its own copy
    assert (elsewhere / "tasks" / "report" / str(task["id"]) / "made" / "copy.txt").exists()


def test_a_remote_tasks_log_can_be_read_and_followed_while_it_runs(make_server):
    server = make_server(types={"chatty": (
        'command = "echo first line; echo to stderr >&2; '
        'while [ ! -e go ]; do sleep 0.02; done; echo last line"\n')})
    elsewhere = server.base / "other-machine"
    make_server.worker(server, data_dir=elsewhere)
    task = submit(server, "chatty")
    wait_for_state(server, task["id"], "RUNNING")

    def shown(stream: str) -> str | None:
        status, text = server.client.request("GET", f"/task/{task['id']}/log/{stream}",
                                             ok=(404,))
        return text if status == 200 else None

    # printed on the other machine, readable here before the task ends
    assert wait_until(lambda: shown("stdout") == "first line\n", timeout=10)
    assert wait_until(lambda: shown("stderr") == "to stderr\n", timeout=10)
    assert server.client.get(f"/task/{task['id']}")["state"] == "RUNNING"
    (elsewhere / "tasks" / "chatty" / str(task["id"]) / "go").touch()
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    assert shown("stdout") == "first line\nlast line\n"


def test_a_worker_sharing_the_servers_data_dir_sends_no_outputs(make_server):
    server = make_server(types={"echo": ECHO})
    make_server.worker(server)
    done = server.wait_for_task(submit(server, "echo")["id"])
    assert done["state"] == "SUCCESS"
    assert not (server.data_dir / "outputs").exists()  # nothing was packed to send


# one process, several slots

def test_one_worker_process_runs_its_slots_tasks_at_once(make_server):
    server = make_server(types={"hold": HOLD})
    make_server.worker(server, slots=3, args=("--id", "box"))
    workers = wait_until(lambda: len(w := server.client.get("/worker/")) == 3 and w)
    assert sorted(w["id"] for w in workers) == ["box-1", "box-2", "box-3"]
    assert len({w["pid"] for w in workers}) == 1  # one process
    tasks = [submit(server, "hold") for _ in range(3)]
    running = [wait_for_state(server, t["id"], "RUNNING") for t in tasks]  # all three at once
    assert sorted(t["worker"] for t in running) == ["box-1", "box-2", "box-3"]
    for task in tasks:
        release(server, task)
    assert all(server.wait_for_task(t["id"])["state"] == "SUCCESS" for t in tasks)


def test_slots_run_a_burst_of_short_tasks_each_once(make_server):
    server = make_server(types={"echo": ECHO})
    make_server.worker(server, slots=2, args=("--id", "pair"))
    wait_until(lambda: len(server.client.get("/worker/")) == 2)
    tasks = [submit(server, "echo", environment={"NAME": str(n)}) for n in range(60)]
    done = [server.wait_for_task(t["id"]) for t in tasks]
    assert all(d["state"] == "SUCCESS" and d["attempt"] == 1 for d in done)
    assert {d["worker"] for d in done} <= {"pair-1", "pair-2"}
    for n, task in enumerate(tasks):
        assert (task_dir(server, task) / "stdout.log").read_text() == f"hello {n}\n"


def test_stopping_one_slot_leaves_the_others_working(make_server):
    server = make_server(types={"echo": ECHO, "hold": HOLD})
    worker = make_server.worker(server, slots=2, args=("--id", "duo"))
    wait_until(lambda: len(server.client.get("/worker/")) == 2)
    held = submit(server, "hold")
    running = wait_for_state(server, held["id"], "RUNNING")
    idle = "duo-2" if running["worker"] == "duo-1" else "duo-1"
    server.client.delete(f"/worker/{idle}")
    wait_until(lambda: [w["id"] for w in server.client.get("/worker/")] == [running["worker"]])
    release(server, held)
    assert server.wait_for_task(held["id"])["state"] == "SUCCESS"
    after = submit(server, "echo")
    assert server.wait_for_task(after["id"])["worker"] == running["worker"]
    assert worker.proc.poll() is None  # the process goes on with its other slot


def test_sigterm_lets_every_slots_task_finish_then_the_process_exits(make_server):
    server = make_server(types={"hold": HOLD})
    worker = make_server.worker(server, slots=2)
    wait_until(lambda: len(server.client.get("/worker/")) == 2)
    tasks = [submit(server, "hold") for _ in range(2)]
    for task in tasks:
        wait_for_state(server, task["id"], "RUNNING")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: all(w["state"] == "stopping" for w in server.client.get("/worker/")))
    for task in tasks:
        release(server, task)
    assert all(server.wait_for_task(t["id"])["state"] == "SUCCESS" for t in tasks)
    assert worker.proc.wait(20) == 0
    assert wait_until(lambda: server.client.get("/worker/") == [])


def test_restart_runs_one_process_of_slots_again_when_it_crashes(make_server):
    server = make_server()
    make_server.worker(server, slots=2, args=("--restart", "--id", "solo"))
    workers = wait_until(lambda: len(w := server.client.get("/worker/")) == 2 and w)
    assert sorted(w["id"] for w in workers) == ["solo-1", "solo-2"]
    pid = workers[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    again = wait_until(lambda: len(w := [x for x in server.client.get("/worker/")
                                         if x["pid"] != pid]) == 2 and w, timeout=20)
    assert sorted(w["id"] for w in again) == ["solo-1", "solo-2"]
    assert len({w["pid"] for w in again}) == 1


def test_defaults_grown_past_the_bound_since_submission_fail_the_task_saying_so(make_server):
    # Each was within the bound: the submission (its values and the defaults of then), and
    # the type's defaults saved later. Together they are over it: the run says so, rather
    # than the process failing to start with "Argument list too long".
    def type_text(defaults: int) -> str:  # each default PADn=value is 100,006 bytes
        pads = "".join(f'PAD{n} = "{"d" * 100_000}"\n' for n in range(defaults))
        return ('command = "echo ran"\nallow_extra_environment = ["BIG*"]\n'
                f'[environment.defaults]\n{pads}')

    server = make_server(types={"env": type_text(1)})
    big = {f"BIG{i}": "v" * 100_000 for i in range(6)}  # 600 KB submitted
    task = submit(server, "env", environment=big)
    first = server.client.get("/task_type/env")["version"]
    server.write_type("env", type_text(5))
    wait_until(lambda: server.client.get("/task_type/env")["version"] != first, timeout=5)
    make_server.worker(server)
    done = server.wait_for_task(task["id"])
    assert done["state"] == "FAILED"
    assert re.search(r"environment: its variables come to \d+ bytes as NAME=value \(its "
                     r"type's \[environment.defaults\] give 500030 of them\); the most is "
                     r"1048576: pass large values as files, or shrink the type's defaults",
                     done["error"]), done["error"]
