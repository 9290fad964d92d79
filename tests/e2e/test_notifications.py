"""Notifications end to end: a real server and worker, [[notify]] blocks in a type file and
blanket.toml, and a real HTTP receiver in this process that fails for a while: every
notification arrives once (by its delivery id), signed; Slack's shape; a command target;
a server killed before it could deliver delivers after its restart."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_cli import blanket
from tests.e2e.test_web import Browser, require_chromium
from tests.store.conftest import fresh_postgres_database

SECRET = "s3cret-for-the-test"


class Receiver:
    """An HTTP receiver: answers 500 to the first `failures` requests (or while `failing`),
    then 200, recording every request (path, headers, body, status answered)."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.failing = False
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 500 if receiver.failing or receiver.failures > 0 else 200
                    receiver.failures -= 1
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["status"] == 200]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.close()


def verify(request: dict) -> None:
    """The request's Blanket-Signature is the HMAC of its timestamp and exact body."""
    headers = request["headers"]
    timestamp = headers["Blanket-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request["body"],
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["Blanket-Signature"], f"sha256={expected}")


def notifications(server, task_id: int) -> list[dict]:
    return server.client.get(f"/task/{task_id}/notifications")["notifications"]


def all_delivered(server, task_id: int, count: int) -> list[dict] | None:
    found = notifications(server, task_id)
    return found if len(found) == count and all(
        n["state"] == "delivered" for n in found) else None


FAILING = '''
command = "echo 'Traceback: it broke' >&2; echo \\"token $TOKEN\\" >&2; exit 3"
[environment.defaults]
TOKEN = { value = "hunter2hunter2", secret = true }
[[notify]]
on = ["failed"]
url = "RECEIVER/slack/T000/B000/XXXX"
format = "slack"
secret_env = "HOOK_SECRET"
[[notify]]
on = ["failed", "timedout"]
url = "RECEIVER/hook"
secret_env = "HOOK_SECRET"
'''


def test_each_notification_arrives_once_signed_after_the_receiver_failed(make_server, receiver):
    hook = receiver(failures=4)
    server = make_server(start=False, env={"HOOK_SECRET": SECRET})
    # blanket.toml's block names the same target as the type's second block: sent once.
    (server.base / "blanket.toml").write_text(
        f'[[notify]]\non = ["failed", "timedout", "success", "stopped"]\n'
        f'url = "{hook.url}/hook"\nsecret_env = "HOOK_SECRET"\n')
    server.write_type("breaks", FAILING.replace("RECEIVER", hook.url))
    server.write_type("fine", 'command = "echo fine"\n')
    server.write_type("slow", 'command = "sleep 30"\ntimeout = "1s"\n')
    server.write_type("nowhere", 'command = "true"\ntags = ["no-such-worker"]\n')
    server.start()
    make_server.worker(server, tags="bash")
    ids = {name: server.client.post("/task/", {"type": name})["id"]
           for name in ("breaks", "fine", "slow", "nowhere")}
    server.client.post(f"/task/{ids['nowhere']}/stop")
    expected = {"breaks": 2, "fine": 1, "slow": 1, "nowhere": 1}
    shown = {name: wait_until(lambda n=name: all_delivered(server, ids[n], expected[n]),
                              timeout=60) for name in ids}

    accepted = hook.accepted()
    by_id: dict[str, list[dict]] = {}
    for request in accepted:
        by_id.setdefault(request["headers"]["Blanket-Delivery"], []).append(request)
    assert sorted(map(int, by_id)) == sorted(n["id"] for ns in shown.values() for n in ns)
    assert all(len(requests) == 1 for requests in by_id.values()), "a delivery arrived twice"
    assert sum(r["status"] == 500 for r in hook.requests) == 4
    assert any(n["attempts"] > 1 for ns in shown.values() for n in ns)  # retried after 500s
    for request in accepted:
        verify(request)

    events = {}
    for request in accepted:
        if request["path"] == "/hook":
            body = json.loads(request["body"])
            events[body["task"]["id"]] = body
            assert request["headers"]["Blanket-Event"] == body["event"]
    assert {i: events[i]["event"] for i in ids.values()} == {
        ids["breaks"]: "failed", ids["fine"]: "success", ids["slow"]: "timedout",
        ids["nowhere"]: "stopped"}
    broke = events[ids["breaks"]]
    assert broke["task"]["exit_code"] == 3 and broke["task"]["environment"]["TOKEN"] == "***"
    assert "Traceback: it broke" in broke["stderr_tail"]
    assert "hunter2hunter2" not in json.dumps(broke) and "token ***" in broke["stderr_tail"]
    assert broke["url"] == f"{server.url}/#/task/{ids['breaks']}"

    slack = [r for r in accepted if r["path"].startswith("/slack/")]
    assert len(slack) == 1
    text = json.loads(slack[0]["body"])
    assert list(text) == ["text"]
    assert f"task {ids['breaks']} (breaks) failed, exit code 3" in text["text"]
    assert "Traceback: it broke" in text["text"]

    listed = {n["target"] for n in shown["breaks"]}
    assert listed == {"http://127.0.0.1/…"}  # the path (a Slack credential) is never shown
    assert all(n["result"] == "HTTP 200" for ns in shown.values() for n in ns)
    log = server.log_text()
    assert "notification delivered" in log and "Traceback" not in log
    # Counted just after the store records the delivery (only one that stuck counts): the
    # store's record may be read a moment before.
    wanted = (f'blanket_notifications_delivered_total{{kind="webhook"}} {len(accepted)}.0',
              'blanket_notification_failures_total{kind="webhook"} 4.0')
    wait_until(lambda: all(line in server.client.get("/metrics") for line in wanted),
               timeout=10)


