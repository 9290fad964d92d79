"""What a hostile web page, a hostile submitter or a hostile task can try, through a real
server: cross-site writes from a real browser, DNS rebinding, environment names that load
code, active content and symlinks in task files, and secrets leaking anywhere."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from blanket.client import ClientError
from tests.conftest import ServerProcess, wait_until
from tests.e2e.test_web import Browser, require_chromium

ECHO = 'command = "echo hi"\nallow_extra_environment = true\n'
LOADER_NAMES = ["BASH_ENV", "ENV", "PYTHONPATH", "PYTHONSTARTUP", "LD_PRELOAD",
                "LD_LIBRARY_PATH", "PATH", "IFS", "PS4", "SHELLOPTS", "BASHOPTS",
                "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "BASH_FUNC_x%%", "GIT_SSH_COMMAND"]
SECRET = "hunter2-c0rrect-h0rse"
DEFAULT_SECRET = "d3fault-s3cret-value"
# The task prints a digest of what it received, so its log proves it saw both secrets
# without holding either.
SEEN = hashlib.sha256(f"{SECRET}:{DEFAULT_SECRET}".encode()).hexdigest()
SECRETS = f'''
command = 'printf "%s:%s" "$DB_PASSWORD" "$API_KEY" | sha256sum | cut -d" " -f1'

[environment.required]
DB_PASSWORD = {{ description = "the database password", secret = true }}
[environment.defaults]
API_KEY = {{ value = "{DEFAULT_SECRET}", secret = true }}
REGION = "eu"
'''


def request(server: ServerProcess, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        # header names are case-insensitive (granian sends them in lower case)
        return response.status, response.headers, response.read()
    finally:
        conn.close()


# ---- the browser


HOSTILE_PAGE = """<!DOCTYPE html><html><body>
<form id="f" method="POST" action="{url}/task/" target="sink">
  <input name="data" value='{{"type": "echo"}}'>
</form>
<iframe name="sink" id="sink"></iframe>
<script>
window.finished = false;
async function attack() {{
  const sink = document.getElementById("sink");
  const formDone = new Promise(resolve => {{ sink.onload = resolve; }});
  document.getElementById("f").submit();
  await formDone;
  await fetch("{url}/task/", {{ method: "POST", mode: "no-cors",
    headers: {{ "Content-Type": "text/plain" }}, body: '{{"type": "echo"}}' }}).catch(() => {{}});
  const form = new FormData();
  form.append("data", '{{"type": "echo"}}');
  await fetch("{url}/task/", {{ method: "POST", mode: "no-cors", body: form }})
    .catch(() => {{}});
  window.finished = true;
}}
attack();
</script></body></html>"""


@pytest.fixture
def hostile_site(tmp_path: Path) -> Iterator:
    """Factory: a page attacking `url`, served from another origin; returns the page's URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(url: str) -> str:
        page = HOSTILE_PAGE.format(url=url).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/"

    yield serve
    for httpd in servers:
        httpd.shutdown()


def run_attack(page: str, profile: Path) -> None:
    with Browser(profile) as browser:
        browser.open(page)
        browser.wait_for("window.finished === true", timeout=30)


def test_a_page_on_another_site_creates_no_task(make_server, hostile_site, tmp_path):
    require_chromium()
    server = make_server(types={"echo": ECHO})
    run_attack(hostile_site(server.url), tmp_path / "profile")
    assert server.client.get("/task/?count")["count"] == 0


def test_the_same_page_from_an_allowed_origin_does_create_tasks(make_server, hostile_site,
                                                                tmp_path):
    """The control for the test above: the attack's three requests really reach blanket."""
    require_chromium()
    server = make_server(types={"echo": ECHO}, start=False)
    page = hostile_site(server.url)
    server.env["BLANKET_ALLOWED_ORIGINS"] = page.rstrip("/")
    server.start()
    run_attack(page, tmp_path / "profile")
    assert wait_until(lambda: server.client.get("/task/?count")["count"] == 3)


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
])
def test_cross_site_changes_are_refused_with_403(make_server, headers):
    server = make_server(types={"echo": ECHO})
    status, _, body = request(server, "POST", "/task/", b'{"type": "echo"}', headers)
    assert status == 403 and json.loads(body)["error"]["code"] == "cross_origin"
    assert server.client.get("/task/?count")["count"] == 0


