"""SQL files: numbered migrations and named queries, one folder per database."""

from __future__ import annotations

import re
from importlib import resources


def load_queries(dialect: str) -> dict[str, str]:
    """Named blocks (`-- name: NAME`) of sql/DIALECT/queries.sql."""
    text = resources.files(__package__).joinpath(dialect, "queries.sql").read_text()
    blocks = re.split(r"^-- name: (\w+)\s*$", text, flags=re.M)
    names = blocks[1::2]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # the second would silently replace the first
        raise ValueError(f"{dialect}/queries.sql names {', '.join(twice)} more than once")
    return {name: body.strip().rstrip(";") for name, body in zip(names, blocks[2::2],
                                                                  strict=True)}


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    """(number, sql) of sql/DIALECT/NNNN_*.sql in order."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = re.match(r"(\d{4})_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    return sorted(found)
