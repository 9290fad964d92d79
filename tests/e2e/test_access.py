"""Who may call what, through a real server: every route's least role, every role against
every route, revoked and expired tokens, scopes on types and tags, and the local admin."""

from __future__ import annotations

import base64
import http.client
import json
import stat

import bottle
import pytest

from blanket.client import Client, ClientError
from blanket.server.api.access import check_routes
from tests.conftest import ServerProcess, wait_until

ECHO = 'command = "echo hi"\n[environment.defaults]\nMSG = "x"\n'
GPU = 'command = "echo gpu"\ntags = ["b"]\n'

# The specification: the least role each route needs. A route added without a line here
# fails test_every_route_is_in_the_specification.
SPEC = {
    ("GET", "/"): "public",
    ("GET", "/web/<name:path>"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/health"): "public",
    ("GET", "/session"): "public",
    ("POST", "/login"): "public",
    ("POST", "/logout"): "public",
    ("GET", "/metrics"): "viewer",
    ("GET", "/stats"): "viewer",
    # MCP: the route lets viewers in; each tool checks its own role (test_mcp.py).
    ("POST", "/mcp"): "viewer",
    ("GET", "/mcp"): "viewer",
    ("DELETE", "/mcp"): "viewer",
    ("GET", "/task/"): "viewer",
    ("GET", "/task/<task_id>"): "viewer",
    ("POST", "/tasks/<type_name>/"): "submitter",
    ("GET", "/task/<task_id>/log/<stream>"): "viewer",
    ("GET", "/task/<task_id>/notifications"): "viewer",
    ("GET", "/task/<task_id>/files/"): "viewer",
    ("GET", "/task/<task_id>/files/<path:path>"): "viewer|worker",
    ("GET", "/task_type/"): "viewer",
    ("GET", "/task_type/<name>"): "viewer",
    ("GET", "/task_type/<name>/versions"): "viewer",
    ("GET", "/schedule/"): "viewer",
    ("GET", "/schedule/<name>"): "viewer",
    ("GET", "/worker/"): "viewer",
    ("GET", "/worker/<worker_id>"): "viewer",
    ("POST", "/task/"): "submitter",
    ("DELETE", "/task/<task_id>"): "submitter",
    ("POST", "/task/<task_id>/stop"): "submitter",
    ("POST", "/task/<task_id>/rerun"): "submitter",
    ("POST", "/task/<task_id>/progress"): "operator",
    ("POST", "/schedule/<name>/run"): "operator",
    ("POST", "/schedule/<name>/pause"): "operator",
    ("POST", "/schedule/<name>/resume"): "operator",
    ("POST", "/prune"): "operator",
    ("GET", "/workflow/"): "viewer",
    ("GET", "/workflow/<name>"): "viewer",
    # Also the token's type scopes: every step's type (test_workflows.py).
    ("POST", "/workflow/<name>/run"): "submitter",
    ("GET", "/run/"): "viewer",
    ("GET", "/run/<run_id>"): "viewer",
    ("GET", "/run/<run_id>/tasks"): "viewer",
    # A submitter stops and reruns only the runs it started (test_workflows.py).
    ("POST", "/run/<run_id>/stop"): "submitter",
    ("POST", "/run/<run_id>/rerun"): "submitter",
    ("POST", "/worker/<worker_id>/pause"): "operator",
    ("POST", "/worker/<worker_id>/resume"): "operator",
    ("DELETE", "/worker/<worker_id>"): "operator|worker",
    ("GET", "/version/<name>"): "admin|worker",  # bundles hold secret defaults
    ("POST", "/worker/"): "worker",
    ("POST", "/worker/<worker_id>/claim"): "worker",
    ("POST", "/task/<task_id>/started"): "worker",
    ("POST", "/task/<task_id>/heartbeat"): "worker",
    ("POST", "/task/<task_id>/finished"): "worker",
    ("POST", "/exchange"): "worker",
    ("POST", "/task/<task_id>/release"): "worker",
    ("POST", "/task/<task_id>/outputs"): "worker",
    ("POST", "/task/<task_id>/log/<stream>"): "worker",
    ("GET", "/token/"): "admin",
    ("POST", "/token/"): "admin",
    ("DELETE", "/token/<name>"): "admin",
}
RANKED = ("viewer", "submitter", "operator", "admin")
# Placeholders that name nothing: an allowed caller gets a 4xx about the input, never 401/403.
FILL = {"task_id": "999999", "stream": "stdout", "path": "x.txt", "name": "nothing-here",
        "type_name": "nothing-here", "worker_id": "nobody", "path:path": "x.txt",
        "run_id": "999999",
        "name:path": "app.js"}


def may(role: str, need: str) -> bool:
    """The rule the server must follow, written independently of its code."""
    for one in need.split("|"):
        if one == "public":
            return True
        if one == "worker" and role in ("worker", "admin"):
            return True
        if one in RANKED and role in RANKED and RANKED.index(role) >= RANKED.index(one):
            return True
    return False


def concrete(rule: str) -> str:
    for key, value in FILL.items():
        rule = rule.replace(f"<{key}>", value)
    return rule


def call(server: ServerProcess, method: str, path: str, token: str | None = None,
         body: bytes = b"{}", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body if method != "GET" else None, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else {}
        except ValueError:
            return response.status, {}
    finally:
        conn.close()


@pytest.fixture
def closed_server(make_server):
    """A server whose anonymous requests get no role at all, as on a team network."""
    return make_server(types={"echo": ECHO, "gpu": GPU}, env={"BLANKET_ANONYMOUS": "none"})


def test_every_route_is_in_the_specification(closed_server):
    document = Client(closed_server.url).get("/openapi.json")
    roles = [op["x-blanket-role"] for ops in document["paths"].values() for op in ops.values()]
    assert all(roles)
    routes = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    spec_paths = {(m, _openapi_path(r)) for m, r in SPEC}
    assert routes == spec_paths


def _openapi_path(rule: str) -> str:
    import re
    return re.sub(r"<(?:\w+:)?(\w+)(?::[^>]*)?>", r"{\1}", rule)


def test_an_app_with_a_route_that_declares_no_role_is_refused():
    app = bottle.Bottle()
    app.route("/fine", "GET", lambda: "x", role="viewer")
    check_routes(app)
    app.route("/forgotten", "POST", lambda: "x")
    with pytest.raises(RuntimeError, match="POST /forgotten"):
        check_routes(app)


def test_every_role_against_every_route(closed_server):
    server = closed_server
    tokens = {role: server.token(f"t-{role}", role) for role in (*RANKED, "worker")}
    revoked = server.token("t-revoked", "admin")
    server.client.delete("/token/t-revoked")
    expired = server.token("t-expired", "admin", expires="1s")
    wait_until(lambda: call(server, "GET", "/task/", expired)[0] == 401, timeout=10)
    failures = []
    for (method, rule), need in SPEC.items():
        path = concrete(rule)
        for role, token in [*tokens.items(), ("none", None), ("revoked", revoked),
                            ("expired", expired)]:
            status, body = call(server, method, path, token)
            # A bad token is refused wherever it is presented, public routes too.
            allowed = role not in ("revoked", "expired") and may(role, need)
            expected = 403 if role in tokens else 401
            if allowed and status in (401, 403):
                failures.append(f"{role} refused {status} on {method} {rule}: {body}")
            if not allowed and status != expected:
                failures.append(f"{role} got {status} (not {expected}) on {method} {rule}")
    assert not failures, "\n".join(failures)


def test_an_expired_token_is_refused_and_says_so(closed_server):
    token = closed_server.token("short", "viewer", expires="1s")
    assert call(closed_server, "GET", "/task/", token)[0] == 200
    _, body = wait_until(lambda: (r := call(closed_server, "GET", "/task/", token))[0] == 401
                              and r, timeout=10)
    assert "expired" in body["error"]["message"]


def test_a_token_s_life_is_bounded(closed_server):
    status, body = closed_server.client.request(
        "POST", "/token/", body={"name": "forever", "role": "viewer",
                                 "expires": "100000000000d"}, ok=(400,))
    assert status == 400
    assert body["error"]["message"] == (
        "expires: '100000000000d' is too long; the most is 36500d (leave expires out for a "
        "token that does not expire)")
    assert "forever" not in {t["name"] for t in closed_server.client.get("/token/")}


def test_a_revoked_token_stops_working_at_once(closed_server):
    token = closed_server.token("gone-soon", "operator")
    assert call(closed_server, "GET", "/task/", token)[0] == 200
    closed_server.client.delete("/token/gone-soon")
    status, body = call(closed_server, "GET", "/task/", token)
    assert status == 401 and "revoked" in body["error"]["message"]


def test_basic_auth_with_the_token_as_password_works_like_curl_u(closed_server):
    token = closed_server.token("curl-user", "submitter")
    basic = base64.b64encode(f"alice:{token}".encode()).decode()
    status, task = call(closed_server, "POST", "/task/", None, b'{"type": "echo"}',
                        {"Authorization": f"Basic {basic}"})
    assert status == 201 and task["submitted_by"] == "curl-user"


def test_without_credentials_a_closed_server_says_how_to_send_a_token(closed_server):
    status, body = call(closed_server, "POST", "/task/", None, b'{"type": "echo"}')
    assert status == 401
    assert "Bearer" in body["error"]["message"]
    assert closed_server.client.get("/task/?count")["count"] == 0


def test_on_loopback_anonymous_requests_are_operators_but_not_workers_or_admins(make_server):
    server = make_server(types={"echo": ECHO})
    status, task = call(server, "POST", "/task/", None, b'{"type": "echo"}')
    assert status == 201 and task["submitted_by"] == "anonymous"
    assert call(server, "POST", f"/task/{task['id']}/stop")[0] == 200
    assert call(server, "POST", "/worker/", None, b'{"host": "h", "pid": 1}')[0] == 401
    assert call(server, "GET", "/token/")[0] == 401


def test_a_submitter_changes_only_its_own_tasks_and_submits_only_its_types(closed_server):
    server = closed_server
    alice = server.token("alice", "submitter", types=["ec*"])
    bob = server.token("bob", "submitter")
    status, task = call(server, "POST", "/task/", alice, b'{"type": "echo"}')
    assert status == 201 and task["submitted_by"] == "alice"
    status, body = call(server, "POST", "/task/", alice, b'{"type": "gpu"}')
    assert status == 403 and "gpu" in body["error"]["message"]
    # a type it may not submit is refused as that, whatever else is wrong with the request
    status, body = call(server, "POST", "/task/", alice, b'{"type": "gpu"}',
                        {"Idempotency-Key": "k" * 1000})
    assert status == 403 and "gpu" in body["error"]["message"]
    status, body = call(server, "POST", "/task/", alice, b'{"type": "echo"}',
                        {"Idempotency-Key": "k" * 1000})
    assert status == 400 and "Idempotency-Key" in body["error"]["message"]
    assert call(server, "POST", f"/task/{task['id']}/stop", bob)[0] == 403
    assert call(server, "DELETE", f"/task/{task['id']}", bob)[0] == 403
    assert call(server, "POST", f"/task/{task['id']}/rerun", bob)[0] == 403
    status, stopped = call(server, "POST", f"/task/{task['id']}/stop", alice)
    assert status == 200 and stopped["stopped_by"] == "alice"
    assert call(server, "POST", f"/task/{task['id']}/rerun", alice)[0] == 201
    assert call(server, "DELETE", f"/task/{task['id']}", alice)[0] == 200


def test_an_operator_stops_anyones_task_and_is_recorded(closed_server):
    server = closed_server
    alice = server.token("alice", "submitter")
    ops = server.token("ops", "operator")
    task = call(server, "POST", "/task/", alice, b'{"type": "echo"}')[1]
    status, stopped = call(server, "POST", f"/task/{task['id']}/stop", ops)
    assert status == 200 and stopped["stopped_by"] == "ops"
    assert '"by": "ops"' in server.log_text() or "by=ops" in server.log_text()


def test_a_worker_token_cannot_read_tasks_or_submit(closed_server):
    worker = closed_server.token("w", "worker")
    assert call(closed_server, "GET", "/task/", worker)[0] == 403
    assert call(closed_server, "POST", "/task/", worker, b'{"type": "echo"}')[0] == 403


def test_a_worker_may_not_register_for_tags_its_token_does_not_allow(closed_server):
    token = closed_server.token("w-a", "worker", tags=["a"])
    status, body = call(closed_server, "POST", "/worker/", token,
                        b'{"host": "h", "pid": 1, "tags": ["a", "b"]}')
    assert status == 403 and "b" in body["error"]["message"]
    assert call(closed_server, "POST", "/worker/", token,
                b'{"host": "h", "pid": 1, "tags": ["a"]}')[0] == 201


def test_a_worker_claims_only_through_workers_its_token_registered(closed_server):
    one = closed_server.token("w-one", "worker")
    other = closed_server.token("w-other", "worker")
    worker = call(closed_server, "POST", "/worker/", one,
                  b'{"id": "mine", "host": "h", "pid": 1}')[1]
    assert call(closed_server, "POST", f"/worker/{worker['id']}/claim", other)[0] == 403
    assert call(closed_server, "POST", "/worker/", other,
                b'{"id": "mine", "host": "h", "pid": 2}')[0] == 403
    assert call(closed_server, "DELETE", f"/worker/{worker['id']}", other)[0] == 403
    assert call(closed_server, "POST", f"/worker/{worker['id']}/claim?wait=0", one)[0] in (
        200, 204)


def test_a_worker_whose_token_allows_tag_a_never_gets_a_task_tagged_b(make_server, tmp_path):
    server = make_server(types={"echo": 'command = "echo a"\ntags = ["a"]\n', "gpu": GPU})
    b_task = server.client.post("/task/", {"type": "gpu"})
    a_task = server.client.post("/task/", {"type": "echo"})
    token = server.token("only-a", "worker", tags=["a"])
    # It asks for b too: refused outright, so it never runs.
    refused = make_server.worker(server, tags="a,b", token=token, data_dir=tmp_path / "w1")
    assert refused.proc.wait(20) != 0
    make_server.worker(server, tags="a", token=token, data_dir=tmp_path / "w2")
    assert server.wait_for_task(a_task["id"])["state"] == "SUCCESS"
    assert server.client.get(f"/task/{b_task['id']}")["state"] == "QUEUED"


def test_the_local_admin_token_is_private_to_the_owner(make_server):
    server = make_server()
    path = server.data_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert server.client.get("/session")["role"] == "admin"


def test_a_restarted_server_keeps_its_admin_token_and_replaces_a_broken_one(make_server):
    server = make_server()
    first = server.admin_token
    server.stop()
    server.start()
    assert server.admin_token == first
    server.stop()
    (server.data_dir / "admin.token").write_text("bkt_0000000000000000.forged-forged-forged\n")
    server.start()
    assert server.admin_token != first and server.client.get("/session")["role"] == "admin"


def test_token_secrets_are_never_listed(closed_server):
    secret = closed_server.token("listed", "viewer")
    listing = json.dumps(closed_server.client.get("/token/"))
    assert "listed" in listing and secret.split(".")[1] not in listing


def test_a_token_with_a_taken_name_or_bad_role_is_refused(closed_server):
    closed_server.token("dup", "viewer")
    with pytest.raises(ClientError) as taken:
        closed_server.token("dup", "viewer")
    assert taken.value.status == 409
    with pytest.raises(ClientError) as bad:
        closed_server.token("x", "root")
    assert bad.value.status == 400 and "viewer" in bad.value.message


def test_an_idempotency_key_belongs_to_its_caller(closed_server):
    alice = closed_server.token("alice", "submitter")
    bob = closed_server.token("bob", "submitter")
    key = {"Idempotency-Key": "k1"}
    first = call(closed_server, "POST", "/task/", alice, b'{"type": "echo"}', key)[1]
    again = call(closed_server, "POST", "/task/", alice, b'{"type": "echo"}', key)[1]
    other = call(closed_server, "POST", "/task/", bob, b'{"type": "echo"}', key)[1]
    assert again["id"] == first["id"]
    assert other["id"] != first["id"] and other["submitted_by"] == "bob"


@pytest.mark.parametrize("name", ["anonymous", "inbox", "schedule", "Schedule"])
def test_a_token_may_not_take_a_name_blanket_records_itself(closed_server, name):
    with pytest.raises(ClientError) as refused:
        closed_server.token(name, "submitter")
    assert refused.value.status == 400


def test_a_schedules_own_command_is_not_submitted_as_a_task(make_server):
    server = make_server()
    (server.config_dir / "schedules" / "cleanup.toml").write_text(
        'command = "echo cleaning"\nevery = "1h"\n')
    wait_until(lambda: any(s["name"] == "cleanup" for s in server.client.get("/schedule/")))
    status, body = call(server, "POST", "/task/", None, b'{"type": "schedule.cleanup"}')
    assert status == 400 and "schedule run" in body["error"]["message"]
    assert call(server, "POST", "/schedule/cleanup/run")[0] == 201


def test_health_shows_config_problems_to_viewers_only_and_never_a_secret_value(make_server):
    """`/health` answers anyone (a probe has no token), but what is wrong in the config
    names files and once quoted the value, a secret's too."""
    server = make_server(env={"BLANKET_ANONYMOUS": "none"}, start=False)
    (server.config_dir / "types" / "broken.toml").write_text(
        'command = "true"\n[environment.defaults]\n'
        'API_KEY = { value = ["SuperSecretValue42"], secret = true }\n')
    server.start()
    status, anyone = call(server, "GET", "/health", None)
    assert status == 200 and anyone["config_problem_count"] == 1
    assert "config_problems" not in anyone
    viewer = server.token("v", "viewer")
    status, shown = call(server, "GET", "/health", viewer)
    assert shown["config_problem_count"] == 1 and "broken.toml" in str(shown["config_problems"])
    assert "expected a string, number or boolean, got a list" in str(shown["config_problems"])
    for answer in (anyone, shown, server.client.get("/task_type/")):
        assert "SuperSecretValue42" not in json.dumps(answer)
