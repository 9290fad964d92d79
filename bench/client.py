"""Time per request of the client the worker and the command line use (blanket.httpwire on a
kept-alive connection) next to http.client on the same server, in the same run: a loop of
GET /health against a real blanket server.

    python -P bench/client.py [-n 5000] [--rounds 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import http.client
import statistics
import time

from bench.harness import server_with_workers
from blanket.client import Client


def lean(url: str, count: int) -> float:
    client = Client(url)
    client.send("GET", "/health")
    began = time.process_time()
    for _ in range(count):
        client.send("GET", "/health")
    return (time.process_time() - began) / count


def stdlib(port: int, count: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/health")
    connection.getresponse().read()
    began = time.process_time()
    for _ in range(count):
        connection.request("GET", "/health")
        connection.getresponse().read()
    connection.close()
    return (time.process_time() - began) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with server_with_workers({}, "blanket-client-") as running:
        url = running.client.base_url
        port = int(url.rsplit(":", 1)[1])
        ours, theirs = [], []
        for round_ in range(args.rounds):
            pair = [(ours, lambda: lean(url, args.requests)),
                    (theirs, lambda: stdlib(port, args.requests))]
            for samples, measure in pair if round_ % 2 == 0 else reversed(pair):
                samples.append(measure())
    mine, stdlib_cost = statistics.fmean(ours), statistics.fmean(theirs)
    print(f"client CPU per request (GET /health, keep-alive, {args.requests:,} x "
          f"{args.rounds} rounds): blanket.httpwire {mine * 1e6:.0f} us, http.client "
          f"{stdlib_cost * 1e6:.0f} us, ratio {mine / stdlib_cost:.2f}")


if __name__ == "__main__":
    main()
