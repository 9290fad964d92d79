"""What a dependency edge costs, through a real server and a worker with two slots.

Three runs of `true` tasks, each timed from the first submission (all submitted at once, in
one bulk request) to the last end:
  - independent: N tasks with no `after`;
  - chain: N tasks, each after the one before (N - 1 edges, one task runnable at a time);
  - fan-out: a root, then N tasks after it (N edges), then one task after all of them
    (N more: a fan-in).
A chain runs one task at a time, so it is compared with N independent tasks through one
slot (the other paused): the difference per edge is what the dependency itself costs (the
release in the ending transaction, and the claim that cannot be made ahead), not the lost
parallelism. The fan-out is compared with N + 2
independent tasks. Also timed in the store alone: ending a task that N tasks wait for.

Then the same through workflow files (conf.d/workflows/), where the server's advancer makes
each step's tasks as the steps before them succeed:
  - a workflow fan-out: a step writes a list of N items to its results, a step fans out
    over it (`each`), a last step gathers their results (2N edges), against N + 2
    independent tasks;
  - a workflow chain of the most steps a file may hold (200), each `after` the one before,
    through one slot, against as many independent tasks through one slot.

    python -P bench/workflow.py [--tasks 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, for bench.harness (run with -P: see bench/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import tempfile
import time

from bench.harness import server_with_workers, wait_until
from blanket.client import Client
from blanket.models import TaskState
from blanket.store import open_store
from blanket.store.base import Claim, NewTask, Outcome

TRUE = 'command = "true"\n'
ENDED = "SUCCESS,FAILED,TIMEDOUT,STOPPED,SKIPPED,LOST"
CHAIN_STEPS = 200  # the most steps a workflow file may hold


def ended_count(client: Client) -> int:
    return client.get(f"/task/?count&state={ENDED}")["count"]


def timed(client: Client, tasks: list[dict], before: int) -> float:
    """Seconds from submitting `tasks` in one request to their ends (`before` had ended)."""
    began = time.perf_counter()
    client.post("/task/", tasks)
    wait_until(lambda: ended_count(client) >= before + len(tasks), timeout=900,
               interval=0.01)
    return time.perf_counter() - began


def chained(client: Client, count: int, first_id: int) -> list[dict]:
    """`count` tasks each after the one before; ids are consecutive from `first_id`."""
    return [{"type": "true", **({"after": [first_id + n - 1]} if n else {})}
            for n in range(count)]


def one_slot(client: Client, count: int) -> tuple[float, float]:
    """(independent tasks, a chain) of `count` through one slot, the other paused."""
    slots = sorted(w["id"] for w in client.get("/worker/"))
    client.post(f"/worker/{slots[1]}/pause")
    try:
        independent = timed(client, [{"type": "true"}] * count, ended_count(client))
        first = next_id(client)
        chain = timed(client, chained(client, count, first), ended_count(client))
    finally:
        client.post(f"/worker/{slots[1]}/resume")
    return independent, chain


def next_id(client: Client) -> int:
    return client.post("/task/?wait=60", {"type": "true"})["id"] + 1


def store_fan_in(count: int) -> tuple[float, float]:
    """Milliseconds to end one task that `count` tasks wait for, and one that none waits for
    (SQLite, fsync on: what the end report pays in the transaction)."""
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(f"sqlite:///{Path(folder) / 'b.db'}")
        try:
            new = NewTask(type="t", environment={}, tags=(), score=1.0, added=1.0)
            results = []
            for waiting in (count, 0):
                root = store.add_task(new)
                store.add_tasks([NewTask(type="w", environment={}, tags=("w",), score=2.0,
                                         added=1.0, after=(root.id,))] * waiting)
                taken = store.claim_task(Claim(worker="b", tags=frozenset(), now=2.0))
                assert taken is not None and taken.id == root.id
                began = time.perf_counter()
                store.finish_task(root.id, taken.token or "",
                                  Outcome(state=TaskState.SUCCESS, exit_code=0, finished=3.0))
                results.append((time.perf_counter() - began) * 1000)
            return results[0], results[1]
        finally:
            store.close()


def write_workflow(running, name: str, text: str) -> None:
    folder = running.base / "conf.d" / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml.partial").write_text(text)
    (folder / f"{name}.toml.partial").replace(folder / f"{name}.toml")
    wait_until(lambda: any(w["name"] == name and w["version"]
                           for w in running.client.get("/workflow/")), timeout=30)


def timed_run(client: Client, name: str) -> float:
    """Seconds from starting a run of workflow `name` to its end (it must succeed)."""
    began = time.perf_counter()
    run = client.post(f"/workflow/{name}/run", {})
    while run["state"] == "running":
        run = client.get(f"/run/{run['id']}?wait=60", timeout=120)
    took = time.perf_counter() - began
    if run["state"] != "succeeded":
        raise SystemExit(f"workflow {name} ended {run['state']}: {run['reason']}")
    return took


def fan_workflow(n: int) -> str:
    # a list to fan out over: one item a line, as a string result
    return ('[steps.list]\ncommand = """python3 -c "import json; json.dump({\'ITEMS\': '
            f"'\\\\n'.join(map(str, range({n})))}}, open('results.json', 'w'))\"\"\"\"\n"
            '[steps.each]\ncommand = "true"\nafter = ["list"]\neach = "{{ ITEMS }}"\n'
            '[steps.end]\ncommand = "true"\nafter = ["each"]\n')