def test_the_servers_own_origin_may_write(make_server):
    server = make_server(types={"echo": ECHO})
    status, _, _ = request(server, "POST", "/task/", b'{"type": "echo"}',
                           {"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert status == 201


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8773", "127.0.0.1.nip.io"])
def test_a_foreign_host_header_is_refused_against_dns_rebinding(make_server, host):
    server = make_server(types={"echo": ECHO})
    for method, path in (("GET", "/task/"), ("POST", "/task/")):
        status, _, body = request(server, method, path, b'{"type": "echo"}', {"Host": host})
        assert status == 421, (method, host)
        assert "server_names" in json.loads(body)["error"]["message"]
    assert server.client.get("/task/?count")["count"] == 0


def test_no_answer_is_sniffed_into_another_type(make_server):
    server = make_server()
    for path in ("/task/", "/session", "/nowhere", "/health"):
        assert request(server, "GET", path)[1]["X-Content-Type-Options"] == "nosniff", path


def test_the_page_forbids_inline_script_and_framing(make_server):
    status, headers, _ = request(make_server(), "GET", "/")
    policy = headers["Content-Security-Policy"]
    assert status == 200
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy


# ---- signing in


def login(server: ServerProcess, token: str) -> tuple[str, str]:
    status, headers, body = request(server, "POST", "/login",
                                    json.dumps({"token": token}).encode())
    assert status == 200, body
    cookie = headers["Set-Cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    return cookie.split(";", 1)[0], json.loads(body)["csrf"]


def test_signing_in_with_a_form_body_says_what_to_send(make_server):
    server = make_server()
    status, headers, body = request(server, "POST", "/login", b"token=bkt_x",
                                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "Set-Cookie" not in headers
    assert json.loads(body)["error"]["message"].endswith('send {"token": "bkt_..."} as JSON')


def test_a_signed_in_page_needs_its_csrf_token_to_change_anything(make_server):
    server = make_server(types={"echo": ECHO}, env={"BLANKET_ANONYMOUS": "none"})
    cookie, csrf = login(server, server.token("web-user", "submitter"))
    body = b'{"type": "echo"}'
    assert request(server, "GET", "/task/", headers={"Cookie": cookie})[0] == 200
    assert request(server, "POST", "/task/", body, {"Cookie": cookie})[0] == 403
    assert request(server, "POST", "/task/", body,
                   {"Cookie": cookie, "X-CSRF-Token": "0" * 40})[0] == 403
    status, _, created = request(server, "POST", "/task/", body,
                                 {"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 201 and json.loads(created)["submitted_by"] == "web-user"
    assert request(server, "POST", "/logout", b"{}",
                   {"Cookie": cookie, "X-CSRF-Token": csrf})[0] == 200
    assert request(server, "GET", "/task/", headers={"Cookie": cookie})[0] == 401


def test_revoking_a_token_ends_its_web_sessions(make_server):
    server = make_server(env={"BLANKET_ANONYMOUS": "none"})
    cookie, _ = login(server, server.token("soon-gone", "viewer"))
    assert request(server, "GET", "/task/", headers={"Cookie": cookie})[0] == 200
    server.client.delete("/token/soon-gone")
    assert request(server, "GET", "/task/", headers={"Cookie": cookie})[0] == 401


def test_a_session_cookie_is_not_taken_as_an_api_token(make_server):
    server = make_server(env={"BLANKET_ANONYMOUS": "none"})
    cookie, _ = login(server, server.token("web", "viewer"))
    session = cookie.split("=", 1)[1]
    status, _, _ = request(server, "GET", "/task/", headers={"Authorization": f"Bearer {session}"})
    assert status == 401


# ---- environment names


@pytest.mark.parametrize("name", LOADER_NAMES)
def test_a_submission_may_not_set_a_name_that_loads_code(make_server, name):
    server = make_server(types={"echo": ECHO})
    with pytest.raises(ClientError) as refused:
        server.client.post("/task/", {"type": "echo", "environment": {name: "./evil"}})
    assert refused.value.status == 400
    if "%" not in name:
        assert name in refused.value.message
    assert server.client.get("/task/?count")["count"] == 0


def test_bash_env_with_an_uploaded_script_cannot_run_it(make_server, tmp_path):
    server = make_server(types={"echo": ECHO})
    script = tmp_path / "evil.sh"
    script.write_text("touch /tmp/blanket-pwned-$$\n")
    status, _, body = request(server, "POST", "/task/",
                              *_multipart({"data": '{"type": "echo", "environment": '
                                                   '{"BASH_ENV": "./evil.sh"}}'},
                                          {"evil.sh": script.read_bytes()}))
    assert status == 400 and "BASH_ENV" in json.loads(body)["error"]["message"]


def _multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, dict]:
    boundary = "blanket-test-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, data in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_waiting_request_reads_no_upload_it_cannot_take(make_server):
    """A waiting request's body is read before its route runs: only the route that takes
    uploads (POST /task/) may have one past MAX_JSON (before, any path with a multipart
    type was read, up to 1 GiB, into memory, before its caller was even checked)."""
    server = make_server(types={"echo": ECHO})
    body, headers = _multipart({"data": "x"}, {"big": b"\0" * (3 * 1024 * 1024)})
    status, _, answer = request(server, "POST", "/worker/nobody/claim?wait=1", body, headers)
    assert status == 413, answer
    assert server.client.get("/health")["status"]


def test_a_submission_with_a_large_file_that_waits_for_its_task_keeps_the_file(make_server):
    """Its body is read ahead into a temporary file (past MAX_JSON), then the route runs."""
    server = make_server(types={"echo": ECHO})
    make_server.worker(server)
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB
    body, headers = _multipart({"data": '{"type": "echo"}'}, {"big.bin": data})
    status, _, answer = request(server, "POST", "/task/?wait=60", body, headers)
    assert status == 201, answer
    task = json.loads(answer)
    assert task["state"] == "SUCCESS", task
    status, _, got = request(server, "GET", f"/task/{task['id']}/files/big.bin")
    assert status == 200 and got == data


def test_an_undeclared_name_is_refused_unless_the_type_allows_it(make_server):
    server = make_server(types={
        "strict": 'command = "echo $A"\n[environment.defaults]\nA = "1"\n',
        "globbed": 'command = "echo $X_ONE"\nallow_extra_environment = ["X_*"]\n'})
    with pytest.raises(ClientError) as refused:
        server.client.post("/task/", {"type": "strict", "environment": {"B": "2"}})
    assert "allow_extra_environment" in refused.value.message
    server.client.post("/task/", {"type": "strict", "environment": {"A": "2"}})
    server.client.post("/task/", {"type": "globbed", "environment": {"X_ONE": "2"}})
    with pytest.raises(ClientError):
        server.client.post("/task/", {"type": "globbed", "environment": {"Y": "2"}})


def test_a_type_file_may_still_set_a_loader_name(make_server):
    server = make_server(types={
        "own-path": 'command = "echo $PATH"\n[environment.defaults]\nPATH = "/usr/bin:/bin"\n'})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "own-path"})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    log = server.client.request("GET", f"/task/{task['id']}/log/stdout")[1]
    assert log.strip() == "/usr/bin:/bin"


# ---- task files


def test_uploaded_active_content_is_served_as_a_download(make_server, tmp_path):
    server = make_server(types={"echo": ECHO})
    body, headers = _multipart({"data": '{"type": "echo"}'}, {
        "x.html": b"<script>alert(document.cookie)</script>",
        "x.svg": b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
        "notes.txt": b"plain", "pic.png": b"\x89PNG\r\n\x1a\n"})
    status, _, created = request(server, "POST", "/task/", body, headers)
    assert status == 201
    task_id = json.loads(created)["id"]
    for name in ("x.html", "x.svg"):
        status, headers, data = request(server, "GET", f"/task/{task_id}/files/{name}")
        assert status == 200 and data.startswith(b"<")
        assert headers["Content-Disposition"].startswith("attachment")
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in headers["Content-Security-Policy"]
    status, headers, _ = request(server, "GET", f"/task/{task_id}/files/notes.txt")
    assert headers["Content-Type"].startswith("text/plain")
    assert "Content-Disposition" not in headers
    status, headers, _ = request(server, "GET", f"/task/{task_id}/files/pic.png")
    assert headers["Content-Type"] == "image/png"


def test_a_symlink_made_by_a_task_is_not_followed_out_of_its_directory(make_server, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private data outside the task")
    server = make_server(types={"links": f'command = "ln -s {outside} leak && '
                                         f'ln -s {tmp_path} dirleak && echo ok > inside.txt"'})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "links"})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    for path in ("leak", "dirleak/outside.txt"):
        status, _, body = request(server, "GET", f"/task/{task['id']}/files/{path}")
        assert status in (400, 404) and b"private data" not in body, path
    listed = [f["path"] for f in server.client.get(f"/task/{task['id']}/files/")]
    assert "inside.txt" in listed
    assert not any(p.startswith(("leak", "dirleak")) for p in listed)


# ---- secrets


def test_a_secret_is_seen_by_the_task_and_shown_nowhere(make_server, tmp_path):
    require_chromium()
    server = make_server(types={"secrets": SECRETS})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "secrets",
                                         "environment": {"DB_PASSWORD": SECRET}})
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS"
    assert server.client.request("GET", f"/task/{task['id']}/log/stdout")[1].strip() == SEEN
    rerun = server.client.post(f"/task/{task['id']}/rerun")
    assert server.wait_for_task(rerun["id"])["state"] == "SUCCESS"  # it still has the secret

    seen = {
        "GET /task/": json.dumps(server.client.get("/task/?state=SUCCESS")),
        "GET /task/ID": json.dumps(server.client.get(f"/task/{task['id']}")),
        "task.json": request(server, "GET", f"/task/{task['id']}/files/task.json")[2].decode(),
        "GET /task_type/NAME": json.dumps(server.client.get("/task_type/secrets")),
        "server log": server.log_text(),
        "worker logs": "".join(p.read_text() for p in server.base.glob("worker-*.log")),
    }
    with Browser(tmp_path / "profile") as browser:
        browser.open(server.url + "/")
        browser.wait_for("document.querySelector('#tasks tbody tr[id^=\"task-\"]') !== null")
        seen["web page"] = browser.evaluate("document.documentElement.outerHTML")
    for where, text in seen.items():
        assert SECRET not in text and DEFAULT_SECRET not in text, where
    assert done["environment"]["DB_PASSWORD"] == "***"
    assert done["environment"]["REGION"] == "eu"


