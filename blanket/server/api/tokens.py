"""Routes for API tokens (admins only) and for the web page's sign-in session."""

from __future__ import annotations

import time

import bottle
import structlog

from blanket.auth import ADMIN, PUBLIC, WORKER, check_globs, check_name, check_role, csrf_token
from blanket.durations import format_duration, parse_duration
from blanket.errors import InvalidInput
from blanket.server.api import schemas as S
from blanket.server.api.access import SESSION_COOKIE, identity, presented_token
from blanket.server.api.http import json_response, read_json_body
from blanket.server.services import Services

MAX_TOKEN_LIFE = 100 * 365 * 86400.0  # seconds: a century

log = structlog.get_logger("blanket.api")


def install(app: bottle.Bottle, services: Services) -> None:
    routes = TokenRoutes(services)
    app.route("/token/", "GET", routes.list_tokens, role=ADMIN)
    app.route("/token/", "POST", routes.create, role=ADMIN, body=S.NEW_TOKEN)
    app.route("/token/<name>", "DELETE", routes.revoke, role=ADMIN)
    app.route("/session", "GET", routes.session, role=PUBLIC)
    app.route("/login", "POST", routes.login, role=PUBLIC, body=S.LOGIN)
    app.route("/logout", "POST", routes.logout, role=PUBLIC)


class TokenRoutes:
    def __init__(self, services: Services):
        self.s = services

    def list_tokens(self):
        """Every API token (never its secret), revoked ones included."""
        return json_response([t.to_json() for t in self.s.tokens.list()])

    def create(self):
        """A new API token; its secret is in this answer and nowhere else, ever."""
        data = read_json_body()  # its shape is checked by schemas.NEW_TOKEN
        now = time.time()
        expires = data.get("expires")
        if expires is not None:
            try:
                lasts = parse_duration(expires)
            except ValueError as e:
                raise InvalidInput(f"expires: {e}") from None
            if lasts > MAX_TOKEN_LIFE:  # its date must stay one the server can show
                raise InvalidInput(f"expires: {expires!r} is too long; the most is "
                                   f"{format_duration(MAX_TOKEN_LIFE)} (leave expires out for "
                                   "a token that does not expire)")
            expires = now + lasts
        if data.get("role") == WORKER and data.get("types"):
            raise InvalidInput("types limit what a token may submit; a worker token is "
                               "limited by tags (the tasks it may take)")
        token, secret = self.s.tokens.create(
            check_name(data.get("name")), check_role(data.get("role")),
            types=check_globs(data.get("types"), "types"),
            tags=check_globs(data.get("tags"), "tags"), expires=expires, now=now)
        log.info("token created", token=token.name, role=token.role, by=identity().name)
        return json_response({**token.to_json(), "token": secret}, 201)

    def revoke(self, name: str):
        """Revoke a token (and the web sessions opened with it) at once."""
        token = self.s.tokens.revoke(name)
        log.info("token revoked", token=token.name, by=identity().name)
        return json_response(token.to_json())

    def session(self):
        """Who the caller is: name, role, and the CSRF token a signed-in page sends."""
        caller = identity()
        presented = presented_token()
        return json_response({
            "name": caller.name, "role": caller.role, "anonymous": caller.anonymous,
            "session": caller.session,
            "csrf": csrf_token(presented) if caller.session and presented else None})

    def login(self):
        """Sign the web page in with an API token: sets an HttpOnly, SameSite=Strict
        session cookie (12 hours at most) and answers the session's CSRF token."""
        try:
            data = read_json_body()
        except InvalidInput as e:
            raise InvalidInput(f'{e.message}; send {{"token": "bkt_..."}} as JSON') from None
        given = data.get("token") if isinstance(data, dict) else None
        if not isinstance(given, str) or not given.strip():
            raise InvalidInput('send {"token": "bkt_..."}')
        caller, session = self.s.tokens.open_session(given.strip())
        secure = bottle.request.urlparts.scheme == "https"
        bottle.response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True,
                                   samesite="strict", secure=secure,
                                   max_age=int(max(1, (caller.expires or 0) - time.time())))
        log.info("signed in", token=caller.name, role=caller.role)
        return {"name": caller.name, "role": caller.role, "anonymous": False,
                "session": True, "csrf": csrf_token(session)}

    def logout(self):
        """End the web page's session and drop its cookie."""
        self.s.tokens.close_session(identity())
        bottle.response.delete_cookie(SESSION_COOKIE, path="/")
        return {"signed_out": True}
