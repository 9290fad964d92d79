"""Who may do what: roles, identities, the form of API tokens and names, and which token a
client on this machine sends where. The server keeps and checks tokens in
blanket/server/tokens.py.

A token reads `bkt_ID.SECRET`: the ID finds its record, the SECRET is checked against the
stored SHA-256 in constant time. Tokens are random (256 bits), so a fast hash is enough; the
store never holds a secret.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from blanket.errors import BlanketError, InvalidInput
from blanket.models import Task
from blanket.taskdir import DataDir

# Roles in rising order: each can do what the ones before it can.
VIEWER, SUBMITTER, OPERATOR, ADMIN = "viewer", "submitter", "operator", "admin"
RANKED = (VIEWER, SUBMITTER, OPERATOR, ADMIN)
WORKER = "worker"  # beside the ranking: claims and reports tasks, reads nothing else
ROLES = (*RANKED, WORKER)
NONE = "none"  # what an anonymous request gets when anonymous access is off
PUBLIC = "public"  # a route anyone may call (the page's files, /health, login)
ANONYMOUS_ROLES = (NONE, VIEWER, SUBMITTER, OPERATOR)  # worker and admin need a token

TOKEN_PREFIX = "bkt_"
TOKEN_PATTERN = re.compile(r"bkt_([0-9a-f]{16})\.([A-Za-z0-9_-]{20,100})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}")


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


def server_key(url: str) -> str:
    """A server URL compared for sameness: scheme, host and port, loopback names as one."""
    parts = urlsplit(url.strip())
    if parts.scheme == "unix" or not parts.netloc:
        return url.strip().rstrip("/")
    host = (parts.hostname or "").lower()
    if host in ("localhost", "127.0.0.1", "::1"):
        host = "loopback"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


def read_token_file(path: Path) -> str | None:
    """The token kept in `path`, or None when there is none to read."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if TOKEN_PATTERN.fullmatch(text) else None


def client_token(explicit: str | None, data_dirs: tuple[Path, ...],
                 server_url: str) -> str | None:
    """The token a client on this machine sends: the one it was given (--token or
    BLANKET_TOKEN), else the admin token of a local server's data dir, but only to that
    very server (its admin.servers), never to another one a URL or a settings file names."""
    if explicit:
        return explicit.strip()
    for data_dir in data_dirs:
        try:
            servers = DataDir(data_dir).admin_servers.read_text().split()
        except (OSError, UnicodeDecodeError):
            continue
        found = read_token_file(DataDir(data_dir).admin_token)
        if found and server_key(server_url) in servers:
            return found
    return None
