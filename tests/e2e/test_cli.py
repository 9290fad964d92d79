"""The client commands of `blanket` (submit, task run, ps, rm, stop) against a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BLANKET = str(Path(sys.executable).parent / "blanket")
TYPES = {
    "echo": 'command = "echo {{ WORD }}"\ntags = ["unix"]\n[environment.defaults]\nWORD = "hi"\n',
    "count": ('command = "seq {{ N }}"\ntags = ["unix"]\n'
              '[environment.required]\nN = { description = "how far", type = "integer" }\n'),
}


@pytest.fixture
def server(make_server):
    return make_server(types=TYPES)


def blanket(*args: str, server=None, env: dict[str, str] | None = None,
            cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """Run the installed `blanket` command; `server` is passed with --server."""
    command = [BLANKET, *(["--server", server.url] if server else []), *args]
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BLANKET_SERVER", "BLANKET_SETTINGS")}
    done = subprocess.run(command, env={**environ, **(env or {})}, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def simulate_worker(server, state: str = "SUCCESS") -> threading.Thread:
    """A thread that claims one task over HTTP and reports it ended in `state`."""
    def work() -> None:
        worker = server.client.post("/worker/", {"host": "t", "pid": 1, "tags": ["unix"]})
        task = server.client.post(f"/worker/{worker['id']}/claim?wait=30")["task"]
        server.client.post(f"/task/{task['id']}/started", {"token": task["token"]})
        server.client.post(f"/task/{task['id']}/finished", {
            "token": task["token"], "state": state, "exit_code": 0 if state == "SUCCESS" else 3})
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def task(server, task_id: str | int) -> dict:
    return server.client.get(f"/task/{int(task_id)}")


# --- submit --------------------------------------------------------------------------------

def test_submit_prints_the_new_task_id(server):
    out = blanket("submit", "echo", "-d", '{"environment": {"WORD": "yo"}}', server=server).stdout
    assert task(server, out.strip())["environment"] == {"WORD": "yo"}


def test_submit_takes_a_bare_environment_object(server):
    out = blanket("submit", "count", "-d", '{"N": 3}', server=server).stdout
    assert task(server, out)["environment"] == {"N": "3"}


def test_submit_takes_request_fields_such_as_tags(server):
    out = blanket("submit", "echo", "-d", '{"tags": ["fast"]}', server=server).stdout
    assert task(server, out)["tags"] == ["fast", "unix"]


def test_submit_reads_data_from_a_file(server, tmp_path):
    (tmp_path / "task.json").write_text('{"environment": {"N": 9}}')
    out = blanket("submit", "count", "-d", "@task.json", server=server, cwd=tmp_path).stdout
    assert task(server, out)["environment"] == {"N": "9"}


def test_submit_with_files_puts_them_in_the_task_directory(server, tmp_path):
    (tmp_path / "in.txt").write_text("payload")
    out = blanket("submit", "echo", "-f", str(tmp_path / "in.txt"), server=server).stdout
    folder = server.data_dir / "tasks" / "echo" / out.strip()
    assert (folder / "in.txt").read_text() == "payload"


def test_a_file_called_data_is_a_file_like_any_other(server, tmp_path):
    (tmp_path / "data").write_text("not the task")
    out = blanket("submit", "echo", "-f", str(tmp_path / "data"), server=server).stdout
    assert (server.data_dir / "tasks" / "echo" / out.strip() / "data").read_text() == \
        "not the task"


@pytest.mark.parametrize(("args", "words"), [
    (("-f", "a/x", "-f", "b/x"), "two files are called 'x'"),
    (("-f", "f\udcff.txt"), "the file name 'f\\xff.txt' is not UTF-8; rename the file"),
    (("-d", "{" + '"a": {' * 5000 + "}" * 5000 + "}"), "the data nests too deeply"),
    (("-d", "@missing.json"), "cannot read missing.json: No such file or directory"),
    (("-d", '{"priority": NaN}'), "the data is not valid JSON: NaN is not a JSON number"),
])
def test_submit_refuses_files_and_data_it_cannot_send_saying_why(server, tmp_path, args, words):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x").write_text(folder)
    (tmp_path / os.fsdecode(b"f\xff.txt")).write_text("odd name")
    done = blanket("submit", "echo", *args, server=server, cwd=tmp_path, ok=False)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert server.client.get("/task/?count")["count"] == 0


def test_task_run_is_submit(server):
    out = blanket("task", "run", "count", "-d", '{"N": 1}', server=server).stdout
    assert task(server, out)["type"] == "count"


def test_submit_wait_prints_the_id_then_the_end(server):
    worker = simulate_worker(server)
    done = blanket("submit", "echo", "--wait", server=server)
    worker.join(10)
    task_id = done.stdout.strip()
    assert task(server, task_id)["state"] == "SUCCESS"
    assert f"task {task_id} SUCCESS" in done.stderr  # not a terminal: plain lines


def test_submit_wait_exits_with_the_tasks_exit_code_and_shows_its_log(server):
    worker = simulate_worker(server, state="FAILED")  # reports exit code 3
    done = blanket("submit", "echo", "--wait", server=server, ok=False)
    worker.join(10)
    assert done.returncode == 3 and task(server, done.stdout.strip())["state"] == "FAILED"
    assert "FAILED (exit code 3)" in done.stderr


def test_submit_refused_prints_the_reason_without_a_traceback(server):
    done = blanket("submit", "count", server=server, ok=False)
    assert done.returncode == 1
    assert "N (how far)" in done.stderr and "Traceback" not in done.stderr
    assert server.client.get("/task/?count")["count"] == 0


def test_submit_with_bad_json_is_a_usage_error(server):
    done = blanket("submit", "echo", "-d", "{oops", server=server, ok=False)
    assert done.returncode == 2 and "not valid JSON" in done.stderr


# --- ps ------------------------------------------------------------------------------------

def submit_three(server) -> list[int]:
    ids = [server.client.post("/task/", {"type": "echo"})["id"] for _ in range(2)]
    ids.append(server.client.post("/task/", {"type": "count", "environment": {"N": 1}})["id"])
    return ids


def test_ps_quiet_lists_queued_ids_newest_first(server):
    ids = submit_three(server)
    server.client.post(f"/task/{ids[0]}/stop")
    assert blanket("ps", "-q", server=server).stdout.split() == [str(i) for i in ids[:0:-1]]


def test_ps_all_includes_ended_tasks(server):
    ids = submit_three(server)
    server.client.post(f"/task/{ids[0]}/stop")
    assert blanket("ps", "-a", "-q", server=server).stdout.split() == [str(i) for i in ids[::-1]]


def test_ps_filters_by_state_and_type(server):
    ids = submit_three(server)
    server.client.post(f"/task/{ids[0]}/stop")
    assert blanket("ps", "-q", "-s", "STOPPED", server=server).stdout.split() == [str(ids[0])]
    assert blanket("ps", "-q", "-t", "count", server=server).stdout.split() == [str(ids[2])]


def test_ps_columns_are_aligned(server):
    submit_three(server)
    for _ in range(8):
        server.client.post("/task/", {"type": "echo"})  # two-digit ids
    lines = blanket("ps", server=server).stdout.splitlines()
    header = lines[0]
    starts = [header.index(name) for name in ("TYPE", "STATE", "ADDED")]
    assert len(lines) == 12
    for line in lines[1:]:
        for start in starts:
            assert line[start - 2:start] == "  " and line[start] != " ", line


# --- rm and stop ---------------------------------------------------------------------------

def test_rm_removes_each_task_given(server):
    ids = submit_three(server)
    out = blanket("rm", str(ids[0]), str(ids[2]), server=server).stdout
    assert out.split() == [str(ids[0]), str(ids[2])]
    assert [t["id"] for t in server.client.get("/task/")] == [ids[1]]


def test_rm_of_a_running_task_needs_force(server):
    task_id = server.client.post("/task/", {"type": "echo"})["id"]
    worker = server.client.post("/worker/", {"host": "t", "pid": 1, "tags": ["unix"]})
    claimed = server.client.post(f"/worker/{worker['id']}/claim")["task"]
    server.client.post(f"/task/{task_id}/started", {"token": claimed["token"]})
    refused = blanket("rm", str(task_id), server=server, ok=False)
    assert refused.returncode == 1 and "-f" in refused.stderr
    blanket("rm", "-f", str(task_id), server=server)
    assert server.client.request("GET", f"/task/{task_id}", ok=(404,))[0] == 404


def test_rm_of_an_unknown_id_fails_and_says_so(server):
    done = blanket("rm", "424242", server=server, ok=False)
    assert done.returncode == 1 and "424242" in done.stderr


def test_stop_ends_a_queued_task(server):
    task_id = server.client.post("/task/", {"type": "echo"})["id"]
    assert blanket("stop", str(task_id), server=server).stdout.split() == [str(task_id),
                                                                           "STOPPED"]


# --- finding the server -------------------------------------------------------------------

def test_server_from_blanket_server_variable(server):
    server.client.post("/task/", {"type": "echo"})
    assert blanket("ps", "-q", env={"BLANKET_SERVER": server.url}).stdout.strip() != ""


def test_server_flag_wins_over_the_variable(server):
    server.client.post("/task/", {"type": "echo"})
    done = blanket("ps", "-q", server=server, env={"BLANKET_SERVER": "http://127.0.0.1:9"})
    assert done.stdout.strip() != ""


def test_server_from_the_settings_file(server, tmp_path):
    server.client.post("/task/", {"type": "echo"})
    (tmp_path / "blanket.toml").write_text(f"port = {server.port}\n")
    assert blanket("ps", "-q", cwd=tmp_path).stdout.strip() != ""


def test_no_server_is_a_clear_error_not_a_traceback(tmp_path):
    done = blanket("--server", "http://127.0.0.1:9", "ps", cwd=tmp_path, ok=False)
    assert done.returncode == 1
    assert "cannot reach the blanket server" in done.stderr and "Traceback" not in done.stderr



def test_tokens_are_made_listed_and_revoked_from_the_command_line(make_server, tmp_path):
    server = make_server(types=TYPES, env={"BLANKET_ANONYMOUS": "none"})
    admin = {"BLANKET_TOKEN": server.admin_token}
    made = blanket("token", "create", "ci", "--role", "submitter", "--types", "ec*",
                   "--expires", "30d", server=server, env=admin)
    secret = made.stdout.strip()
    assert secret.startswith("bkt_") and "shown only now" in made.stderr
    listed = blanket("token", "ls", server=server, env=admin).stdout
    assert "ci" in listed and "submitter" in listed and secret not in listed
    as_json = json.loads(blanket("token", "ls", "--json", server=server, env=admin).stdout)
    assert "ci" in [t["name"] for t in as_json] and secret not in json.dumps(as_json)
    assert "ci" in blanket("token", "ls", "-q", server=server, env=admin).stdout.split()
    as_ci = {"BLANKET_TOKEN": secret}
    blanket("submit", "echo", server=server, env=as_ci)
    refused = blanket("submit", "count", "-e", "N=2", server=server, env=as_ci, ok=False)
    assert refused.returncode != 0 and "may not submit" in refused.stderr
    assert " ci" in blanket("ps", server=server, env=as_ci).stdout
    blanket("token", "revoke", "ci", server=server, env=admin)
    after = blanket("ps", server=server, env=as_ci, ok=False)
    assert after.returncode != 0 and "revoked" in after.stderr


def test_without_a_token_a_closed_server_explains_what_to_send(make_server, tmp_path):
    server = make_server(types=TYPES, env={"BLANKET_ANONYMOUS": "none"})
    done = blanket("ps", server=server, cwd=tmp_path, ok=False)
    assert done.returncode != 0 and "BLANKET_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_cli_beside_a_server_uses_its_admin_token_by_itself(make_server):
    server = make_server(types=TYPES, env={"BLANKET_ANONYMOUS": "none"})
    # Run from the server's folder: the settings' data dir (var) holds the admin token.
    listed = blanket("token", "ls", server=server, cwd=server.base,
                     env={"BLANKET_DATA_DIR": str(server.data_dir)})
    assert "local-admin" in listed.stdout


def test_the_local_admin_token_is_never_sent_to_another_server(make_server, tmp_path):
    import http.server

    server = make_server(types=TYPES)
    seen: list[str | None] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        # A settings file in a cloned repository names another server; the data dir is ours.
        (tmp_path / "blanket.toml").write_text(
            f'server_url = "http://127.0.0.1:{other.server_address[1]}"\n')
        blanket("ps", cwd=tmp_path, env={"BLANKET_DATA_DIR": str(server.data_dir)})
    finally:
        other.shutdown()
    assert seen == [None]


def test_submit_from_a_file_stores_its_tasks_together_and_prints_their_ids(make_server,
                                                                             tmp_path: Path):
    server = make_server(types={"count": 'command = "echo {{ N }}"\n[environment.defaults]\n'
                                         'N = "0"\n'})
    (tmp_path / "tasks.json").write_text(json.dumps(
        [{"type": "count", "environment": {"N": n}} for n in range(3)]))
    ids = blanket("submit", "--from", "tasks.json", server=server, cwd=tmp_path).stdout.split()
    assert [server.client.get(f"/task/{i}")["environment"]["N"] for i in ids] == ["0", "1", "2"]
    ndjson = '{"type": "count"}\n{"type": "count", "environment": {"N": 9}}\n'
    done = subprocess.run([BLANKET, "--server", server.url, "submit", "--from", "-"],
                          input=ndjson, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and len(done.stdout.split()) == 2


def test_submit_from_a_file_with_wrong_tasks_names_each_and_stores_none(make_server,
                                                                          tmp_path: Path):
    server = make_server(types={"count": 'command = "echo hi"\n'})
    (tmp_path / "tasks.ndjson").write_text(
        '{"type": "count"}\n{"type": "nope"}\n{"type": "count", "priority": "high"}\n')
    done = blanket("submit", "--from", "tasks.ndjson", server=server, cwd=tmp_path, ok=False)
    assert done.returncode == 1
    assert "task 1: unknown task type 'nope'" in done.stderr
    assert "task 2: priority" in done.stderr
    assert server.client.get("/task/?count")["count"] == 0
    mixed = blanket("submit", "count", "--from", "tasks.ndjson", server=server, cwd=tmp_path,
                    ok=False)
    assert mixed.returncode == 2 and "--from takes its tasks from the file alone" in mixed.stderr


def test_a_port_in_use_names_the_flag_and_the_variable(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        done = blanket("server", "--port", str(port), "--data-dir", str(tmp_path / "var"),
                       "--config-dir", str(tmp_path / "conf.d"), "--inbox-dir",
                       str(tmp_path / "inbox"), cwd=tmp_path, ok=False)
    finally:
        taken.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--port" in done.stderr and "BLANKET_PORT" in done.stderr
