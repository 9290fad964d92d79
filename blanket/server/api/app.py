"""The WSGI app: every route module installed on one Bottle app, behind the plugins that
check access, queries and errors."""

from __future__ import annotations

import bottle
import structlog

from blanket.server.api import (
    catalog,
    mcp,
    openapi,
    outputs,
    prune,
    schedules,
    tasks,
    tokens,
    web,
    workers,
    workflows,
)
from blanket.server.api.access import Access, check_routes
from blanket.server.api.http import JSONErrors, QueryCheck, error_body
from blanket.server.services import Services

log = structlog.get_logger("blanket.api")
MAX_UPLOAD_MEMORY = 1024 * 1024


def make_app(services: Services, extra_installers=()) -> bottle.Bottle:
    """The WSGI app serving every route over `services`."""
    bottle.BaseRequest.MEMFILE_MAX = MAX_UPLOAD_MEMORY
    app = bottle.Bottle(autojson=True)
    app.install(JSONErrors())
    app.install(Access(services.tokens, services.settings.anonymous_role))
    app.install(QueryCheck())
    tasks.install(app, services)
    workers.install(app, services)
    outputs.install(app, services)
    catalog.install(app, services)
    schedules.install(app, services)
    tokens.install(app, services)
    prune.install(app, services)
    web.install(app, services)
    mcp.install(app, services)
    workflows.install(app, services)
    for install in extra_installers:
        install(app, services)
    openapi.install(app, services.settings.anonymous_role)
    check_routes(app)
    app.default_error_handler = _error_handler
    return app


def _error_handler(error: bottle.HTTPError) -> str:
    bottle.response.content_type = "application/json"
    if error.status_code >= 500:
        log.error("request failed", path=bottle.request.path, error=repr(error.exception),
                  traceback=error.traceback)
        return error_body(error.status_code, "internal",
                          "the server failed on this request; see its log")
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    message = {404: f"no route {bottle.request.path}; see /openapi.json",
               405: f"{bottle.request.method} is not allowed on {bottle.request.path}"}.get(
        error.status_code, str(error.body))
    return error_body(error.status_code, codes.get(error.status_code, "bad_request"), message)
