"""The server's side of tokens: creating, verifying (with a short cache), revoking, web
sessions, and the local admin token file. The rules of roles and names are blanket/auth.py."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from blanket.auth import (
    ADMIN,
    TOKEN_PATTERN,
    TOKEN_PREFIX,
    Identity,
    Unauthorized,
    check_name,
    check_role,
    hash_secret,
    server_key,
)
from blanket.errors import InvalidInput, NotFound
from blanket.models import Token
from blanket.store.base import Store
from blanket.taskdir import DataDir

SESSION_LIFETIME = 12 * 3600.0
CACHE_SECONDS = 5.0  # a token revoked through another server stops working within this
CACHE_MAX = 10_000


class Tokens:
    """Creates, verifies and revokes tokens and web sessions, over the store."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[str, tuple[Identity, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every revocation on this server

    def create(self, name: str, role: str, *, types: tuple[str, ...] = (),
               tags: tuple[str, ...] = (), expires: float | None = None,
               parent: str | None = None, now: float | None = None) -> tuple[Token, str]:
        """A new token and its secret form (`bkt_ID.SECRET`), which is shown only now."""
        now = time.time() if now is None else now
        check_name(name)
        check_role(role)
        if expires is not None and expires <= now:
            raise InvalidInput("the expiry must lie in the future")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        token = Token(id=token_id, name=name, role=role, hash=hash_secret(secret),
                      created=now, types=types, tags=tags, expires=expires, parent=parent)
        self.store.add_token(token)
        return token, f"{TOKEN_PREFIX}{token_id}.{secret}"

    def verify(self, presented: str, now: float | None = None) -> Identity:
        """The identity a presented token stands for; Unauthorized (saying why) if it is
        malformed, unknown, revoked or expired."""
        now = time.time() if now is None else now
        cached = self._cache.get(presented)
        if cached is not None and now - cached[1] < CACHE_SECONDS:
            identity = cached[0]
        else:
            generation = self._generation
            identity = self._lookup(presented)
            with self._lock:
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
                # Not cached if a revocation on this server came while it was looked up.
                if generation == self._generation:
                    self._cache[presented] = (identity, now)
        if identity.expires is not None and identity.expires <= now:
            raise Unauthorized(f"token {identity.name!r} has expired; ask an admin for a new "
                               "one (blanket token create)")
        return identity

    def _lookup(self, presented: str) -> Identity:
        match = TOKEN_PATTERN.fullmatch(presented)
        token = self.store.get_token(match.group(1)) if match else None
        if (match is None or token is None
                or not hmac.compare_digest(token.hash, hash_secret(match.group(2)))):
            raise Unauthorized("the token is not valid: check that it was copied whole "
                               "(it starts with bkt_)")
        if token.revoked is not None:
            raise Unauthorized(f"token {token.name!r} was revoked")
        return Identity(name=token.name, role=token.role, types=token.types, tags=token.tags,
                        token_id=token.id, session=token.parent is not None,
                        expires=token.expires)

    def forget(self) -> None:
        """Drop cached verifications (after a revocation on this server)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def list(self) -> list[Token]:
        return self.store.list_tokens()

    def revoke(self, name: str, now: float | None = None) -> Token:
        revoked = self.store.revoke_token(name, time.time() if now is None else now)
        self.forget()
        if revoked is None:
            raise NotFound(f"no live token named {name!r}; `blanket token ls` lists them")
        return revoked

    def open_session(self, presented: str, now: float | None = None) -> tuple[Identity, str]:
        """A web session for a valid API token: (its identity, the session's secret form)."""
        now = time.time() if now is None else now
        identity = self.verify(presented, now)
        if identity.session:
            raise InvalidInput("sign in with an API token, not a session")
        expires = now + SESSION_LIFETIME
        if identity.expires is not None:
            expires = min(expires, identity.expires)
        _, session = self.create(identity.name, identity.role, types=identity.types,
                                 tags=identity.tags, expires=expires,
                                 parent=identity.token_id, now=now)
        return self.verify(session, now), session

    def close_session(self, identity: Identity) -> None:
        if identity.session and identity.token_id:
            self.store.end_session(identity.token_id, time.time())
            self.forget()

    def ensure_admin_file(self, data_dir: Path, urls: Iterable[str] = ()) -> Path:
        """The admin token that the CLI and local workers on this machine use: kept in
        data_dir (mode 0600) and made anew when missing or no longer valid. Beside it,
        `admin.servers` lists the URLs of this server: a client sends the token only there."""
        path = DataDir(data_dir).admin_token
        _write_private(DataDir(data_dir).admin_servers,
                       "".join(f"{server_key(u)}\n" for u in urls))
        with contextlib.suppress(OSError, UnicodeDecodeError):
            try:
                if self.verify(path.read_text().strip()).role == ADMIN:
                    return path
            except Unauthorized:
                pass
        _, secret = self.create(f"local-admin-{secrets.token_hex(3)}", ADMIN)
        _write_private(path, secret + "\n")
        return path


def _write_private(path: Path, text: str) -> None:
    """Write `path` whole (mode 0600): readers see the old content or the new."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)
