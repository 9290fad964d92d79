"""Retention's queries read index ranges (SQLite's plans; PostgreSQL's with enough rows to
make an index worth it), so a sweep's batch holds the store's lock for its own rows only."""

from __future__ import annotations

import sqlite3

from blanket.store.base import Store
from blanket.store.postgres import PostgresStore
from blanket.store.sql import load_queries
from blanket.store.sqlite import Q
from tests.store.conftest import Opener
from tests.store.test_sqlite_plans import plan


def test_an_ended_page_reads_the_index_on_finished(db: sqlite3.Connection) -> None:
    found = plan(db, Q["ended_page"], {"until": 1.0, "after_finished": 0.0, "after_id": 0,
                                       "limit": 500})
    assert "USING INDEX tasks_by_finished (finished>? AND finished<?)" in found, found
    assert "TEMP B-TREE" not in found, found


def test_a_groups_newest_read_their_index_backwards(db: sqlite3.Connection) -> None:
    by_type = plan(db, Q["newest_of_type"], {"type": "a", "before": 5, "limit": 1000})
    assert "USING INDEX tasks_by_type (type=? AND id<?)" in by_type, by_type
    assert "TEMP B-TREE" not in by_type, by_type
    by_schedule = plan(db, Q["newest_of_schedule"], {"schedule": "a", "before": 5,
                                                     "limit": 1000})
    assert "USING INDEX tasks_by_schedule (schedule=? AND id<?)" in by_schedule, by_schedule


def test_removal_and_version_ranges_go_by_id(db: sqlite3.Connection) -> None:
    removal = plan(db, Q["delete_ended"], {"ids": "[1, 2]"})
    assert "SCAN tasks" not in removal and ("rowid=?" in removal or "id=?" in removal), removal
    versions = plan(db, Q["versions_between"], {"first": 1, "last": 2})
    assert "SCAN tasks" not in versions and "rowid>? AND rowid<?" in versions, versions


def test_removing_dedupe_keys_reads_their_index_by_task(db: sqlite3.Connection) -> None:
    found = plan(db, Q["delete_ended_keys"], {"ids": "[1, 2]"})
    assert "USING INDEX task_keys_by_task (task_id=?)" in found, found
    single = plan(db, Q["delete_keys"], (1,))  # type: ignore[arg-type]
    assert "USING INDEX task_keys_by_task (task_id=?)" in single, single


def test_postgres_reads_ended_pages_by_the_index_on_finished(open_postgres: Opener) -> None:
    store: Store = open_postgres()
    assert isinstance(store, PostgresStore)
    queries = load_queries("postgres")
    with store._tx() as cur:
        cur.execute("INSERT INTO tasks (type, state, environment, tags, score, added, finished) "
                    "SELECT 't' || (g % 7), CASE WHEN g % 3 = 0 THEN 'QUEUED' ELSE 'SUCCESS' "
                    "END, '{}', '', g, g, CASE WHEN g % 3 = 0 THEN NULL ELSE g END "
                    "FROM generate_series(1, 20000) g")
        cur.execute("ANALYZE tasks")
        rows = cur.execute("EXPLAIN " + queries["ended_page"], {
            "until": 100.0, "after_finished": 0.0, "after_id": 0, "limit": 500}).fetchall()
        page = " | ".join(next(iter(r.values())) for r in rows)
        assert "tasks_by_finished" in page, page
        rows = cur.execute("EXPLAIN " + queries["delete_ended"], {"ids": [1, 2]}).fetchall()
        removal = " | ".join(next(iter(r.values())) for r in rows)
        assert "tasks_pkey" in removal, removal