def chain_workflow(steps: int) -> str:
    return "".join(f'[steps.s{i}]\ncommand = "true"\n'
                   + (f'after = ["s{i - 1}"]\n' if i else "") for i in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    n = parser.parse_args().tasks
    with server_with_workers({"true": TRUE}, "blanket-workflow-") as running:
        client = running.client
        client.post("/task/?wait=60", {"type": "true"})  # warm: the bundle is fetched
        independent = timed(client, [{"type": "true"}] * n, ended_count(client))
        serial, chain = one_slot(client, n)
        root = next_id(client)
        fan = [{"type": "true"}] + [{"type": "true", "after": [root]}] * n
        fan.append({"type": "true", "after": list(range(root + 1, root + n + 1))})
        fan_out = timed(client, fan, ended_count(client))
        independent_more = timed(client, [{"type": "true"}] * (n + 2), ended_count(client))
        write_workflow(running, "fan", fan_workflow(n))
        flow_fan = timed_run(client, "fan")
        flow_independent = timed(client, [{"type": "true"}] * (n + 2), ended_count(client))
        write_workflow(running, "chain", chain_workflow(CHAIN_STEPS))
        slots = sorted(w["id"] for w in client.get("/worker/"))
        client.post(f"/worker/{slots[1]}/pause")
        try:
            flow_chain = timed_run(client, "chain")
            flow_serial = timed(client, [{"type": "true"}] * CHAIN_STEPS, ended_count(client))
        finally:
            client.post(f"/worker/{slots[1]}/resume")
        failed = client.get("/task/?count&state=FAILED,TIMEDOUT,STOPPED,SKIPPED,LOST")["count"]
        if failed:
            raise SystemExit(f"{failed} tasks did not succeed")
    with_deps, without = store_fan_in(n)
    print(f"independent: {n} tasks in {independent:.2f}s ({n / independent:.0f} tasks/s, "
          "2 slots)")
    print(f"chain of {n} through one slot: {chain:.2f}s; {n} independent tasks through one "
          f"slot: {serial:.2f}s; per edge: {(chain - serial) / (n - 1) * 1000:+.2f} ms")
    print(f"fan-out {n} wide and fan-in ({2 * n} edges): {fan_out:.2f}s; {n + 2} independent "
          f"tasks: {independent_more:.2f}s; per edge: "
          f"{(fan_out - independent_more) / (2 * n) * 1000:+.2f} ms (the root and the fan-in "
          "run alone, which the independent tasks do not)")
    print(f"workflow fan-out {n} wide and fan-in ({2 * n} edges): {flow_fan:.2f}s; {n + 2} "
          f"independent tasks: {flow_independent:.2f}s; per edge: "
          f"{(flow_fan - flow_independent) / (2 * n) * 1000:+.2f} ms")
    print(f"workflow chain of {CHAIN_STEPS} steps through one slot: {flow_chain:.2f}s; "
          f"{CHAIN_STEPS} independent tasks through one slot: {flow_serial:.2f}s; per edge: "
          f"{(flow_chain - flow_serial) / (CHAIN_STEPS - 1) * 1000:+.2f} ms")
    print(f"store: ending a task {n} tasks wait for: {with_deps:.1f} ms; one none waits for: "
          f"{without:.1f} ms; per edge: {(with_deps - without) / n * 1000:.1f} us")


if __name__ == "__main__":
    main()