def test_a_command_target_runs_on_the_server_with_the_record_on_stdin(make_server,
                                                                       tmp_path: Path):
    out = tmp_path / "notified"
    out.mkdir()
    server = make_server(start=False, env={"NOTIFY_OUT": str(out)})
    (server.base / "blanket.toml").write_text(
        '[[notify]]\non = ["success"]\n'
        'run = "cat > \\"$NOTIFY_OUT/$BLANKET_TASK_ID-$BLANKET_EVENT.json\\"; echo kept"\n')
    server.write_type("fine", 'command = "echo fine"\n')
    server.start()
    make_server.worker(server, tags="bash")
    task_id = server.client.post("/task/", {"type": "fine"})["id"]
    shown = wait_until(lambda: all_delivered(server, task_id, 1), timeout=30)
    assert shown[0]["kind"] == "command" and shown[0]["result"] == "exit 0: kept"
    body = json.loads((out / f"{task_id}-success.json").read_text())
    assert body["event"] == "success" and body["task"]["state"] == "SUCCESS"
    shown = blanket("inspect", str(task_id), server=server).stdout
    assert ("notification  success -> run: cat …: delivered (attempts 1, last: exit 0: kept)"
            in shown)


def test_a_server_killed_before_delivering_delivers_after_restart(make_server, receiver):
    hook = receiver()
    hook.failing = True
    server = make_server(start=False)
    server.write_type("breaks", f'command = "exit 1"\n[[notify]]\non = ["failed"]\n'
                                f'url = "{hook.url}/hook"\n')
    server.start()
    make_server.worker(server, tags="bash")
    task_id = server.client.post("/task/", {"type": "breaks"})["id"]
    # The first attempt was answered 500 and recorded: the notification waits for its retry.
    wait_until(lambda: [n for n in notifications(server, task_id)
                        if n["result"] == "HTTP 500"], timeout=30)
    server.kill()
    hook.failing = False
    server.start()
    shown = wait_until(lambda: all_delivered(server, task_id, 1), timeout=30)
    accepted = hook.accepted()
    assert [r["headers"]["Blanket-Delivery"] for r in accepted] == [str(shown[0]["id"])]
    assert "Traceback" not in server.log_text()
    assert json.loads(accepted[0]["body"])["task"]["id"] == task_id


def test_the_task_page_lists_its_notifications_as_text(make_server, tmp_path: Path):
    require_chromium()
    server = make_server(start=False)
    (server.base / "blanket.toml").write_text(
        '[[notify]]\non = ["success"]\nrun = "echo \'<b id=injected>hi</b>\'"\n')
    server.write_type("fine", 'command = "echo fine"\n[[notify]]\non = ["failed"]\n'
                              'url = "http://127.0.0.1:9/the/secret/path"\n')
    server.start()
    make_server.worker(server, tags="bash")
    task_id = server.client.post("/task/", {"type": "fine"})["id"]
    wait_until(lambda: all_delivered(server, task_id, 1), timeout=30)
    with Browser(tmp_path / "chromium") as browser:
        browser.open(f"{server.url}/#/type/fine")
        browser.wait_for("document.querySelector('#y-fields')?.textContent.includes('notify')")
        fields = browser.evaluate("document.querySelector('#y-fields').textContent")
        assert "failed → http://127.0.0.1/…" in fields and "secret" not in fields
        browser.open(f"{server.url}/#/task/{task_id}")
        browser.wait_for("document.querySelector('#t-notifications tbody')"
                         "?.textContent.includes('delivered')")
        row = browser.evaluate("document.querySelector('#t-notifications tbody').textContent")
        assert "success" in row and "exit 0: <b id=injected>hi</b>" in row
        assert browser.evaluate("document.getElementById('injected') === null")


