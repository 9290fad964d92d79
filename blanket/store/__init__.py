"""Open the store a database URL names: sqlite:///PATH (default) or postgresql://..."""

from __future__ import annotations

from blanket.errors import InvalidInput
from blanket.store.base import Store


def open_store(url: str) -> Store:
    """The store for `url`; SQLite needs nothing installed, PostgreSQL needs psycopg."""
    if url.startswith("sqlite:///"):
        from blanket.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from blanket.store.postgres import PostgresStore

        return PostgresStore(url)
    raise InvalidInput(f"database {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")