def test_a_task_that_points_its_log_elsewhere_does_not_leak_that_file(make_server, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private data outside the task")
    server = make_server(types={"swap": f'command = "rm -f stdout.log && ln -s {outside} '
                                        f'stdout.log"'})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "swap"})
    server.wait_for_task(task["id"])
    status, _, body = request(server, "GET", f"/task/{task['id']}/log/stdout")
    assert status in (400, 404) and b"private data" not in body
    status, _, body = request(server, "GET", f"/task/{task['id']}/log/stdout?follow")
    assert b"private data" not in body
    assert outside.read_text() == "private data outside the task"  # nor wrote through it


def test_an_inbox_entry_cannot_smuggle_in_a_file_through_a_symlink(make_server, tmp_path):
    secret = tmp_path / "server-only.txt"
    secret.write_text("what only the server's user may read")
    server = make_server(types={"echo": ECHO})
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "task.json").write_text('{"type": "echo"}')
    (folder / "loot.txt").symlink_to(secret)
    folder.rename(server.inbox_dir / "drop")
    note = wait_until(lambda: next(iter((server.inbox_dir / "failed").glob("*.error")), None),
                      timeout=20)
    assert "symbolic link" in note.read_text()
    assert server.client.get("/task/?count")["count"] == 0


def test_a_worker_token_cannot_report_on_another_tokens_attempt(make_server):
    server = make_server(types={"echo": ECHO}, env={"BLANKET_ANONYMOUS": "none"})
    mine, other = server.token("w-mine", "worker"), server.token("w-other", "worker")
    first, second = (server.client.post("/task/", {"type": "echo"}) for _ in range(2))
    worker = post_json(server, "/worker/", {"id": "holder", "host": "h", "pid": 1}, mine)[1]
    claimed = post_json(server, f"/worker/{worker['id']}/claim", {}, mine)[1]
    token = claimed["task"]["token"]
    task_id = claimed["task"]["id"]
    for path, body in ((f"/task/{task_id}/started", {"token": token}),
                       (f"/task/{task_id}/heartbeat", {"token": token}),
                       (f"/task/{task_id}/finished", {"token": token, "state": "SUCCESS",
                                                      "claim_next": 2}),
                       (f"/task/{task_id}/release", {"token": token})):
        status, answer = post_json(server, path, body, other)
        assert status == 403, (path, answer)
    status, _, _ = request(server, "POST", f"/task/{task_id}/log/stdout?offset=0", b"x",
                           {"Authorization": f"Bearer {other}", "Blanket-Token": token})
    assert status == 403
    assert server.client.get(f"/task/{second['id']}")["state"] == "QUEUED"  # not taken
    status, done = post_json(server, f"/task/{task_id}/finished",
                             {"token": token, "state": "SUCCESS"}, mine)
    assert status == 200 and done["state"] == "SUCCESS" and first["id"] == task_id


