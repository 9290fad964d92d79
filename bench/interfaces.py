"""What granian itself costs a request under each of its Python interfaces: the server CPU
a short POST costs (a JSON body read and answered, nothing else), served by granian's WSGI
interface on its blocking threads (as blanket serves), by its RSGI interface answered on
its event loop, and by RSGI with the answer made on a thread pool (what blanket's routes,
which block on the store and on long polls, would need). The question it answers: would
moving to RSGI, which reads a body without holding a Python thread (the fix for a slow
body from a caller with a token, see docs/architecture.md), also save CPU per request?

    python -P bench/interfaces.py [-n 8000] [--rounds 3] [--connections 2]

Each round runs the servers in turn, the order reversed every other round; each is a
granian process (1 worker, 1 Rust runtime thread) driven by keep-alive connections from
this process. uvloop is measured too when it is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import http.client
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

from bench.harness import free_port, wait_until

APP = '''
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor


def answer(body):
    return json.dumps({"id": 1, "echo": json.loads(body or b"{}")}).encode()


def wsgi(environ, start_response):
    out = answer(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(out)))])
    return [out]


async def rsgi(scope, proto):
    out = answer(await proto())
    proto.response_bytes(200, [("content-type", "application/json")], out)


pool = ThreadPoolExecutor(8)


async def rsgi_pool(scope, proto):
    body = await proto()
    out = await asyncio.get_running_loop().run_in_executor(pool, answer, body)
    proto.response_bytes(200, [("content-type", "application/json")], out)
'''

TICKS = os.sysconf("SC_CLK_TCK")
BODY = json.dumps({"type": "echo", "environment": {"N": 5}}).encode()


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (granian's worker process)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                todo.extend(int(child) for child in children.read_text().split())
        except (OSError, ValueError):
            continue
    return total


def up(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("POST", "/", BODY)
        return connection.getresponse().status == 200
    except OSError:
        return False


def measure(folder: Path, interface: str, target: str, options: list[str], count: int,
            connections: int) -> tuple[float, float]:
    """(server CPU seconds a request, requests a second) of one server."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", interface, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--runtime-threads", "1",
         "--log-level", "error", *options, f"bench_app:{target}"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: up(port), timeout=30, interval=0.05)

        def drive() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port)
            for _ in range(count // connections):
                connection.request("POST", "/task/", BODY,
                                   {"Content-Type": "application/json"})
                connection.getresponse().read()

        cpu0, began = tree_cpu(server.pid), time.perf_counter()
        threads = [threading.Thread(target=drive) for _ in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu1 = time.perf_counter() - began, tree_cpu(server.pid)
        done = count // connections * connections
        return (cpu1 - cpu0) / done, done / elapsed
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args()
    servers = {
        "WSGI, on granian's blocking threads (as blanket serves)":
            ("wsgi", "wsgi", ["--blocking-threads", "8"]),
        "RSGI, answered on its asyncio loop": ("rsgi", "rsgi", ["--loop", "asyncio"]),
        "RSGI, answered on a thread pool": ("rsgi", "rsgi_pool", ["--loop", "asyncio"]),
    }
    if importlib.util.find_spec("uvloop") is not None:
        servers["RSGI, answered on its uvloop loop"] = ("rsgi", "rsgi", ["--loop", "uvloop"])
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory(prefix="blanket-interfaces-") as tmp:
        folder = Path(tmp)
        (folder / "bench_app.py").write_text(APP)
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                results[name].append(measure(folder, *servers[name], args.requests,
                                             args.connections))
            print(f"round {round_ + 1}: " + ", ".join(
                f"{servers[name][1]}{'/uvloop' if 'uvloop' in name else ''} "
                f"{results[name][-1][0] * 1e6:.0f} us" for name in servers), flush=True)
    base = statistics.median(cpu for cpu, _ in results[next(iter(servers))])
    for name, measured in results.items():
        cpu = statistics.median(c for c, _ in measured)
        rate = statistics.median(r for _, r in measured)
        print(f"{name}: {cpu * 1e6:.0f} us of server CPU a request (median of "
              f"{args.rounds}; {cpu / base:.2f}x WSGI), {rate:,.0f} requests/s from "
              f"{args.connections} connections")


if __name__ == "__main__":
    main()
