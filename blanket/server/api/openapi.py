"""The OpenAPI document, built from the routes the app really has."""

from __future__ import annotations

import functools
import re
from typing import Any

import bottle

from blanket import __version__
from blanket.auth import PUBLIC, Identity, allows
from blanket.auth import anonymous as anonymous_identity
from blanket.server.api.http import json_response
from blanket.server.api.schemas import PATH_PARAMETERS

_SECURITY = [{"bearer": []}, {"basic": []}]
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)(?::[^>]*)?>")


def _request_body(config: Any) -> dict:
    """The route's body; a route taking many items (`bulk`: at most how many) takes one, a
    JSON array of them, or NDJSON (one a line)."""
    schema = config["body"].schema
    bulk = config.get("bulk")
    if not bulk:
        return {"required": True, "content": {"application/json": {"schema": schema}}}
    many = {"type": "array", "items": schema, "minItems": 1, "maxItems": bulk}
    return {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [schema, many]}},
        "application/x-ndjson": {"schema": {
            "type": "string", "description": f"one JSON object a line, at most {bulk}"}}}}


def openapi_document(app: bottle.Bottle, anonymous: str = "none") -> dict:
    """One operation per (path, method) of `app`, described by the handler's docstring;
    `anonymous` is the role of a request without credentials on this server."""
    guest = anonymous_identity(anonymous)
    paths: dict[str, dict] = {}
    for route in app.routes:
        path = _PARAM.sub(lambda m: "{" + m.group(2) + "}", route.rule)
        params = [{"name": m.group(2), "in": "path", "required": True,
                   "schema": PATH_PARAMETERS.get(m.group(2), {"type": "string", "minLength": 1})}
                  for m in _PARAM.finditer(route.rule)]
        params += route.config.get("query", [])
        doc = (route.callback.__doc__ or route.callback.__name__.replace("_", " ")).strip()
        paths.setdefault(path, {})[route.method.lower()] = {
            "summary": doc.splitlines()[0],
            "operationId": f"{route.method.lower()}_{route.callback.__name__}"
                           f"_{len(paths)}",
            "parameters": params,
            **({"requestBody": _request_body(route.config)} if "body" in route.config else {}),
            # The least role the route needs (blanket.auth); public routes need none.
            "x-blanket-role": route.config.get("role"),
            **_security(route.config.get("role"), guest),
            "responses": {"200": {"description": "success"},
                          **({"204": {"description": route.config["no_content"]}}
                             if "no_content" in route.config else {}),
                          "default": {"description": "error",
                                      "content": {"application/json": {"schema": _error_schema(
                                          route.config)}}}},
        }
    _link_created(paths)
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
                                             "message": {"type": "string"}}}}},
                        "JsonRpcError": {"type": "object", "required": ["jsonrpc", "error"],
                                         "properties": {"jsonrpc": {"const": "2.0"},
                                                        "error": {"type": "object", "properties": {
                                                            "code": {"type": "integer"},
                                                            "message": {"type": "string"}}}}}}},
    }


def _error_schema(config: Any) -> dict:
    """blanket's JSON error; a JSON-RPC route (`jsonrpc=True`) may answer a JSON-RPC error
    object instead (its own refusals), blanket's still for what is refused before it."""
    error = {"$ref": "#/components/schemas/Error"}
    if config.get("jsonrpc"):
        return {"anyOf": [error, {"$ref": "#/components/schemas/JsonRpcError"}]}
    return error


# What a 201 answer creates, and the path parameter its `id` fills in other operations.
_CREATES = {("/task/", "post"): "task_id", ("/task/{task_id}/rerun", "post"): "task_id",
            ("/worker/", "post"): "worker_id"}


def _link_created(paths: dict[str, dict]) -> None:
    """OpenAPI links from each creating operation to the operations on what it made, so a
    client (or a fuzzer's stateful phase) can follow them."""
    for (path, method), param in _CREATES.items():
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        targets = {op["operationId"]: {"operationId": op["operationId"],
                                       "parameters": {param: "$response.body#/id"}}
                   for target, ops in paths.items() if "{" + param + "}" in target
                   for op in ops.values()}
        operation["responses"]["201"] = {"description": "created", "links": targets}


def _security(role: str | tuple[str, ...] | None, guest: Identity) -> dict:
    """How to authenticate: nothing for public routes, a token (or, where this server lets
    anonymous requests in, nothing: `{}`) for the others."""
    if role == PUBLIC:
        return {}
    return {"security": [*_SECURITY, {}] if role and allows(guest, role) else _SECURITY}


def install(app: bottle.Bottle, anonymous: str = "none") -> None:
    @functools.cache
    def document() -> dict:  # the routes are all installed by the first request
        return openapi_document(app, anonymous)

    def openapi():
        """This document."""
        return json_response(document())

    app.route("/openapi.json", "GET", openapi, role=PUBLIC)