def test_two_servers_on_one_postgresql_send_each_notification_once(make_server, receiver,
                                                                    tmp_path: Path):
    hook = receiver(failures=6)
    with fresh_postgres_database() as url:
        env = {"BLANKET_DATABASE": url, "HOOK_SECRET": SECRET}
        block = (f'[[notify]]\non = ["failed", "success"]\nurl = "{hook.url}/hook"\n'
                 'secret_env = "HOOK_SECRET"\n')
        types = {"fine": 'command = "echo fine"\n' + block,
                 "breaks": 'command = "exit 2"\n' + block}
        one = make_server(types=types, base=tmp_path / "one", env=env)
        two = make_server(types=types, base=tmp_path / "two", env=env)
        make_server.worker(one, tags="bash")
        make_server.worker(two, tags="bash")
        ids = [server.client.post("/task/", {"type": kind})["id"]
               for server in (one, two) for kind in ("fine", "breaks") for _ in range(5)]
        for task_id in ids:
            wait_until(lambda t=task_id: all_delivered(one, t, 1), timeout=60)
        accepted = [r["headers"]["Blanket-Delivery"] for r in hook.accepted()]
        assert len(accepted) == len(ids) == len(set(accepted))  # each once, through either
        for request in hook.accepted():
            verify(request)
        for server in (one, two):
            assert "Traceback" not in server.log_text()
            server.stop()


def test_a_task_whose_worker_died_is_notified_as_lost(make_server, receiver):
    hook = receiver()
    server = make_server(types={"hangs": f'command = "sleep 60"\n[[notify]]\non = ["lost"]\n'
                                         f'url = "{hook.url}/hook"\n'})
    worker = make_server.worker(server, tags="bash")
    task_id = server.client.post("/task/", {"type": "hangs"})["id"]
    server.wait_for_task(task_id, states=("RUNNING",))
    worker.stop(signal.SIGKILL)  # its heartbeats stop: the reaper ends the task
    shown = wait_until(lambda: all_delivered(server, task_id, 1), timeout=30)
    assert shown[0]["event"] == "lost"
    (request,) = hook.accepted()
    body = json.loads(request["body"])
    assert body["event"] == "lost" and body["task"]["state"] == "FAILED"
    assert "its worker died 1 time" in body["task"]["error"]


def test_a_task_cannot_make_its_notification_quote_a_file_outside_its_folder(make_server,
                                                                              tmp_path: Path):
    """A task that swaps its error log for a link to a server file: the notification's tail
    is not read through it (as the log routes refuse it)."""
    secret = tmp_path / "server-only.txt"
    secret.write_text("db_password=HUNTER2-SERVER-ONLY\n")
    out = tmp_path / "notified.json"
    server = make_server(start=False)
    server.write_type("evil", f'command = "echo before >&2; rm -f stderr.log; '
                              f'ln -s {secret} stderr.log; exit 1"\n'
                              f'[[notify]]\non = ["failed"]\nrun = "cat > {out}"\n')
    server.start()
    make_server.worker(server)
    server.client.post("/task/", {"type": "evil"})
    wait_until(lambda: out.exists() and out.stat().st_size > 0, timeout=30)
    body = json.loads(out.read_text())
    assert body["event"] == "failed" and "HUNTER2" not in json.dumps(body)


def test_a_receiver_that_never_answers_holds_up_no_other_notification(make_server, receiver):
    """A target that takes its connection and answers nothing keeps one sender until its
    timeout; a notification to another target that comes later is sent meanwhile."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # accepted by the kernel, never answered
    fast = receiver()
    server = make_server(start=False)
    port = hole.getsockname()[1]
    server.write_type("stuck", f'command = "exit 1"\n[[notify]]\non = ["failed"]\n'
                               f'url = "http://127.0.0.1:{port}/x"\ntimeout = "60s"\n')
    server.write_type("quick", f'command = "exit 1"\n[[notify]]\non = ["failed"]\n'
                               f'url = "{fast.url}/y"\n')
    server.start()
    make_server.worker(server)
    try:
        stuck = server.client.post("/task/?wait=30", {"type": "stuck"})
        wait_until(lambda: notifications(server, stuck["id"])[0]["attempts"] >= 1,
                   timeout=10)  # its sender is now waiting on the hole
        quick = server.client.post("/task/?wait=30", {"type": "quick"})
        wait_until(lambda: fast.accepted(), timeout=10)
        assert json.loads(fast.accepted()[0]["body"])["task"]["id"] == quick["id"]
        [held] = notifications(server, stuck["id"])
        assert held["state"] == "pending"
    finally:
        hole.close()
