"""The web page: index.html at `/`, and its script and style sheet under `/web/`."""

from __future__ import annotations

import re
from pathlib import Path

import bottle

from blanket.auth import PUBLIC
from blanket.errors import NotFound
from blanket.server.services import Services

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MIME_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# One plain file name in the web folder: no slashes, no dots but the extension's, so no
# spelling of a path (`..`, `%2e%2e`, absolute) can reach outside it.
_NAME = re.compile(r"[A-Za-z0-9_-]+\.(html|js|css)")
# The page runs only its own script and style sheet, talks only to this server, and is
# never framed by another site.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def install(app: bottle.Bottle, services: Services) -> None:
    app.route("/", "GET", page, role=PUBLIC)
    app.route("/web/<name:path>", "GET", asset, role=PUBLIC)


def page():
    """The web page: task types, tasks, workers and schedules."""
    return _serve("index.html")


def asset(name: str):
    """A file the web page uses (its script and style sheet)."""
    if not _NAME.fullmatch(name):
        raise NotFound(f"no web file {name!r}")
    return _serve(name)


def _serve(name: str) -> bottle.HTTPResponse:
    if not (WEB_DIR / name).is_file():
        raise NotFound(f"no web file {name!r}")
    response = bottle.static_file(name, root=str(WEB_DIR),
                                  mimetype=MIME_TYPES[Path(name).suffix])
    # Revalidate each load so an upgraded server's page is never mixed with a stale script.
    response.set_header("Cache-Control", "no-cache")
    for header, value in PAGE_HEADERS.items():
        response.set_header(header, value)
    return response
