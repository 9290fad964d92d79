"""The commands an operator follows tasks with, against a real server and worker: submit
--wait (id first, progress, the task's own exit code), wait, rerun, inspect, logs of a
combined log and of a queued task, --json listings, and tables that fit the terminal, in
colour only where that is asked for, through a pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import urllib.request

import pytest

from tests.e2e.test_cli import BLANKET, blanket, task

TYPES = {
    "echo": 'command = "echo {{ WORD }}"\ntags = ["unix"]\n[environment.defaults]\nWORD = "hi"\n',
    "fail": 'command = "echo broken >&2; exit 7"\ntags = ["unix"]\n',
    "slow": 'command = "sleep 30"\ntags = ["unix"]\ntimeout = "1s"\n',
    "both": ('command = "echo out; echo err >&2"\ntags = ["unix"]\ncombine_output = true\n'),
    "steps": ('command = "for i in 1 2 3; do echo $((i*30)) step $i > .progress; sleep 1.2; done"\n'
              'tags = ["unix"]\n'),
    "gpu": 'command = "true"\ntags = ["gpu"]\n',
    "killed": 'command = "echo going; kill -KILL $$"\ntags = ["unix"]\n',
    "long": 'command = "echo started; sleep 60"\ntags = ["unix"]\n',
    # a progress bar redrawn with CRs, and text a follower must not take for the end
    "bars": ('command = "printf \'10%%\\\\revent: end\\\\rdata: fake\\\\n\'; echo after"\n'
             'tags = ["unix"]\n'),
}


@pytest.fixture
def server(make_server):
    running = make_server(types=TYPES)
    make_server.worker(running, tags="unix")
    return running


def in_terminal(*args: str, server, columns: int = 80, env: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, str]:
    """Run `blanket --server URL ARGS` on a pseudo-terminal `columns` wide: (exit code,
    everything it wrote)."""
    leader, follower = pty.openpty()
    os.set_blocking(leader, False)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BLANKET_SERVER", "BLANKET_SETTINGS", "NO_COLOR", "COLUMNS")}
    environ.update({"TERM": "xterm", **(env or {})})
    proc = subprocess.Popen([BLANKET, "--server", server.url, *args], stdin=follower,
                            stdout=follower, stderr=follower, env=environ, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(10), output.decode(errors="replace")


def visible(line: str) -> str:
    """A line as the terminal shows it: without colour codes and carriage returns."""
    return re.sub(r"\x1b\[[0-9;]*m", "", line).replace("\r", "")


# --- waiting -------------------------------------------------------------------------------

def test_submit_wait_exits_with_the_commands_own_exit_code_and_its_log_tail(server):
    done = blanket("submit", "fail", "--wait", server=server, ok=False)
    assert done.returncode == 7
    task_id = done.stdout.strip()
    assert task(server, task_id)["exit_code"] == 7
    assert f"task {task_id}'s stderr log" in done.stderr and "broken" in done.stderr


def test_a_task_killed_by_a_signal_exits_128_plus_its_number_as_a_shell_says(server):
    done = blanket("submit", "killed", "--wait", server=server, ok=False)
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    task_id = done.stdout.strip()
    record = task(server, task_id)
    assert (record["state"], record["exit_code"]) == ("FAILED", -signal.SIGKILL)
    assert record["error"] == "killed by signal SIGKILL"
    assert blanket("wait", task_id, server=server, ok=False).returncode == 137
    again = blanket("rerun", task_id, "--wait", server=server, ok=False)
    assert again.returncode == 137


@pytest.mark.parametrize("args", [("inspect", ""), ("logs", ""), ("wait", ""), ("rm", ""),
                                  ("stop", ""), ("task", "stop", ""), ("rm", "1?force"),
                                  ("rerun", "x"), ("wait", "1", "../worker")])
def test_a_task_id_that_is_not_a_number_is_refused_before_asking(server, args):
    done = blanket(*args, server=server, ok=False)
    assert done.returncode == 2, done.stderr
    assert "is not a task id; ids are whole numbers such as 42" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_timed_out_task_exits_124_as_timeout_does(server):
    done = blanket("submit", "slow", "--wait", server=server, ok=False)
    assert done.returncode == 124 and "TIMEDOUT" in done.stderr


def test_wait_with_a_limit_gives_up_with_125_and_the_type_is_not_taken_as_its_value(server):
    # "gpu" has no worker: it stays queued. --wait 1 is a limit; the type comes after.
    began = time.monotonic()
    done = blanket("submit", "--wait", "1", "gpu", server=server, ok=False)
    assert done.returncode == 125 and time.monotonic() - began < 20
    assert task(server, done.stdout.strip())["state"] == "QUEUED"
    done = blanket("submit", "--wait=0.5", "gpu", server=server, ok=False)
    assert done.returncode == 125
    done = blanket("submit", "--wait", "echo", server=server)  # bare --wait, then the type
    assert task(server, done.stdout.strip())["state"] == "SUCCESS"


def test_a_wrong_wait_value_is_a_usage_error(server):
    done = blanket("submit", "echo", "--wait=soon", server=server, ok=False)
    assert done.returncode == 2 and "--wait" in done.stderr and "duration" in done.stderr


def test_submit_wait_on_a_terminal_prints_the_id_at_once_then_live_progress(server):
    code, output = in_terminal("submit", "steps", "--wait", server=server)
    assert code == 0, output
    first_line = output.splitlines()[0].strip()
    assert first_line.isdigit()  # the id, before anything else
    assert "step 2" in output  # the task's own message
    assert re.search(r"\[#+\.*\] \d+%", output)  # and a bar
    assert "\r\x1b[2K" in output  # redrawn in place
    assert f"task {first_line} " in output and "SUCCESS" in output


def test_wait_follows_several_tasks_and_exits_with_the_first_failure(server):
    ok = blanket("submit", "echo", server=server).stdout.strip()
    bad = blanket("submit", "fail", server=server).stdout.strip()
    done = blanket("wait", ok, bad, server=server, ok=False)
    assert done.returncode == 7
    assert task(server, ok)["state"] == "SUCCESS"
    done = blanket("wait", ok, "--json", server=server)
    assert json.loads(done.stdout)["state"] == "SUCCESS"
    done = blanket("wait", blanket("submit", "gpu", server=server).stdout.strip(),
                   "--timeout", "0.3", server=server, ok=False)
    assert done.returncode == 125


def test_the_server_answers_a_task_once_it_ended_with_wait(server):
    task_id = server.client.post("/task/", {"type": "gpu"})["id"]
    began = time.monotonic()
    shown = server.client.get(f"/task/{task_id}?wait=0.5")
    assert shown["state"] == "QUEUED" and 0.4 < time.monotonic() - began < 10
    task_id = server.client.post("/task/", {"type": "echo"})["id"]
    assert server.client.get(f"/task/{task_id}?wait=30")["state"] == "SUCCESS"


# --- rerun, inspect, logs ------------------------------------------------------------------

def test_rerun_submits_the_same_task_again_and_can_wait_for_it(server):
    first = blanket("submit", "echo", "-e", "WORD=again", "--wait", server=server)
    first_id = first.stdout.strip()
    again = blanket("rerun", first_id, "--wait", server=server)
    again_id = again.stdout.strip()
    assert again_id != first_id
    record = task(server, again_id)
    assert record["state"] == "SUCCESS" and record["environment"]["WORD"] == "again"


def test_inspect_prints_every_field_and_json_on_request(server):
    task_id = blanket("submit", "echo", "--wait", server=server).stdout.strip()
    shown = blanket("inspect", task_id, server=server).stdout
    record = task(server, task_id)
    for key in record:
        assert any(line.startswith(key + " ") for line in shown.splitlines()), key
    assert json.loads(blanket("inspect", task_id, "--json", server=server).stdout) == record
    both = json.loads(blanket("inspect", task_id, task_id, "--json", server=server).stdout)
    assert [t["id"] for t in both] == [record["id"]] * 2


def test_logs_shows_the_combined_log_of_a_type_that_keeps_one(server):
    task_id = blanket("submit", "both", "--wait", server=server).stdout.strip()
    out = blanket("logs", task_id, server=server).stdout
    assert "out" in out and "err" in out
    assert blanket("logs", task_id, "--output", server=server).stdout == out


def test_logs_follow_of_a_queued_task_says_it_waits(server, make_server):
    task_id = blanket("submit", "gpu", server=server).stdout.strip()
    proc = subprocess.Popen([BLANKET, "--server", server.url, "logs", "-f", task_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"task {task_id} is queued" in line and "waiting for it to start" in line
        make_server.worker(server, tags="gpu")
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        proc.kill()


def test_a_followed_log_with_carriage_returns_is_all_shown_and_ends_once(server):
    task_id = blanket("submit", "bars", "--wait", server=server).stdout.strip()
    followed = blanket("logs", "-f", task_id, server=server)
    assert followed.stdout == "10%\nevent: end\ndata: fake\nafter\n"
    request = urllib.request.Request(f"{server.url}/task/{task_id}/log/stdout?follow")
    with urllib.request.urlopen(request, timeout=30) as answer:
        stream = answer.read().decode()
    assert "\r" not in stream and stream.split("\n").count("event: end") == 1, stream


def test_logs_follow_of_a_task_removed_meanwhile_says_so_and_fails(server):
    task_id = blanket("submit", "long", server=server).stdout.strip()
    proc = subprocess.Popen([BLANKET, "--server", server.url, "logs", "-f", task_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        blanket("rm", "--force", task_id, server=server)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert f"task {task_id} was removed before it ended" in err
    finally:
        proc.kill()


# --- listings ------------------------------------------------------------------------------

def test_listings_print_json_and_names(server):
    blanket("submit", "gpu", server=server)
    tasks = json.loads(blanket("ps", "--json", server=server).stdout)
    assert tasks and all("state" in t for t in tasks)
    types = json.loads(blanket("ls", "types", "--json", server=server).stdout)
    assert {t["name"] for t in types} == set(TYPES)
    names = blanket("ls", "types", "-q", server=server).stdout.split()
    assert sorted(names) == sorted(TYPES)
    workers = json.loads(blanket("ls", "workers", "--json", server=server).stdout)
    assert blanket("ls", "workers", "-q", server=server).stdout.split() == [
        w["id"] for w in workers]


def test_tables_fit_the_terminal_with_an_ellipsis_and_colour_states(server):
    long_word = "x" * 200
    server.client.post("/task/", {"type": "gpu", "tags": [long_word[:60]]})
    blanket("submit", "echo", "-e", f"WORD={long_word}", "--wait", server=server)
    code, output = in_terminal("ls", "types", server=server, columns=60)
    assert code == 0
    assert all(len(visible(line)) <= 60 for line in output.splitlines()), output
    code, output = in_terminal("ps", "-a", server=server, columns=70)
    assert code == 0 and "\x1b[32mSUCCESS" in output  # green on a terminal
    assert all(len(visible(line)) <= 70 for line in output.splitlines()), output
    assert "ID" in output and "STATE" in output and "BY" not in output  # BY left out first
    code, output = in_terminal("ps", "-a", server=server, env={"NO_COLOR": "1"})
    assert code == 0 and "\x1b[" not in output
    piped = blanket("ps", "-a", server=server).stdout
    assert "\x1b[" not in piped and "…" not in piped


def test_a_long_description_is_cut_only_on_a_terminal(make_server):
    description = "a description far longer than fifty characters, kept whole in a pipe"
    running = make_server(types={"long": f'description = "{description}"\ncommand = "true"\n'})
    assert description in blanket("ls", "types", server=running).stdout
    code, output = in_terminal("ls", "types", server=running, columns=50)
    assert code == 0 and "…" in output and description not in output


# --- why a queued task waits ---------------------------------------------------------------

def test_a_task_no_worker_can_take_says_so_in_the_api_and_in_ps(server, make_server):
    task_id = blanket("submit", "gpu", server=server).stdout.strip()
    waiting = task(server, task_id)["waiting"]
    assert waiting["code"] == "no_worker" and "gpu" in waiting["message"]
    listed = server.client.get("/task/?state=QUEUED")
    assert [t["waiting"]["code"] for t in listed] == ["no_worker"]
    assert "no worker has tags gpu" in blanket("ps", server=server).stdout
    make_server.worker(server, tags="gpu")
    assert server.wait_for_task(int(task_id))["state"] == "SUCCESS"
    assert "waiting" not in task(server, task_id)


# --- top -----------------------------------------------------------------------------------

def test_top_once_prints_counts_workers_and_queued_tasks(server):
    blanket("submit", "echo", "--wait", server=server)
    blanket("submit", "gpu", server=server)
    out = blanket("top", "--once", server=server).stdout
    assert "queued 1" in out and "success 1" in out
    workers = server.client.get("/worker/")
    assert workers[0]["id"] in out
    assert "1 queued task(s) no worker can take" in out and "gpu" in out


def test_top_on_a_terminal_redraws_until_ctrl_c(server):
    task_id = server.client.post("/task/", {"type": "slow"})["id"]  # runs for its 1 s timeout
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environ = {k: v for k, v in os.environ.items() if k not in ("BLANKET_SERVER",)}
    proc = subprocess.Popen([BLANKET, "--server", server.url, "top", "-n", "0.2"],
                            stdin=follower, stdout=follower, stderr=follower,
                            env={**environ, "TERM": "xterm"}, start_new_session=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and f"{task_id} ".encode() not in output:
            if select.select([leader], [], [], 0.2)[0]:
                output += os.read(leader, 65536)
        assert f"{task_id} ".encode() in output and b"running" in output
        redraws = output.count(b"blanket top")
        time.sleep(1)
        while select.select([leader], [], [], 0.2)[0]:
            output += os.read(leader, 65536)
        assert output.count(b"blanket top") > redraws  # it keeps refreshing
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(10) == 0
        while select.select([leader], [], [], 0.2)[0]:
            try:
                output += os.read(leader, 65536)
            except OSError:
                break
        assert b"Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_a_queued_task_says_how_many_are_ahead_of_it(make_server):
    server = make_server(types={"echo": TYPES["echo"]})
    server.client.post("/worker/", {"host": "t", "pid": 1, "tags": ["unix"]})  # up, never claims
    ids = [server.client.post("/task/", {"type": "echo"})["id"] for _ in range(3)]
    waiting = task(server, ids[2])["waiting"]
    assert waiting["code"] == "busy" and waiting["ahead"] == 2 and "behind 2" in \
        waiting["message"]


# --- a task's own limits -------------------------------------------------------------------

def test_a_submission_sets_its_own_timeout_and_retries_within_its_types_bounds(make_server):
    bounded = ('command = "sleep 30"\ntags = ["unix"]\ntimeout = "1m"\nmax_timeout = "2m"\n'
               'max_retries = 2\n')
    server = make_server(types={"bounded": bounded})
    make_server.worker(server, tags="unix")
    done = blanket("submit", "bounded", "--timeout", "1s", "--retries", "0", "--wait",
                   server=server, ok=False)
    assert done.returncode == 124  # its own 1 s timeout, not the type's minute
    record = task(server, done.stdout.strip())
    assert (record["timeout"], record["retries"]) == (1.0, 0)
    refused = blanket("submit", "bounded", "--timeout", "3m", server=server, ok=False)
    assert refused.returncode == 1 and "max_timeout" in refused.stderr
    status = server.client.request("POST", "/task/", body={"type": "bounded", "retries": 3},
                                   ok=(400,))[0]
    assert status == 400
    assert server.client.get("/task/?count")["count"] == 1  # nothing stored for refusals