def post_json(server: ServerProcess, path: str, body: dict, token: str) -> tuple[int, dict]:
    status, _, raw = request(server, "POST", path, json.dumps(body).encode(),
                             {"Authorization": f"Bearer {token}"})
    return status, json.loads(raw or b"{}")


def test_a_task_that_prints_its_secrets_shows_them_masked(make_server):
    server = make_server(types={"leaky": f'''
command = """
echo "pw=$DB_PASSWORD key={{{{ API_KEY }}}} token=$BLANKET_TASK_TOKEN"
echo "$DB_PASSWORD" > out.txt
"""
[environment.required]
DB_PASSWORD = {{ description = "pw", secret = true }}
[environment.defaults]
API_KEY = {{ value = "{DEFAULT_SECRET}", secret = true }}
'''})
    make_server.worker(server)
    task = server.client.post("/task/", {"type": "leaky", "environment": {"DB_PASSWORD": SECRET}})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    shown = {
        "log": request(server, "GET", f"/task/{task['id']}/log/stdout")[2],
        "followed log": request(server, "GET", f"/task/{task['id']}/log/stdout?follow")[2],
        "text file": request(server, "GET", f"/task/{task['id']}/files/out.txt")[2],
    }
    for where, body in shown.items():
        assert SECRET.encode() not in body and DEFAULT_SECRET.encode() not in body, where
        assert b"***" in body, where
    assert b"pw=*** key=*** token=" in shown["log"]
    # The attempt's token is masked while it runs; printed and read after the attempt
    # ended, it no longer opens anything.
    old = shown["log"].split(b"token=")[1].split()[0].decode()
    status, _, _ = request(server, "POST", f"/task/{task['id']}/progress",
                           json.dumps({"progress": 5, "token": old}).encode())
    assert status in (403, 409) or old == "***"
    for spelling in (".blanket-command", "./.blanket-command", ".//.blanket-command",
                     "%2E/.blanket-command", "./%2Eblanket-command"):
        status, _, body = request(server, "GET", f"/task/{task['id']}/files/{spelling}")
        assert status == 404 and DEFAULT_SECRET.encode() not in body, spelling
    listed = [f["path"] for f in server.client.get(f"/task/{task['id']}/files/")]
    assert ".blanket-command" not in listed and "out.txt" in listed


