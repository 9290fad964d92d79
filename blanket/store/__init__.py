"""Open the store a database URL names: sqlite:///PATH (default) or postgresql://..."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from blanket.errors import InvalidInput
from blanket.store.base import Store


def open_store(url: str) -> Store:
    """The store for `url`; SQLite needs nothing installed, PostgreSQL needs psycopg. A
    PostgreSQL server that cannot be reached, or a driver that is not installed, is a
    clear InvalidInput, not a traceback."""
    if url.startswith("sqlite:///"):
        from blanket.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg

            from blanket.store.postgres import PostgresStore
        except ImportError:
            raise InvalidInput(
                f"database {without_password(url)}: PostgreSQL needs its driver, which is not "
                "installed: pip install 'blanket[postgres]'") from None
        try:
            return PostgresStore(url)
        except psycopg.OperationalError as e:
            reason = " ".join(str(e).split())
            raise InvalidInput(
                f"cannot connect to the database {without_password(url)} ({reason}): check "
                "the host, port, user and database name in the URL, and that PostgreSQL is "
                "running and accepts this user") from None
    raise InvalidInput(f"database {without_password(url)!r}: use sqlite:///PATH or "
                       "postgresql://USER@HOST/DB")


def without_password(url: str) -> str:
    """`url` with any password in it replaced by ***, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return url
