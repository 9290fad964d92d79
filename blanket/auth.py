"""Who may do what: identities, roles, API tokens and web sessions.

A token reads `bkt_ID.SECRET`: the ID finds its record, the SECRET is checked against the
stored SHA-256 in constant time. Tokens are random (256 bits), so a fast hash is enough; the
store never holds a secret. Verified tokens are cached briefly, so checking one costs a dict
look-up on the hot path.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from blanket.errors import BlanketError, InvalidInput, NotFound
from blanket.models import Task, Token
from blanket.store.base import Store

# Roles in rising order: each can do what the ones before it can.
VIEWER, SUBMITTER, OPERATOR, ADMIN = "viewer", "submitter", "operator", "admin"
RANKED = (VIEWER, SUBMITTER, OPERATOR, ADMIN)
WORKER = "worker"  # beside the ranking: claims and reports tasks, reads nothing else
ROLES = (*RANKED, WORKER)
NONE = "none"  # what an anonymous request gets when anonymous access is off
PUBLIC = "public"  # a route anyone may call (the page's files, /health, login)
ANONYMOUS_ROLES = (NONE, VIEWER, SUBMITTER, OPERATOR)  # worker and admin need a token

TOKEN_PREFIX = "bkt_"
_TOKEN = re.compile(r"bkt_([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")
ADMIN_TOKEN_FILE = "admin.token"
SESSION_LIFETIME = 12 * 3600.0
CACHE_SECONDS = 5.0  # a token revoked through another server stops working within this
CACHE_MAX = 10_000


class Unauthorized(BlanketError):
    code = "unauthorized"
    status = 401


class Forbidden(BlanketError):
    code = "forbidden"
    status = 403


@dataclass(frozen=True)
class Identity:
    """Who is asking: a token's name and role, or `anonymous` with the anonymous role."""

    name: str
    role: str
    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    token_id: str | None = None
    session: bool = False  # came with the web page's cookie: writes also need the CSRF token
    expires: float | None = None

    @property
    def anonymous(self) -> bool:
        return self.token_id is None

    def at_least(self, role: str) -> bool:
        """Whether this identity has `role` or one above it (worker stands apart)."""
        if role == PUBLIC:
            return True
        if role == WORKER:
            return self.role in (WORKER, ADMIN)
        return self.role in RANKED and RANKED.index(self.role) >= RANKED.index(role)

    def may_submit(self, type_name: str) -> bool:
        return _matches(type_name, self.types)

    def may_claim(self, tag: str) -> bool:
        return _matches(tag, self.tags)

    def may_change(self, task: Task) -> bool:
        """Operators change any task; a submitter only the tasks it submitted."""
        if self.at_least(OPERATOR):
            return True
        return (self.at_least(SUBMITTER) and not self.anonymous
                and task.submitted_by == self.name)


def _matches(word: str, globs: tuple[str, ...]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(word, g) for g in globs)


def allows(identity: Identity, need: str | tuple[str, ...]) -> bool:
    """Whether `identity` may call a route that declares `need` (a role, or several)."""
    needs = (need,) if isinstance(need, str) else need
    return any(identity.at_least(n) for n in needs)


def anonymous(role: str) -> Identity:
    return Identity(name="anonymous", role=role)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(presented: str) -> str:
    """The CSRF token of a web session: derived from the session's secret, so any server
    can check it and no page on another site can know it."""
    return hmac.new(presented.encode(), b"blanket-csrf", hashlib.sha256).hexdigest()[:40]


# Names blanket records as submitters itself: no token may pass for them.
RESERVED_NAMES = frozenset({"anonymous", "inbox", "schedule", "blanket"})


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"token name {name!r}: use 1-64 letters, digits and _.@:-, "
                           "starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise InvalidInput(f"token name {name!r} is what blanket calls its own submissions; "
                           "choose another")
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role {role!r}: use one of {', '.join(ROLES)}")
    return str(role)


def check_globs(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if (not isinstance(value, list) or len(value) > 100
            or not all(isinstance(v, str) and 0 < len(v) <= 200 and v.isprintable()
                       for v in value)):
        raise InvalidInput(f'"{what}" must be a list of up to 100 patterns such as ["ocr-*"]')
    return tuple(value)


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
        match = _TOKEN.fullmatch(presented)
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

    def ensure_admin_file(self, data_dir: Path) -> Path:
        """The admin token that the CLI and local workers on this machine use: kept in
        data_dir (mode 0600) and made anew when missing or no longer valid."""
        path = data_dir / ADMIN_TOKEN_FILE
        with contextlib.suppress(OSError, UnicodeDecodeError):
            try:
                if self.verify(path.read_text().strip()).role == ADMIN:
                    return path
            except Unauthorized:
                pass
        token, secret = self.create(f"local-admin-{secrets.token_hex(3)}", ADMIN)
        partial = path.with_name(f".{path.name}.{token.id}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        os.replace(partial, path)
        return path


def read_token_file(path: Path) -> str | None:
    """The token kept in `path`, or None when there is none to read."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _TOKEN.fullmatch(text) else None



def client_token(explicit: str | None, data_dirs: tuple[Path, ...]) -> str | None:
    """The token a client on this machine sends: the one it was given (--token or
    BLANKET_TOKEN), else the admin token a local server keeps in its data dir."""
    if explicit:
        return explicit.strip()
    for data_dir in data_dirs:
        found = read_token_file(data_dir / ADMIN_TOKEN_FILE)
        if found:
            return found
    return None
