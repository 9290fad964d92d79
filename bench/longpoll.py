"""Long-poll load: many idle workers' claims and many `?wait` submissions held at once, all
connecting in one burst, while short requests go on. Prints connections reset or refused,
server errors, and the latency of short requests while the long polls are held.

Run: .venv/bin/python -P bench/longpoll.py [--claims 1000] [--waits 500] [--hold 20]
Loopback only; bounded in count (at most 5,000 held requests) and in time (--hold seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import errno
import http.client
import json
import os
import selectors
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

from bench.harness import free_port, percentile
from blanket.server.httppool import SHRINK_AFTER, SPARE_THREADS

MAX_HELD = 5000
# Nobody claims this type: `?wait` submissions of it are held until their wait runs out.
UNCLAIMED = 'command = "true"\ntags = ["nobody-has-this-tag"]\n'


@dataclass
class HoldResult:
    """What became of the held requests, and of the short requests made meanwhile."""

    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    resets: int = 0  # reset, refused or closed before an answer
    short_latencies: list[float] = field(default_factory=list)
    short_started: list[float] = field(default_factory=list)  # monotonic, beside latencies
    short_failures: int = 0
    first_sent: float = 0.0  # monotonic: the first held request sent
    all_sent: float = 0.0  # and the last

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def register_workers(port: int, token: str, count: int) -> list[str]:
    """Register `count` workers that take no task of the unclaimed type; their ids."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids = []
    for number in range(count):
        body = json.dumps({"host": "bench", "pid": number, "tags": ["bench"],
                           "id": f"bench-{number}"})
        connection.request("POST", "/worker/", body, _headers(token))
        response = connection.getresponse()
        response.read()
        if response.status != 201:
            raise SystemExit(f"cannot register a worker: {response.status}")
        ids.append(f"bench-{number}")
    connection.close()
    return ids