def test_a_schedule_passing_a_secret_shows_it_masked(make_server):
    server = make_server(types={"secrets": SECRETS})
    (server.config_dir / "schedules" / "nightly.toml").write_text(
        f'type = "secrets"\nevery = "1h"\n[environment]\nDB_PASSWORD = "{SECRET}"\n'
        'NOTE = "shown"\n')
    found = wait_until(lambda: next((s for s in server.client.get("/schedule/")
                                     if s["name"] == "nightly"), None))
    one = server.client.get("/schedule/nightly")
    for shown in (found, one):
        assert shown["definition"]["environment"] == {"DB_PASSWORD": "***", "NOTE": "shown"}
    assert SECRET not in json.dumps(server.client.get("/schedule/"))


# ---- the inputs added with listings, prune, notifications, stats and per-task limits

LONG = "x" * 201


@pytest.mark.parametrize("method, path, body", [
    ("GET", f"/task/?q={LONG}", None),
    ("GET", "/task/?sort=bogus", None),
    ("GET", "/task/?order=sideways", None),
    ("GET", f"/task/?worker={LONG}&by={LONG}", None),
    ("GET", "/task/?added_after=-nonsense", None),
    ("GET", "/task/1?wait=NaN", None),
    ("GET", "/task/1?wait=1e999", None),
    ("GET", "/stats?window=week", None),
    ("GET", "/task/999999999999999999999/notifications", None),
    ("POST", "/prune?older_than=nonsense", b""),
    ("POST", "/prune?older_than=-5d", b""),
    ("POST", f"/prune?type={LONG}", b""),
    ("POST", "/task/", b'{"type": "echo", "timeout": "1e999"}'),
    ("POST", "/task/", b'{"type": "echo", "retry_delay": -1}'),
    ("POST", "/task/", b'{"type": "echo", "retries": 1001}'),
    ("POST", "/task/", b'{"type": "echo", "after": [99999999999999999999]}'),
    ("POST", "/task/", b'{"type": "echo", "after_policy": "sometimes"}'),
    ("POST", "/tasks/echo/", b'{"1BAD": "x"}'),
    ("POST", "/tasks/echo/", json.dumps({f"V{n}": "x" for n in range(1001)}).encode()),
    ("POST", "/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
                     b'{"name": "submit_task", "arguments": {"type": "echo", '
                     b'"after": [99999999999999999999]}}}'),
    ("GET", f"/task_type/{LONG}/versions", None),
])
def test_a_wrong_value_of_a_new_input_is_refused_saying_what_to_fix(make_server, method, path,
                                                                     body):
    server = make_server(types={"echo": 'command = "true"\n'})
    status, _, raw = request(server, method, path, body,
                                   {"Content-Type": "application/json"})
    assert 400 <= status < 500 or (path == "/mcp" and status == 200), (status, raw)
    answer = json.loads(raw)
    if path == "/mcp":  # a tool's refusal is a result the agent reads, not a server failure
        assert answer["result"]["isError"], answer
        message = answer["result"]["content"][0]["text"]
    else:
        message = answer["error"]["message"]
    assert message and "Traceback" not in message
    assert server.client.get("/task/") == []  # nothing was stored


NAMES = r"""command = '''touch ok.txt "$(printf 'bad\377\376')" "$(printf 'new\nline')" \
  "$(printf 'tab\tbed')"'''
"""


def test_files_a_task_names_so_no_url_can_ask_for_them_are_not_listed(make_server):
    """A name that is not UTF-8, or holds a newline, made the page's file list (and the logs
    shown after it) fail: the listing leaves them out."""
    server = make_server(types={"names": NAMES})
    make_server.worker(server)
    task = server.client.post("/task/?wait=30", {"type": "names"})
    assert task["state"] == "SUCCESS", task
    folder = server.data_dir / "tasks" / "names" / str(task["id"])
    assert len([p for p in folder.iterdir() if p.name not in ("stdout.log", "stderr.log")]) >= 4
    listed = [f["path"] for f in server.client.get(f"/task/{task['id']}/files/")]
    assert "ok.txt" in listed
    assert not [name for name in listed if any(ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF
                                                for c in name)], listed
