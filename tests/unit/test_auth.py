"""Rules of access: role ranks, scopes, ownership, token verification and its cache."""

from __future__ import annotations

import pytest

from blanket.auth import (
    ADMIN,
    OPERATOR,
    SUBMITTER,
    VIEWER,
    WORKER,
    Identity,
    Unauthorized,
    allows,
    anonymous,
    client_token,
    csrf_token,
)
from blanket.config.settings import load_settings
from blanket.envnames import loader_name
from blanket.models import Task, TaskState
from blanket.server.tokens import Tokens
from blanket.store.sqlite import SQLiteStore

ROLES = (VIEWER, SUBMITTER, OPERATOR, ADMIN, WORKER)


def task(submitted_by: str | None) -> Task:
    return Task(id=1, type="t", state=TaskState.QUEUED, environment={}, tags=(), score=0,
                added=0, submitted_by=submitted_by)


@pytest.mark.parametrize(("role", "reaches"), [
    (VIEWER, {VIEWER}),
    (SUBMITTER, {VIEWER, SUBMITTER}),
    (OPERATOR, {VIEWER, SUBMITTER, OPERATOR}),
    (ADMIN, {VIEWER, SUBMITTER, OPERATOR, ADMIN, WORKER}),
    (WORKER, {WORKER}),
    ("none", set()),
])
def test_each_role_reaches_exactly_the_roles_below_it(role, reaches):
    identity = Identity(name="x", role=role, token_id="id")
    assert {r for r in ROLES if identity.at_least(r)} == reaches
    assert identity.at_least("public")


def test_a_route_naming_several_roles_allows_any_of_them():
    assert allows(Identity("w", WORKER, token_id="i"), (VIEWER, WORKER))
    assert not allows(Identity("s", SUBMITTER, token_id="i"), (OPERATOR, WORKER))


def test_a_submitter_changes_only_its_own_tasks_and_anonymous_ones_none():
    alice = Identity("alice", SUBMITTER, token_id="i")
    assert alice.may_change(task("alice"))
    assert not alice.may_change(task("bob"))
    assert not anonymous(SUBMITTER).may_change(task("anonymous"))
    assert anonymous(OPERATOR).may_change(task("bob"))


def test_scopes_are_globs_and_empty_means_any():
    scoped = Identity("x", SUBMITTER, types=("ocr-*", "report"), tags=("gpu",))
    assert scoped.may_submit("ocr-fast") and scoped.may_submit("report")
    assert not scoped.may_submit("reports") and not scoped.may_claim("cpu")
    assert Identity("y", SUBMITTER).may_submit("anything")


@pytest.fixture
def tokens(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    yield Tokens(store)
    store.close()


def test_a_token_verifies_and_a_changed_secret_does_not(tokens):
    made, secret = tokens.create("ci", SUBMITTER, types=("a*",))
    assert tokens.verify(secret) == Identity("ci", SUBMITTER, types=("a*",), token_id=made.id)
    for forged in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), "bkt_nope", "", secret + "x"):
        with pytest.raises(Unauthorized):
            tokens.verify(forged)
    assert made.hash not in secret  # only the hash is stored


def test_expiry_is_checked_on_every_use_even_when_cached(tokens):
    _, secret = tokens.create("short", VIEWER, expires=1_000.0, now=900.0)
    assert tokens.verify(secret, now=950.0).name == "short"
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(secret, now=1_000.5)


def test_revoking_on_this_server_takes_effect_at_once_despite_the_cache(tokens):
    _, secret = tokens.create("gone", VIEWER)
    tokens.verify(secret)
    tokens.revoke("gone")
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.verify(secret)


def test_a_session_is_its_tokens_child_and_has_its_own_csrf_token(tokens):
    _, secret = tokens.create("web", OPERATOR)
    identity, session = tokens.open_session(secret)
    assert identity.session and identity.role == OPERATOR and session != secret
    assert csrf_token(session) != csrf_token(secret)
    tokens.close_session(identity)
    with pytest.raises(Unauthorized):
        tokens.verify(session)
    assert tokens.verify(secret).name == "web"


def test_the_admin_file_is_reused_while_valid(tokens, tmp_path):
    path = tokens.ensure_admin_file(tmp_path, ["http://127.0.0.1:8773"])
    first = path.read_text()
    assert tokens.ensure_admin_file(tmp_path, ["http://127.0.0.1:8773"]).read_text() == first
    assert client_token("bkt_explicit", (tmp_path,), "http://x:1") == "bkt_explicit"


@pytest.mark.parametrize(("url", "sent"), [
    ("http://127.0.0.1:8773", True), ("http://localhost:8773/", True),
    ("http://[::1]:8773", True), ("http://127.0.0.1:8774", False),
    ("https://127.0.0.1:8773", False), ("http://evil.example:8773", False),
])
def test_the_admin_token_goes_only_to_its_own_server(tokens, tmp_path, url, sent):
    path = tokens.ensure_admin_file(tmp_path, ["http://127.0.0.1:8773"])
    found = client_token(None, (tmp_path,), url)
    assert found == (path.read_text().strip() if sent else None)


@pytest.mark.parametrize("name", ["BASH_ENV", "LD_PRELOAD", "PYTHONPATH", "PATH", "IFS",
                                  "PERL5LIB", "NODE_OPTIONS", "BASH_FUNC_f%%", "BLANKET_X"])
def test_loader_names_are_recognised(name):
    assert loader_name(name)


@pytest.mark.parametrize("name", ["INPUT", "path_to_file", "LANG_CODE", "MY_PATH", "Path"])
def test_ordinary_names_are_not_loader_names(name):
    assert not loader_name(name)


@pytest.mark.parametrize(("host", "role"), [("127.0.0.1", "operator"), ("localhost", "operator"),
                                            ("::1", "operator"), ("0.0.0.0", "none"),
                                            ("192.0.2.7", "none")])
def test_anonymous_access_defaults_by_the_bound_address(host, role, tmp_path):
    settings = load_settings(tmp_path / "none.toml", {"host": host}, environ={})
    assert settings.anonymous_role == role


def test_anonymous_cannot_be_set_to_worker_or_admin(tmp_path):
    with pytest.raises(Exception, match="worker and admin"):
        load_settings(tmp_path / "none.toml", {"anonymous": "admin"}, environ={})


def test_a_revocation_during_a_lookup_is_not_undone_by_the_cache(tokens):
    _, secret = tokens.create("racy", VIEWER)
    real_lookup = tokens._lookup

    def lookup_then_revoked(presented):
        identity = real_lookup(presented)
        tokens.revoke("racy")  # lands between the look-up and the caching
        return identity

    tokens._lookup = lookup_then_revoked
    tokens.verify(secret)
    tokens._lookup = real_lookup
    with pytest.raises(Unauthorized, match="revoked"):
        tokens.verify(secret)