def hold_requests(port: int, token: str, worker_ids: list[str], waits: int, hold: float,
                  short_path: str = "/health", on_task: int | None = None) -> HoldResult:
    """Open one connection per claim and per `?wait` request in one burst, each asking to
    wait `hold` seconds; make short requests until every held one is answered. The `?wait`
    requests are submissions of the unclaimed type, or with `on_task` long polls of
    `GET /task/ID?wait=` on that (unclaimed) task."""
    if len(worker_ids) + waits > MAX_HELD:
        raise SystemExit(f"at most {MAX_HELD} held requests")
    requests = [_request("POST", f"/worker/{w}/claim?wait={hold:g}", b"{}", token)
                for w in worker_ids]
    if on_task is not None:
        requests += [_request("GET", f"/task/{on_task}?wait={hold:g}", b"", token)
                     for _ in range(waits)]
    else:
        task = json.dumps({"type": "unclaimed"}).encode()
        requests += [_request("POST", f"/task/?wait={hold:g}", task, token)
                     for _ in range(waits)]
    result = HoldResult()
    done = threading.Event()
    shorts = threading.Thread(target=_short_requests, args=(port, token, short_path, done,
                                                            result), daemon=True)
    shorts.start()
    try:
        _held(port, requests, hold + 30, result)
    finally:
        done.set()
        shorts.join()
    return result


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def submit_unclaimed(port: int, token: str) -> int:
    """Queue one task of the unclaimed type; its id."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/task/", json.dumps({"type": "unclaimed"}), _headers(token))
    response = connection.getresponse()
    task = json.loads(response.read())
    connection.close()
    return int(task["id"])


def _request(method: str, path: str, body: bytes, token: str) -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def _held(port: int, requests: list[bytes], deadline: float, result: HoldResult) -> None:
    """Connect all at once (non-blocking), send each request, read each answer's status."""
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    for request in requests:
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            result.resets += 1
            sock.close()
            continue
        selector.register(sock, selectors.EVENT_WRITE, request)
        received[sock] = b""
    end = time.monotonic() + deadline
    unsent = len(received)
    while received and time.monotonic() < end:
        for key, events in selector.select(timeout=1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(key.data)
                    selector.modify(sock, selectors.EVENT_READ)
                    result.first_sent = result.first_sent or time.monotonic()
                    unsent -= 1
                    if not unsent:
                        result.all_sent = time.monotonic()
                    continue
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                received[sock] += chunk
                if b"\r\n" not in received[sock]:
                    continue
            _answered(received.pop(sock), result)
            selector.unregister(sock)
            sock.close()
    result.resets += len(received)  # no answer by the deadline counts as lost too
    for sock in received:
        sock.close()
    selector.close()


def _answered(raw: bytes, result: HoldResult) -> None:
    line = raw.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[1].isdigit():
        result.resets += 1
        return
    status = int(line[1])
    result.statuses[status] = result.statuses.get(status, 0) + 1


def _short_requests(port: int, token: str, path: str, done: threading.Event,
                    result: HoldResult) -> None:
    time.sleep(0.5)  # let the burst of held requests land first
    while not done.is_set():
        began = time.monotonic()
        start = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", path, headers=_headers(token))
            response = connection.getresponse()
            response.read()
            connection.close()
            ok = response.status == 200
        except OSError:
            ok = False
        if ok:
            result.short_latencies.append(time.perf_counter() - start)
            result.short_started.append(began)
        else:
            result.short_failures += 1
        done.wait(0.05)


def start_server(base: Path, max_threads: int) -> tuple[subprocess.Popen, int, str]:
    """A `blanket server` on loopback with the unclaimed type; (process, port, admin token)."""
    types = base / "conf.d" / "types"
    types.mkdir(parents=True)
    (types / "unclaimed.toml").write_text(UNCLAIMED)
    port = free_port()
    env = {**os.environ, "BLANKET_SETTINGS": str(base / "none.toml"),
           "BLANKET_LOG_LEVEL": "warning", "BLANKET_MAX_THREADS": str(max_threads)}
    env.pop("BLANKET_SERVER", None)
    with open(base / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blanket", "server", "--host", "127.0.0.1", "--port",
             str(port), "--config-dir", str(base / "conf.d"), "--data-dir", str(base / "var"),
             "--inbox-dir", str(base / "inbox")],
            cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT)
    token_file = base / "var" / "admin.token"
    end = time.monotonic() + 30
    while not _answers(port):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise SystemExit(f"server did not start: {(base / 'server.log').read_text()}")
        time.sleep(0.05)
    return proc, port, token_file.read_text().strip()


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=1000, help="idle workers long-polling")
    parser.add_argument("--waits", type=int, default=500, help="?wait submissions held")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each one waits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blanket-longpoll-") as folder:
        max_threads = args.claims + args.waits + 64
        proc, port, token = start_server(Path(folder), max_threads)
        try:
            ids = register_workers(port, token, args.claims)
            before = threads_of(proc.pid)
            started = time.perf_counter()
            result = hold_requests(port, token, ids, args.waits, args.hold)
            took = time.perf_counter() - started
            peak = threads_of(proc.pid)
            quiet = time.monotonic()
            while threads_of(proc.pid) > before + SPARE_THREADS and (
                    time.monotonic() - quiet < SHRINK_AFTER + 30):
                time.sleep(0.5)
            shrunk, quiet_for = threads_of(proc.pid), time.monotonic() - quiet
        finally:
            proc.terminate()
            proc.wait(30)
    latencies = result.short_latencies or [float("nan")]
    print(f"longpoll: {args.claims} claims + {args.waits} ?wait held {args.hold:g}s, "
          f"all connecting at once (max_threads {max_threads})")
    print(f"  answers: {dict(sorted(result.statuses.items()))} in {took:.1f}s")
    print(f"  resets/refused/unanswered: {result.resets}   server errors: "
          f"{result.server_errors}")
    print(f"  short GET /health while held: {len(result.short_latencies)} ok, "
          f"{result.short_failures} failed; p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    print(f"  server threads: {before} before, {peak} after the burst, {shrunk} after "
          f"{quiet_for:.0f}s of quiet")


if __name__ == "__main__":
    main()
