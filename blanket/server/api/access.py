"""Who may call what: every route declares the least role it needs (`role=` in its
`app.route`), and this plugin checks the caller's credentials against it.

Credentials, in order: `Authorization: Bearer TOKEN`, HTTP Basic with the token as the
password (`curl -u name:TOKEN`), the web page's session cookie (whose writes must also carry
the session's CSRF token in `X-CSRF-Token`). No credentials: the `anonymous` setting's role.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

import bottle

from blanket.auth import (
    NONE,
    Forbidden,
    Identity,
    Unauthorized,
    allows,
    anonymous,
    csrf_token,
)
from blanket.server.heldshare import SHARE
from blanket.server.tokens import Tokens

SESSION_COOKIE = "blanket_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_IDENTITY = "blanket.identity"
_PRESENTED = "blanket.presented"


def identity() -> Identity:
    """The caller of the request being served (set by the Access plugin)."""
    return bottle.request.environ[_IDENTITY]


def caller_of(environ: dict) -> Identity | None:
    """Who made a request, once the Access plugin has checked it (None before, or when it
    was refused before any route)."""
    return environ.get(_IDENTITY)


def presented_token() -> str | None:
    """The token or session secret the caller presented, if any."""
    return bottle.request.environ.get(_PRESENTED)


class Access:
    """Bottle plugin: authenticate the caller, then refuse it unless the route's role
    allows it (401 without valid credentials, 403 with credentials that do not reach)."""

    name = "access"
    api = 2

    def __init__(self, tokens: Tokens, anonymous_role: str):
        self.tokens = tokens
        self.anonymous = anonymous(anonymous_role)

    def apply(self, callback, route):
        need = route.config.get("role")
        if need is None:
            raise RuntimeError(f"route {route.method} {route.rule} declares no role")
        # A route that takes an attempt token (a task reporting its own progress) lets its
        # handler check that token when the caller's role does not reach.
        attempt = bool(route.config.get("attempt_token"))

        def wrapper(*args, **kwargs):
            caller = self.authenticate(bottle.request)
            bottle.request.environ[_IDENTITY] = caller
            if not (allows(caller, need) or attempt):
                raise refusal(caller, need)
            share = bottle.request.environ.get(SHARE)  # a request that may be held long
            if share is not None:
                share.hold(bottle.request.environ, caller)
            return callback(*args, **kwargs)
        return wrapper

    def authenticate(self, request: bottle.BaseRequest) -> Identity:
        presented, from_cookie = _credentials(request)
        if presented is None:
            return self.anonymous
        try:
            caller = self.tokens.verify(presented)
        except Unauthorized:
            if from_cookie:  # an ended session: the page signs in again
                return self.anonymous
            raise
        request.environ[_PRESENTED] = presented
        if from_cookie != caller.session:
            raise Unauthorized("send API tokens in the Authorization header, and sign in to "
                               "the web page through its form")
        if from_cookie and request.method not in SAFE_METHODS:
            sent = request.get_header(CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), csrf_token(presented).encode()):
                raise Forbidden(f"a signed-in page must send its {CSRF_HEADER} header with "
                                "every change; reload the page")
        return caller


def credentials_verify(tokens: Tokens) -> Callable[[dict], Identity | None]:
    """Whose live token a request's credentials (header or session cookie) are, or None,
    from its environ alone, before any route runs (BodyGate asks)."""
    def verified(environ: dict) -> Identity | None:
        try:
            presented, _ = _credentials(bottle.BaseRequest(environ))
            return None if presented is None else tokens.verify(presented)
        except (Unauthorized, Forbidden):
            return None
    return verified


def refusal(caller: Identity, need: str | tuple[str, ...]) -> Unauthorized | Forbidden:
    wanted = need if isinstance(need, str) else " or ".join(need)
    if caller.anonymous:
        why = ("anonymous access is off" if caller.role == NONE
               else f"anonymous requests get the {caller.role} role")
        error: Unauthorized | Forbidden = Unauthorized(
            f"this needs the {wanted} role and {why}: send a token (Authorization: Bearer "
            "TOKEN, curl -u name:TOKEN, or blanket --token / BLANKET_TOKEN)")
        return error
    return Forbidden(f"token {caller.name!r} has the {caller.role} role; this needs {wanted}")


def _credentials(request: bottle.BaseRequest) -> tuple[str | None, bool]:
    """(the presented token, whether it came from the session cookie)."""
    header = request.get_header("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return value, False
        if scheme.lower() == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("the Basic credentials are not valid base64 text") from None
            return decoded.partition(":")[2], False
        raise Unauthorized("use Authorization: Bearer TOKEN (or Basic with the token as the "
                           "password)")
    cookie = request.get_cookie(SESSION_COOKIE)
    return (cookie, True) if cookie else (None, False)


def check_routes(app: bottle.Bottle) -> None:
    """Refuse to serve an app with a route that declares no role."""
    missing = [f"{r.method} {r.rule}" for r in app.routes if "role" not in r.config]
    if missing:
        raise RuntimeError(f"routes without a role: {', '.join(missing)}")
