"""Queue benchmark: submissions per second over HTTP, claim latency with a large half-ineligible
backlog (store and HTTP route), and server memory growth under submissions.

Run: .venv/bin/python bench/queue.py [--submissions 5000] [--backlog 100000] [--claims 2000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import free_port
from blanket.client import Client
from blanket.server.pricing import task_score
from blanket.store.base import Claim
from blanket.store.sqlite import SQLiteStore

TYPES = {
    "free": 'command = "true"\ntags = ["unix"]\nallow_extra_environment = true\n',
    "gpu": 'command = "true"\ntags = ["gpu"]\n',
    "capped": 'command = "true"\ntags = ["unix"]\nmax_concurrent = 2\n',
}
WORKER_TAGS = ["unix"]
TASK = json.dumps({"type": "free", "environment": {"INPUT": "a.pdf", "LEVEL": 3}}).encode()


class Server:
    """A `blanket server` subprocess on temp dirs and a free port."""

    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        config = base / "conf.d" / "types"
        config.mkdir(parents=True, exist_ok=True)
        for name, text in TYPES.items():
            (config / f"{name}.toml").write_text(text)
        env = {**os.environ, "BLANKET_SETTINGS": str(base / "none.toml"),
               "BLANKET_LOG_LEVEL": "warning"}
        env.pop("BLANKET_SERVER", None)
        self.log = open(base / "server.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blanket", "server", "--port", str(self.port),
             "--config-dir", str(base / "conf.d"), "--data-dir", str(base / "var"),
             "--inbox-dir", str(base / "inbox")],
            cwd=base, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self._wait_healthy()
        self.admin = (base / "var" / "admin.token").read_text().strip()

    def _wait_healthy(self) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {(self.base / 'server.log').read_text()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                self.connection.close()
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def request(self, method: str, path: str, body: bytes | None = None,
                token: str | None = None) -> tuple[int, bytes]:
        """One request on the kept-alive connection (anonymous unless a token is given)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def cpu_seconds(self) -> float:
        """User and system CPU the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.connection.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def submit_many(server: Server, count: int,
                send: Callable[[], tuple[int, bytes]] | None = None) -> float:
    """Seconds taken by `count` sequential submissions on one keep-alive connection: the
    bench's http.client one, or `send`'s."""
    send = send or (lambda: server.request("POST", "/task/", TASK))
    start = time.perf_counter()
    for _ in range(count):
        status, body = send()
        if status != 201:
            raise SystemExit(f"submission failed: {status} {body[:200]!r}")
    return time.perf_counter() - start


def submit_in_parallel(server: Server, count: int, connections: int) -> float:
    """Seconds taken by `count` single submissions from one process over `connections`
    keep-alive connections, each sending its next once answered."""
    def sender(share: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for _ in range(share):
                connection.request("POST", "/task/", body=TASK,
                                   headers={"Content-Type": "application/json"})
                answer = connection.getresponse()
                body = answer.read()
                if answer.status != 201:
                    raise SystemExit(f"submission failed: {answer.status} {body[:200]!r}")
        finally:
            connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(sender, [count // connections] * connections))
    return time.perf_counter() - start


def bench_submissions(base: Path, count: int) -> None:
    server = Server(base / "submit")
    try:
        submit_many(server, 200)  # warm-up: imports, caches, the first WAL pages
        seconds = submit_many(server, count)
        # blanket's own client, as `blanket submit` and a script importing it use
        client = Client(f"http://127.0.0.1:{server.port}", timeout=60)
        lean = submit_many(server, count, lambda: client.send("POST", "/task/", TASK))
        parallel = submit_in_parallel(server, count, 4)
    finally:
        server.stop()
    print(f"submissions over HTTP (keep-alive, durable): {count / seconds:,.0f}/s "
          f"({count} in {seconds:.2f}s; target >= 2,000)")
    print(f"the same through blanket's own client (blanket.client.Client): "
          f"{count / lean:,.0f}/s ({count} in {lean:.2f}s)")
    sent = count // 4 * 4
    print(f"submissions over HTTP from 4 connections of one client (one task a request): "
          f"{sent / parallel:,.0f}/s ({sent} in {parallel:.2f}s)")


def bench_bulk(base: Path, count: int, batch: int) -> None:
    """Tasks per second stored by bulk submissions of `batch` tasks (JSON arrays) on one
    keep-alive connection."""
    server = Server(base / "bulk")
    body = json.dumps([json.loads(TASK)] * batch).encode()
    try:
        server.request("POST", "/task/", body)  # warm-up
        start = time.perf_counter()
        for _ in range(count // batch):
            status, answer = server.request("POST", "/task/", body)
            if status != 201:
                raise SystemExit(f"bulk submission failed: {status} {answer[:200]!r}")
        seconds = time.perf_counter() - start
    finally:
        server.stop()
    stored = count // batch * batch
    print(f"bulk submissions over HTTP ({batch:,} tasks a request, durable): "
          f"{stored / seconds:,.0f} tasks/s ({stored:,} in {seconds:.2f}s; target >= 20,000)")


def build_backlog(path: Path, total: int, now: float) -> None:
    """`total` queued tasks through the store's schema: half eligible for a worker tagged
    unix, the rest split between a tag it lacks, a future start and a type at its cap."""
    SQLiteStore(path).close()
    rng = random.Random(7)
    rows = []
    for i in range(total):
        added = now - rng.uniform(0, 86400)
        kind, not_before = i % 6, None
        type_name, tags = "free", "unix"
        if kind == 3:
            type_name, tags = "gpu", "gpu"
        elif kind == 4:
            not_before = now + rng.uniform(3600, 86400)
        elif kind == 5:
            type_name = "capped"
        score = task_score(max(added, not_before or added), rng.choice([None, 60.0, 3600.0]))
        rows.append((type_name, tags, score, added, not_before))
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO tasks (type, state, environment, tags, score, added, not_before) "
            "VALUES (?, 'QUEUED', '{}', ?, ?, ?, ?)", rows)
        db.executemany(  # the capped type's two slots are taken
            "INSERT INTO tasks (type, state, environment, tags, score, added, token, heartbeat,"
            " worker) VALUES ('capped', 'RUNNING', '{}', 'unix', 0, ?, ?, ?, 'elsewhere')",
            [(now, uuid.uuid4().hex, now) for _ in range(2)])
    db.close()


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"


def timed(action: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        if action() is None:
            raise SystemExit("the backlog ran out of eligible tasks")
        samples.append(time.perf_counter() - start)
    return samples


def bench_claims(base: Path, backlog: int, claims: int) -> None:
    now = time.time()
    template = base / "backlog.db"
    build_backlog(template, backlog, now)

    store_db = base / "store" / "blanket.db"
    store_db.parent.mkdir()
    shutil.copy(template, store_db)
    store = SQLiteStore(store_db)
    claim = Claim("bench", frozenset(WORKER_TAGS), {"capped": 2}, now)
    samples = timed(lambda: store.claim_task(claim), claims)
    store.close()
    print(f"claim, SQLiteStore.claim_task ({backlog:,} queued, half not eligible): "
          f"{percentiles(samples)}")

    server_base = base / "claim"
    (server_base / "var").mkdir(parents=True)
    shutil.copy(template, server_base / "var" / "blanket.db")
    server = Server(server_base)
    try:
        body = server.request("POST", "/worker/", json.dumps(
            {"host": "bench", "pid": os.getpid(), "tags": WORKER_TAGS}).encode(),
            server.admin)[1]
        worker = json.loads(body)["id"]

        def claim_over_http() -> object | None:
            status, body = server.request("POST", f"/worker/{worker}/claim", None,
                                          server.admin)
            return json.loads(body)["task"] if status == 200 else None

        samples = timed(claim_over_http, claims)
    finally:
        server.stop()
    print(f"claim, POST /worker/ID/claim over HTTP ({backlog:,} queued, half not eligible): "
          f"{percentiles(samples)}")


def bench_auth(base: Path, count: int) -> None:
    """Server CPU per request reading one task, anonymous and with a bearer token, in
    alternating rounds so that both see the same machine."""
    server = Server(base / "auth")
    try:
        task = json.loads(server.request("POST", "/task/", TASK)[1])["id"]
        created = server.request("POST", "/token/", json.dumps(
            {"name": "bench-viewer", "role": "viewer"}).encode(), server.admin)[1]
        token = json.loads(created)["token"]
        cpu = {"anonymous": 0.0, "token": 0.0}
        for _ in range(10):
            for kind, sent in (("anonymous", None), ("token", token)):
                before = server.cpu_seconds()
                for _ in range(count // 10):
                    status, body = server.request("GET", f"/task/{task}", None, sent)
                    if status != 200:
                        raise SystemExit(f"read failed: {status} {body[:200]!r}")
                cpu[kind] += server.cpu_seconds() - before
    finally:
        server.stop()
    anonymous, with_token = (cpu[k] / count * 1000 for k in ("anonymous", "token"))
    print(f"auth: server CPU per request (GET /task/ID, {count:,} each): anonymous "
          f"{anonymous:.3f} ms, bearer token {with_token:.3f} ms, difference "
          f"{with_token - anonymous:+.3f} ms (target <= 0.05 ms)")


def bench_memory(base: Path, count: int) -> None:
    server = Server(base / "memory")
    try:
        submit_many(server, 2000)  # warm-up
        before = server.rss_kb()
        submit_many(server, count)
        after = server.rss_kb()
    finally:
        server.stop()
    print(f"server RSS growth after {count:,} submissions (after warm-up): "
          f"{(after - before) / 1024:.1f} MB ({before / 1024:.1f} -> {after / 1024:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=5000)
    parser.add_argument("--bulk", type=int, default=20_000, help="tasks sent in bulk")
    parser.add_argument("--batch", type=int, default=1000, help="tasks a bulk request")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--memory-submissions", type=int, default=20_000)
    parser.add_argument("--auth-requests", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where temp dirs go (use a real disk: fsync is what is measured)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="blanket-bench-", dir=args.dir))
    try:
        bench_submissions(base, args.submissions)
        bench_bulk(base, args.bulk, args.batch)
        bench_auth(base, args.auth_requests)
        bench_claims(base, args.backlog, args.claims)
        bench_memory(base, args.memory_submissions)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
