"""What a wrong database URL says: an unreachable PostgreSQL or a missing driver is a clear
error naming what to fix, with any password in the URL hidden."""

from __future__ import annotations

import sys

import pytest

from blanket.errors import InvalidInput
from blanket.store import open_store, without_password
from tests.conftest import free_port


def test_an_unreachable_postgresql_says_so_without_its_password():
    url = f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(InvalidInput) as refused:
        open_store(url)
    message = refused.value.message
    assert "cannot connect to the database" in message and "hunter2" not in message
    assert "bob:***@127.0.0.1" in message and "PostgreSQL is running" in message


def test_a_missing_driver_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    monkeypatch.delitem(sys.modules, "blanket.store.postgres", raising=False)
    with pytest.raises(InvalidInput, match=r"pip install 'blanket\[postgres\]'"):
        open_store("postgresql://127.0.0.1/blanket")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
    ("postgresql://h/db", "postgresql://h/db"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("sqlite:///var/blanket.db", "sqlite:///var/blanket.db"),
])
def test_passwords_are_hidden_in_messages(url: str, shown: str):
    assert without_password(url) == shown
