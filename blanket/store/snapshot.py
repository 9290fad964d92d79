"""A consistent copy of a SQLite store while the server runs, and what a backup needs to know
of a store: its schema level, its tasks by state, the tasks not yet ended (whose folders hold
inputs a restored server still needs). `blanket/backup/` uses it; nothing else opens the
database file outside the store."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from blanket.models import FINAL_STATES, TaskState
from blanket.store.sql import load_migrations

_ENDED = tuple(sorted(s.value for s in FINAL_STATES))
_NOT_ENDED = tuple(s.value for s in TaskState if s not in FINAL_STATES)


class BadStoreCopy(Exception):
    """A copied or restored store that fails its checks; the message says which."""


@dataclass(frozen=True)
class StoreFacts:
    schema: int | None  # the migration level (None: not known, as for PostgreSQL here)
    tasks: dict[str, int] = field(default_factory=dict)  # tasks by state
    # (type, id) of the tasks whose folders a backup takes: those not yet ended (their
    # inputs), or every task
    folders: tuple[tuple[str, int], ...] = ()


def schema_level(dialect: str) -> int:
    """The newest migration this code knows for `dialect` (sqlite or postgres)."""
    return max(number for number, _ in load_migrations(dialect))


def _read_only(path: Path) -> str:
    """The URI that opens `path` read-only (any character in its name escaped)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def copy_sqlite(source: Path, dest: Path, every_task: bool = False) -> StoreFacts:
    """Copy the SQLite store at `source` to `dest` (a new file) with SQLite's online backup
    API in one step: one read transaction on a WAL database, so the copy is the store as of
    one commit while the server goes on writing. Then check the copy."""
    if not source.is_file():
        raise BadStoreCopy(f"no SQLite store at {source}: is this the data dir of a server "
                           "that has started (or does it use PostgreSQL)?")
    src = sqlite3.connect(_read_only(source), uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: all at once, under one read transaction
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise BadStoreCopy(f"cannot copy the store {source}: {e}") from None
    finally:
        src.close()
    return check_sqlite(dest, every_task)


def check_sqlite(path: Path, every_task: bool = False) -> StoreFacts:
    """`PRAGMA integrity_check` of the SQLite file at `path` (which must pass), and its facts."""
    try:
        db = sqlite3.connect(_read_only(path), uri=True)
    except sqlite3.Error as e:
        raise BadStoreCopy(f"{path} is not a SQLite database: {e}") from None
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BadStoreCopy(f"{path} fails its integrity check: {'; '.join(problems[:5])}")
        schema = db.execute("PRAGMA user_version").fetchone()[0]
        tasks = dict(db.execute("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state"))
        marks = ",".join("?" * len(_ENDED))
        which = "" if every_task else f"WHERE state NOT IN ({marks})"
        folders = tuple(db.execute(f"SELECT type, id FROM tasks {which} ORDER BY id",
                                   () if every_task else _ENDED))
    except sqlite3.DatabaseError as e:
        raise BadStoreCopy(f"{path} is not a blanket store: {e}") from None
    finally:
        db.close()
    return StoreFacts(schema=schema, tasks=tasks, folders=folders)


def postgres_facts(url: str, every_task: bool = False) -> StoreFacts:
    """Tasks by state and those not yet ended, read from the PostgreSQL store at `url` (whose
    database itself pg_dump copies), in one read-only transaction and without opening it as
    a store: a backup never migrates the live database under the servers using it."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, row_factory=dict_row) as conn:
        conn.read_only = True
        tasks = {r["state"]: int(r["n"]) for r in conn.execute(
            "SELECT state, count(*) AS n FROM tasks GROUP BY state ORDER BY state")}
        if every_task:
            rows = conn.execute("SELECT type, id FROM tasks ORDER BY id")
        else:
            rows = conn.execute("SELECT type, id FROM tasks WHERE state = ANY(%s) ORDER BY id",
                                (list(_NOT_ENDED),))
        folders = [(r["type"], int(r["id"])) for r in rows]
    return StoreFacts(schema=None, tasks=dict(sorted(tasks.items())),
                      folders=tuple(folders))
