"""The OpenAPI document, built from the routes the app really has."""

from __future__ import annotations

import re

import bottle

from blanket import __version__
from blanket.api.http import json_response
from blanket.auth import PUBLIC

_SECURITY = [{"bearer": []}, {"basic": []}]
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)(?::[^>]*)?>")


def openapi_document(app: bottle.Bottle) -> dict:
    """One operation per (path, method) of `app`, described by the handler's docstring."""
    paths: dict[str, dict] = {}
    for route in app.routes:
        path = _PARAM.sub(lambda m: "{" + m.group(2) + "}", route.rule)
        params = [{"name": m.group(2), "in": "path", "required": True,
                   "schema": {"type": "string"}} for m in _PARAM.finditer(route.rule)]
        doc = (route.callback.__doc__ or route.callback.__name__.replace("_", " ")).strip()
        paths.setdefault(path, {})[route.method.lower()] = {
            "summary": doc.splitlines()[0],
            "operationId": f"{route.method.lower()}_{route.callback.__name__}"
                           f"_{len(paths)}",
            "parameters": params,
            # The least role the route needs (blanket.auth); public routes need none.
            "x-blanket-role": route.config.get("role"),
            **({} if route.config.get("role") == PUBLIC else {"security": _SECURITY}),
            "responses": {"200": {"description": "success"},
                          "default": {"description": "error",
                                      "content": {"application/json": {"schema": {
                                          "$ref": "#/components/schemas/Error"}}}}},
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "blanket", "version": __version__},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic",
                      "description": "any user name, the token as the password"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {
            "type": "object", "properties": {"code": {"type": "string"},
                                             "message": {"type": "string"}}}}}}},
    }


def install(app: bottle.Bottle) -> None:
    def openapi():
        """This document."""
        return json_response(openapi_document(app))

    app.route("/openapi.json", "GET", openapi, role=PUBLIC)
