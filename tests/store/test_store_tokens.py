"""The store's part of access control, on every backend: tokens, sessions, who submitted and
stopped a task, which variables are secret, which token registered a worker."""

from __future__ import annotations

import pytest

from blanket.errors import Conflict
from blanket.models import TaskState, Token, Worker
from blanket.store.base import Store
from tests.store.test_store import NOW, claimed, new_task


def token(id: str = "a" * 16, name: str = "ci", parent: str | None = None, **fields) -> Token:
    return Token(id=id, name=name, role="submitter", hash="f" * 64, created=NOW,
                 parent=parent, **fields)


def test_a_token_is_stored_with_its_scopes_and_found_by_id(store: Store) -> None:
    store.add_token(token(types=("ocr-*",), tags=("gpu",), expires=NOW + 60))
    found = store.get_token("a" * 16)
    assert found == token(types=("ocr-*",), tags=("gpu",), expires=NOW + 60)
    assert store.get_token("b" * 16) is None


def test_two_live_tokens_cannot_share_a_name_but_a_revoked_name_is_free(store: Store) -> None:
    store.add_token(token())
    with pytest.raises(Conflict):
        store.add_token(token(id="b" * 16))
    assert store.revoke_token("ci", NOW).revoked == NOW
    store.add_token(token(id="c" * 16))
    assert [t.id for t in store.list_tokens()] == ["a" * 16, "c" * 16]


def test_revoking_a_token_revokes_its_sessions_and_not_others(store: Store) -> None:
    store.add_token(token())
    store.add_token(token(id="b" * 16, name="other"))
    store.add_token(token(id="s" * 16, parent="a" * 16))
    store.add_token(token(id="t" * 16, name="other", parent="b" * 16))
    store.revoke_token("ci", NOW)
    assert store.get_token("s" * 16).revoked == NOW
    assert store.get_token("t" * 16).revoked is None
    assert store.revoke_token("ci", NOW) is None  # nothing live by that name any more


def test_sessions_are_not_listed_and_end_one_at_a_time(store: Store) -> None:
    store.add_token(token())
    store.add_token(token(id="s" * 16, parent="a" * 16))
    store.add_token(token(id="u" * 16, parent="a" * 16))
    assert [t.id for t in store.list_tokens()] == ["a" * 16]
    store.end_session("s" * 16, NOW)
    assert store.get_token("s" * 16).revoked == NOW
    assert store.get_token("u" * 16).revoked is None
    store.end_session("a" * 16, NOW)  # not a session: untouched
    assert store.get_token("a" * 16).revoked is None


def test_a_task_keeps_who_submitted_it_and_its_secret_names(store: Store) -> None:
    task = store.add_task(new_task(submitted_by="alice", secrets=("A",)))
    again = store.get_task(task.id)
    assert (again.submitted_by, again.secrets) == ("alice", ("A",))
    assert again.to_json()["environment"] == {"A": "***"}
    assert again.to_json(with_token=True)["environment"] == {"A": "1"}


def test_a_stop_records_who_asked(store: Store) -> None:
    queued = store.add_task(new_task())
    assert store.stop_queued(queued.id, NOW, "bob").stopped_by == "bob"
    running = claimed(store)
    stopping = store.request_stop(running.id, "carol")
    assert (stopping.stopped_by, stopping.state) == ("carol", TaskState.CLAIMED)


def test_a_worker_keeps_the_token_that_registered_it(store: Store) -> None:
    store.save_worker(Worker(id="w1", tags=("a",), host="h", pid=1, state="idle",
                             registered=NOW, heartbeat=NOW, owner="gpu-box"))
    assert store.get_worker("w1").owner == "gpu-box"
