"""Fixtures giving each test a fresh store: SQLite in a temp file, PostgreSQL in its own DB."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import psycopg
import pytest

from blanket.store import open_store
from blanket.store.base import Store
from blanket.store.sqlite import SQLiteStore

ADMIN_URL = os.environ.get("BLANKET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

Opener = Callable[[], Store]


@cache
def _postgres_unreachable() -> str | None:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        return f"PostgreSQL at {ADMIN_URL} is unreachable ({str(error).strip()})"
    return None


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A database of its own, so parallel workers and tests never see each other's rows or locks."""
    reason = _postgres_unreachable()
    if reason:
        if os.environ.get("CI") == "true":  # a skipped store test is no test in CI
            pytest.fail(f"{reason}; CI needs PostgreSQL (BLANKET_TEST_POSTGRES)")
        pytest.skip(reason)
    name = f"blanket_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blanket.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@contextmanager
def opener(url: str) -> Iterator[Opener]:
    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(open_store(url))
        return opened[-1]

    try:
        yield open_one
    finally:
        for store in opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def open_another(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on this test's database; each call is another server on the same data."""
    with database_url(request.param, tmp_path) as url, opener(url) as open_one:
        yield open_one


@pytest.fixture
def store(open_another: Opener) -> Store:
    return open_another()


@pytest.fixture
def open_postgres() -> Iterator[Opener]:
    """Like open_another, for behaviour only PostgreSQL has (wake-ups across servers, locks)."""
    with fresh_postgres_database() as url, opener(url) as open_one:
        yield open_one


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to a fresh SQLite store's file (for query plans)."""
    store = SQLiteStore(tmp_path / "blanket.db")
    connection = sqlite3.connect(tmp_path / "blanket.db")
    yield connection
    connection.close()
    store.close()
