"""Time PostgreSQL claims over a large backlog: `python bench/claim_pg.py [ADMIN_URL] [N]`.

Two queues: one where the lowest scores are claimable, one where they need a tag the worker lacks.
"""

from __future__ import annotations

import sys
import time
import uuid

import psycopg

from blanket.store.base import Claim, NewTask
from blanket.store.postgres import PostgresStore


def fill(store: PostgresStore, count: int, tags: tuple[str, ...]) -> None:
    with store._tx() as cur:  # bulk insert: add_task one by one would dominate the run
        cur.execute(
            "INSERT INTO tasks (type, state, environment, tags, score, added) "
            "SELECT 'bulk', 'QUEUED', '{}', %s, g, 0 FROM generate_series(1, %s) g",
            (",".join(tags), count))
        cur.execute("ANALYZE tasks")


def time_claims(store: PostgresStore, rounds: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        store.claim_task(Claim(worker="bench", tags=frozenset(), now=time.time()))
    return (time.perf_counter() - start) / rounds * 1000


def run(admin_url: str, count: int, blocked: bool) -> None:
    name = f"blanket_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    store = PostgresStore(admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        fill(store, count, ("gpu",) if blocked else ())
        for _ in range(200):
            store.add_task(NewTask(type="plain", environment={}, tags=(), score=count + 1.0,
                                   added=0.0))
        label = "lowest need a missing tag" if blocked else "lowest are claimable"
        print(f"{count} queued, {label}: {time_claims(store):.2f} ms per claim")
    finally:
        store.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    run(url, n, blocked=False)
    run(url, n, blocked=True)
