"""What `blanket backup` reads of a PostgreSQL store: counts and folders, in a read-only
transaction that never migrates the live database (a newer CLI must not upgrade the schema
under the servers using it)."""

from __future__ import annotations

import psycopg

from blanket.store import open_store
from blanket.store.snapshot import postgres_facts
from tests.store.conftest import fresh_postgres_database
from tests.store.test_store import new_task


def test_reading_the_facts_migrates_nothing():
    with fresh_postgres_database() as url:
        store = open_store(url)
        try:
            queued = store.add_task(new_task())
        finally:
            store.close()
        with psycopg.connect(url, autocommit=True) as conn:  # as if one migration were new
            last = conn.execute("SELECT max(version) FROM blanket_schema").fetchone()[0]
            conn.execute("DELETE FROM blanket_schema WHERE version = %s", (last,))
        facts = postgres_facts(url)
        assert facts.tasks == {"QUEUED": 1} and facts.folders == (("echo", queued.id),)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT max(version) FROM blanket_schema").fetchone()[0] \
                == last - 1
