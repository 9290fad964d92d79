"""Load edges through a real server: a burst of held long polls is answered without a
reset while short requests go on; a chunked body is refused once it passes its route's
limit, not after being spooled; silent workers show as lost, then leave the list."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from bench.longpoll import (
    UNCLAIMED,
    HoldResult,
    hold_requests,
    register_workers,
    submit_unclaimed,
)
from blanket.server.api.http import MAX_DRAIN, MAX_JSON
from tests.conftest import wait_until


def test_a_burst_of_300_held_long_polls_is_answered_without_a_reset(make_server):
    server = make_server(types={"unclaimed": UNCLAIMED})
    ids = register_workers(server.port, server.admin_token, 150)
    result = hold_requests(server.port, server.admin_token, ids, waits=150, hold=3)
    assert result.resets == 0
    assert result.statuses == {204: 150, 201: 150}
    assert result.short_latencies and result.short_failures == 0  # served meanwhile


# Rounds of the test below (BLANKET_HELD_ROUNDS=30 to look harder): the stall it guards
# against (a short request queued behind held long polls until one ended, ~30 s) was seen
# in 1 run of 24 with granian's own thread pool.
HELD_ROUNDS = int(os.environ.get("BLANKET_HELD_ROUNDS", "6"))
HOLD = 8.0  # seconds each long poll is held
SHORT_MOST = 0.1  # seconds a short request may take while the long polls are held
SHORT_LATE = 0.02  # the share of them that may be later (the machine's own hiccups)
# And at any time, while the burst of 1,500 connections is read included (the Python work
# of 1,500 requests then shares the GIL with the short ones: about 2 s at worst here); a
# short request stalled behind held long polls would wait for one to end (HOLD).
SHORT_EVER = HOLD * 0.75


@pytest.mark.timeout(60 + HELD_ROUNDS * 30)
def test_short_requests_answer_within_100_ms_while_1500_long_polls_are_held(make_server):
    """1,000 idle workers' claims and 500 `GET /task/ID?wait` long polls connect in one
    burst and are held; short requests (`GET /task/ID`, a new connection each) go on
    meanwhile. Once the server holds every claim and until the first long poll could time
    out, short requests answer within 100 ms (all but 2% of them, every one within 1 s;
    within 4.5 s during the burst itself); none fails, in any round."""
    server = make_server(types={"unclaimed": UNCLAIMED},
                         env={"BLANKET_MAX_THREADS": "2000", "BLANKET_LOG_LEVEL": "warning"})
    ids = register_workers(server.port, server.admin_token, 1000)
    task = submit_unclaimed(server.port, server.admin_token)
    held: list[tuple[float, float]] = []  # (latency, seconds after the burst began)
    for _round in range(HELD_ROUNDS):
        began = time.time()
        results: list[HoldResult] = []
        holder = threading.Thread(target=lambda results=results: results.append(
            hold_requests(server.port, server.admin_token, ids, waits=500, hold=HOLD,
                          short_path=f"/task/{task}", on_task=task)))
        holder.start()
        # every claim held: each idle worker's claim marks it seen when its wait begins
        wait_until(lambda began=began: all(w["heartbeat"] >= began
                                           for w in server.client.get("/worker/")),
                   timeout=HOLD - 2, interval=0.1)
        held_from = time.monotonic() + 0.3  # and the ?wait polls sent after them
        holder.join()
        result = results[0]
        assert result.resets == 0 and result.statuses == {204: 1000, 200: 500}
        assert result.short_failures == 0
        assert max(result.short_latencies) < SHORT_EVER
        these = [(latency, start - result.first_sent) for start, latency
                 in zip(result.short_started, result.short_latencies, strict=True)
                 if held_from <= start <= result.first_sent + HOLD - 0.5]
        assert len(these) >= 10, (held_from - result.first_sent, result.short_started)
        held += these
    slow = sorted(((round(s * 1000, 1), round(at, 2)) for s, at in held
                   if s >= SHORT_MOST), reverse=True)
    # A short request stalled behind held long polls would wait for one to end: seconds. On
    # 2 busy cores a few are late by a scheduling slice or a full garbage collection (up to
    # ~130 ms seen in 30 rounds while another engineer's runs shared the 2 cores).
    assert max(s for s, _ in held) < 1.0, slow
    assert len(slow) <= len(held) * SHORT_LATE, (len(held), slow)


def _endless_chunked_post(port: int, path: str, content_type: str) -> tuple[bytes, int]:
    """POST chunks of 64 KiB until the server answers; (the answer, bytes sent by then)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = [0]
    stop = threading.Event()

    def send() -> None:
        try:
            while not stop.is_set() and sent[0] < 4 * 1024**3:
                sock.sendall(chunk)
                sent[0] += 65536
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(30)
    return answer, sent[0]


def test_a_chunked_body_is_refused_soon_after_its_route_limit(make_server):
    server = make_server()
    answer, sent = _endless_chunked_post(server.port, "/task/", "application/json")
    assert answer.startswith(b"HTTP/1.1 413"), (answer[:200], sent)
    # The limit, what is drained so the client sees the answer, and what the sockets buffer.
    assert sent < MAX_JSON + MAX_DRAIN + 32 * 1024**2


def test_a_chunked_body_within_the_limit_is_read_whole(make_server):
    server = make_server(types={"echo": 'command = "echo hi"\n'})
    body = json.dumps({"type": "echo", "tags": ["x" * 90] * 50}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                      for i in range(0, len(body), 1000))
    sock.sendall(b"POST /task/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                 b"Authorization: Bearer " + server.admin_token.encode() + b"\r\n"
                 b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    answer = b""
    while data := sock.recv(65536):
        answer += data
    sock.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


def _register(server, worker_id: str) -> None:
    server.client.post("/worker/", {"host": "h", "pid": 1, "id": worker_id})


def _states(server) -> dict[str, str]:
    return {w["id"]: w["state"] for w in server.client.get("/worker/")}


def test_a_silent_worker_shows_as_lost_then_leaves_the_list(make_server):
    server = make_server(env={"BLANKET_LOST_AFTER": "1", "BLANKET_FORGET_WORKERS_AFTER": "8"})
    _register(server, "silent")
    assert _states(server)["silent"] == "idle"
    wait_until(lambda: _states(server).get("silent") == "lost", timeout=10)
    assert server.client.get("/worker/silent")["state"] == "lost"
    listed = subprocess.run([sys.executable, "-m", "blanket", "--server", server.url,
                             "ls", "workers"], capture_output=True, text=True, env=server.env,
                            check=True).stdout
    assert "silent" in listed and "lost" in listed
    wait_until(lambda: "silent" not in _states(server), timeout=20)


def test_a_worker_waiting_in_a_claim_is_not_lost(make_server):
    server = make_server(env={"BLANKET_LOST_AFTER": "1"})
    _register(server, "waiting")
    claim = threading.Thread(target=server.client.request,
                             args=("POST", "/worker/waiting/claim?wait=4"),
                             kwargs={"body": {}, "ok": (204,)})
    started = time.monotonic()
    claim.start()
    wait_until(lambda: time.monotonic() - started > 2.5, interval=0.1)
    assert _states(server)["waiting"] == "idle"
    claim.join()
    wait_until(lambda: _states(server)["waiting"] == "lost", timeout=10)
