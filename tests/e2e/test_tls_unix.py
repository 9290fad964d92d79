"""HTTPS and a unix socket end to end: real `blanket server`, `blanket worker` and `blanket`
processes carry a task from submission to its logs over each."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blanket.client import Client
from blanket.tls import certificate_fingerprint
from tests.conftest import ServerProcess, free_port, wait_until

ECHO = 'command = "echo hello {{ NAME }}; cat data.txt 2>/dev/null || true"\n' \
       '[environment.defaults]\nNAME = "world"\n'
# What a task needs to talk back to its server.
ENV = 'command = "echo $BLANKET_SERVER $BLANKET_FINGERPRINT"\n'
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path must fit in about 100 bytes."""
    folder = Path(tempfile.mkdtemp(prefix="bl-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def blanket(server: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    """Run the `blanket` command as a user of `server` would, with its admin token."""
    env = {**server.env, "BLANKET_TOKEN": server.admin_token}
    return subprocess.run([sys.executable, "-m", "blanket", *args], cwd=server.base, env=env,
                          capture_output=True, text=True, timeout=60)


def printed_fingerprint(server: ServerProcess) -> str | None:
    found = re.search(r"SHA-256 fingerprint ([0-9a-f]{64})", server.log_text())
    return found.group(1) if found else None


def start_tls(make_server, *args: str) -> tuple[ServerProcess, str]:
    """A server started with `--tls self-signed` (and `args`), and the fingerprint it printed."""
    server = make_server(types={"echo": ECHO, "env": ENV}, start=False,
                         extra_args=("--tls", "self-signed", *args))
    server.url = f"https://127.0.0.1:{server.port}"
    server.start(wait=False)
    fingerprint = wait_until(lambda: printed_fingerprint(server), timeout=20)
    server.client = Client(server.url, timeout=60, fingerprint=fingerprint)
    wait_until(server.healthy, timeout=20)
    server.client = Client(server.url, timeout=60, token=server.admin_token,
                           fingerprint=fingerprint)
    return server, fingerprint


def test_a_remote_worker_pinning_the_fingerprint_runs_a_task_over_https(make_server, tmp_path):
    server, fingerprint = start_tls(make_server)
    assert fingerprint == certificate_fingerprint(server.data_dir / "tls" / "cert.pem")
    make_server.worker(server, data_dir=tmp_path / "remote", args=("--fingerprint", fingerprint))
    (server.base / "data.txt").write_text("uploaded over TLS\n")
    trust = ("--server", server.url, "--fingerprint", fingerprint)
    submitted = blanket(server, *trust, "submit", "echo", "-e", "NAME=tls", "-f", "data.txt",
                        "--wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.split()[0]
    shown = blanket(server, *trust, "logs", task_id)
    assert shown.stdout == "hello tls\nuploaded over TLS\n"
    # The worker ran it in its own data dir and sent the outputs back over HTTPS.
    assert (tmp_path / "remote" / "tasks" / "echo" / task_id / "stdout.log").is_file()


def test_the_command_beside_the_server_trusts_its_certificate_by_itself(make_server):
    server = make_server(types={"echo": ECHO}, start=False)
    (server.base / "blanket.toml").write_text(  # what both the server and the command read
        f'port = {server.port}\ntls = "self-signed"\ndata_dir = "var"\n')
    server.url = f"https://127.0.0.1:{server.port}"
    server.start(wait=False)
    fingerprint = wait_until(lambda: printed_fingerprint(server), timeout=20)
    server.client = Client(server.url, timeout=60, fingerprint=fingerprint)
    wait_until(server.healthy, timeout=20)
    submitted = blanket(server, "submit", "echo")  # no --server, --ca or --fingerprint
    assert submitted.returncode == 0, submitted.stderr
    elsewhere = blanket(server, "--server", f"https://localhost:{server.port}", "ps")
    assert elsewhere.returncode == 1 and "is not trusted" in elsewhere.stderr


def test_a_worker_trusting_the_certificate_as_a_ca_runs_a_task_followed_live(make_server,
                                                                            tmp_path):
    server, _ = start_tls(make_server)
    cert = server.data_dir / "tls" / "cert.pem"
    make_server.worker(server, data_dir=tmp_path / "remote", args=("--ca", str(cert)))
    task = server.client.post("/task/", {"type": "echo", "environment": {"NAME": "ca"}})
    followed = blanket(server, "--server", f"https://localhost:{server.port}", "--ca", str(cert),
                       "logs", "-f", str(task["id"]))
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "hello ca\n"
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"


def test_a_worker_pinning_another_fingerprint_refuses_the_server_and_says_why(make_server,
                                                                             tmp_path):
    server, fingerprint = start_tls(make_server)
    wrong = ("0" if fingerprint[0] != "0" else "1") + fingerprint[1:]
    worker = make_server.worker(server, data_dir=tmp_path / "w", args=("--fingerprint", wrong))
    assert worker.proc.wait(30) == 1
    text = worker.log.read_text()
    assert f"whose SHA-256 fingerprint is {fingerprint}, not the pinned {wrong}" in text
    assert "Traceback" not in text
    assert server.client.get("/worker/") == []


def test_local_workers_reach_a_tls_server_by_its_fingerprint_and_tell_their_tasks(
        make_server):
    server, fingerprint = start_tls(make_server, "--workers", "2")  # a supervisor and two
    task = server.client.post("/task/", {"type": "env"})
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    assert server.client.get(f"/task/{task['id']}/log/stdout") == \
        f"{server.url} {fingerprint}\n"


def test_clients_that_connect_and_stay_silent_keep_no_one_else_out(make_server):
    server, _ = start_tls(make_server)
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:  # each holds its own HTTP thread, not the one that accepts connections
        fresh = Client(server.url, timeout=5, fingerprint=printed_fingerprint(server))
        assert fresh.get("/health")["status"] == "ok"
    finally:
        for connection in silent:
            connection.close()


def test_plain_http_to_a_tls_server_is_told_to_use_https(make_server):
    server, _ = start_tls(make_server)
    answer = blanket(server, "--server", f"http://127.0.0.1:{server.port}", "ps")
    assert answer.returncode == 1
    assert f"https://127.0.0.1:{server.port}" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_a_task_crosses_a_unix_socket_end_to_end(make_server, short_dir, tmp_path):
    sock = short_dir / "b.sock"
    url = f"unix:{sock}"
    server = make_server(types={"echo": ECHO}, start=False, listen=(url,))
    server.url, server.client = url, Client(url, timeout=60)
    server.start()
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o660
    make_server.worker(server, data_dir=tmp_path / "remote")
    (server.base / "data.txt").write_text("uploaded over the socket\n")
    submitted = blanket(server, "--server", url, "submit", "echo", "-e", "NAME=unix",
                        "-f", "data.txt", "--wait")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.split()[0]
    for how in (("logs", task_id), ("logs", "-f", task_id)):
        shown = blanket(server, "--server", url, *how)
        assert shown.stdout == "hello unix\nuploaded over the socket\n", how
    assert server.stop() == 0
    assert not sock.exists()


def test_tcp_and_a_unix_socket_together_with_local_workers_on_the_socket(make_server,
                                                                         short_dir):
    sock, port = short_dir / "b.sock", free_port()
    server = make_server(types={"echo": ECHO}, extra_args=("--workers", "1"), port=port,
                         listen=(f"127.0.0.1:{port}", f"unix:{sock}"))
    task = server.client.post("/task/", {"type": "echo"})  # over TCP
    assert server.wait_for_task(task["id"])["state"] == "SUCCESS"
    assert f"server=unix:{sock}" in server.log_text()  # the local worker registered over it
    assert Client(f"unix:{sock}").get(f"/task/{task['id']}/log/stdout") == "hello world\n"


def test_a_killed_servers_socket_is_replaced_by_the_next_server(make_server, short_dir):
    sock = short_dir / "b.sock"
    url = f"unix:{sock}"
    server = make_server(start=False, listen=(url,))
    server.url, server.client = url, Client(url, timeout=60)
    server.start()
    server.kill()  # no chance to remove its socket
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    server.start()
    assert server.healthy()
    assert "removing a stale unix socket" in server.log_text()


def test_a_second_server_on_a_held_socket_exits_saying_so(make_server, short_dir):
    sock = short_dir / "b.sock"
    first = make_server(start=False, listen=(f"unix:{sock}",))
    first.url, first.client = f"unix:{sock}", Client(f"unix:{sock}", timeout=60)
    first.start()
    second = make_server(start=False, listen=(f"unix:{sock}",))
    second.start(wait=False)
    assert second.proc.wait(30) == 1
    text = second.log_text()
    assert f"error: another server is listening on {sock}" in text
    assert "Traceback" not in text
    assert first.healthy()


def test_a_server_bound_to_every_address_without_tls_exits_saying_what_to_set(make_server):
    server = make_server(start=False, extra_args=("--host", "0.0.0.0"))
    server.start(wait=False)
    assert server.proc.wait(30) == 1
    text = server.log_text()
    assert "refusing to serve plain HTTP on 0.0.0.0" in text
    assert "--tls self-signed" in text and "insecure = true" in text
    assert "Traceback" not in text


def test_the_sign_in_cookie_of_an_https_server_is_secure_and_its_origin_is_https(make_server):
    import ssl

    server, _ = start_tls(make_server)
    token = server.client.post("/token/", {"name": "web", "role": "viewer"})["token"]
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=30)
    try:
        conn.request("POST", "/login", body=json.dumps({"token": token}),
                     headers={"Origin": server.url})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert "secure" in response.getheader("Set-Cookie").lower()
        conn.request("POST", "/login", body=json.dumps({"token": token}),
                     headers={"Origin": f"http://127.0.0.1:{server.port}"})
        response = conn.getresponse()
        response.read()
        assert response.status == 403  # the plain-http origin is another origin
    finally:
        conn.close()
