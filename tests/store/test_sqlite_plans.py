"""SQLite's query plans for what runs on every request or wake-up: each reads an index range,
never every queued task (a rule: a long backlog must not slow each claim's wake-up)."""

from __future__ import annotations

import sqlite3

from blanket.store.sqlite import Q


def plan(db: sqlite3.Connection, query: str, params: tuple | dict) -> str:
    return " | ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + query, params))


def test_the_next_held_back_start_reads_the_index_of_held_back_tasks(db: sqlite3.Connection):
    found = plan(db, Q["next_not_before"], (1.0,))
    assert "USING INDEX tasks_waiting (not_before>?)" in found, found


def test_a_claim_asked_again_reads_only_claimed_tasks(db: sqlite3.Connection):
    found = plan(db, Q["claimed_by_key"], {"worker": "w1", "key": "claim:k"})
    assert "USING INDEX tasks_by_state (state=?)" in found or \
        "USING INDEX tasks_active (state=?)" in found, found
