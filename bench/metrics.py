"""What the server's metrics and its per-task log line cost a task, measured in-process:
each verb a task's path calls (a submission counted, a claim's wait, an attempt's end, three
HTTP requests through the meter, three store commits) and the `task ended` line at info
into a JSON log file (and at warning, filtered out), in microseconds per task.

    python -P bench/metrics.py [-n 20000]

bench/throughput.py measures the same cost end to end (its servers log at warning).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import tempfile
import time
from collections.abc import Callable

import structlog

from blanket.config.settings import LogDestination
from blanket.logs import configure_logging
from blanket.models import Task, TaskState
from blanket.server.api.meter import RequestMeter
from blanket.server.metrics import Metrics


def per_call(step: Callable[[int], object], count: int) -> float:
    """Microseconds per call of `step`, the best of three runs."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for n in range(count):
            step(n)
        best = min(best, time.perf_counter() - began)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=20_000)
    count = parser.parse_args().count
    metrics = Metrics()
    types = [f"type{n}" for n in range(20)]
    queued = [Task(id=n, type=types[n % 20], state=TaskState.QUEUED, environment={}, tags=(),
                   score=1.0, added=1000.0, claimed=1000.5) for n in range(100)]
    ended = [Task(id=n, type=types[n % 20], state=TaskState.SUCCESS, environment={}, tags=(),
                  score=1.0, added=1000.0, worker="w-1", attempt=1,
                  attempts=({"state": "SUCCESS", "started": 1000.6, "finished": 1000.9,
                             "worker": "w-1"},)) for n in range(100)]

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"{}"]

    meter = RequestMeter(app, metrics)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/exchange"}

    def request(n: int) -> None:
        body = meter(environ, lambda status, headers, exc_info=None: None)
        body.close()

    figures = {
        "submitted": per_call(lambda n: metrics.submitted((queued[n % 100],)), count),
        "claimed (queue wait)": per_call(lambda n: metrics.claimed(queued[n % 100]), count),
        "attempt_ended": per_call(lambda n: metrics.attempt_ended(ended[n % 100]), count),
        "one request through the meter": per_call(request, count),
        "store_commit": per_call(lambda n: metrics.store_commit(0.001, True), count),
    }
    for name, micros in figures.items():
        print(f"{name}: {micros:.2f} us")
    task_metrics = (figures["submitted"] + figures["claimed (queue wait)"]
                    + figures["attempt_ended"] + 3 * figures["one request through the meter"]
                    + 3 * figures["store_commit"])
    print(f"metrics per task (1 submission, 1 claim, 1 end, 3 requests, 3 commits): "
          f"{task_metrics:.1f} us")

    log = structlog.get_logger("blanket.queue")

    def line(n: int) -> None:
        task = ended[n % 100]
        log.info("task ended", task=task.id, type=task.type, state=task.state.value,
                 duration=0.3, worker="w-1", attempt=1, exit_code=0, error=None)

    with tempfile.TemporaryDirectory() as folder:
        for level in ("info", "warning"):
            configure_logging((LogDestination(destination="log/blanket.log", level=level,
                                              format="json"),), 0, Path(folder))
            print(f"'task ended' line, log at {level}: {per_call(line, count):.1f} us")


if __name__ == "__main__":
    main()
