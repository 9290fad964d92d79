"""The MCP endpoint: `POST /mcp`, the Model Context Protocol's streamable HTTP transport
(JSON-RPC 2.0), so an AI agent can list types with the variables they need, submit tasks,
wait for them, read their logs and stop them, under the same tokens and roles as the rest
of the API (the tools are `mcptools.py`'s).

Stateless: each POST carries one JSON-RPC message (or a batch, which revision 2025-03-26
allows) and a request gets its answer as `application/json` in the same response;
notifications and responses get 202. No session id
is issued and no server-sent event stream is offered (GET and DELETE answer 405, as the
transport allows). A browser page of another origin cannot reach it: BrowserGuard refuses
foreign Host headers and cross-origin writes before any route, as the transport asks.
"""

from __future__ import annotations

import json
from typing import Any

import bottle
import structlog

from blanket import __version__
from blanket.auth import VIEWER
from blanket.errors import BlanketError, InvalidInput
from blanket.server.api.http import MAX_JSON, parse_json, read_body
from blanket.server.api.mcptools import ToolError, Tools
from blanket.server.services import Services

log = structlog.get_logger()

# Handshake-era revisions this endpoint speaks, newest first (a client asking for one it
# does not know is answered with the newest, as the protocol's negotiation says).
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
VERSION_HEADER = "MCP-Protocol-Version"
MAX_BATCH = 50

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

INSTRUCTIONS = (
    "blanket runs tasks of the types its config directory defines. Call list_types to see "
    "them with the variables each needs, submit_task to start one (wait_seconds to wait for "
    "its end), wait_task to wait, task_logs to read what it printed, stop_task to stop it.")


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def install(app: bottle.Bottle, services: Services) -> None:
    routes = McpRoutes(services)
    app.route("/mcp", "POST", routes.post, role=VIEWER, jsonrpc=True)
    app.route("/mcp", "GET", routes.no_stream, role=VIEWER, jsonrpc=True)
    app.route("/mcp", "DELETE", routes.no_stream, role=VIEWER, jsonrpc=True)


class McpRoutes:
    def __init__(self, services: Services):
        self.tools = Tools(services)

    def no_stream(self):
        """No server-sent event stream and no session to end: every answer comes with its
        request (the transport's 405)."""
        return _answer(405, _error(None, INVALID_REQUEST, "this server answers each request "
                                   "in its POST response; it offers no stream and no session"),
                       {"Allow": "POST"})

    def post(self):
        """One JSON-RPC 2.0 message (or, as revision 2025-03-26 allows, a batch of them):
        requests are answered, notifications and responses taken with 202."""
        version = bottle.request.get_header(VERSION_HEADER)
        if version is not None and version not in PROTOCOL_VERSIONS:
            return _answer(400, _error(None, INVALID_REQUEST, f"{VERSION_HEADER} {version!r} "
                                       f"is not one this server speaks: "
                                       f"{', '.join(PROTOCOL_VERSIONS)}"))
        try:  # as every route reads JSON: no NaN or Infinity, no lone surrogate, not too deep
            message = parse_json(read_body(MAX_JSON))
        except InvalidInput as e:
            return _answer(400, _error(None, PARSE_ERROR, str(e)))
        if isinstance(message, list):
            if not message or len(message) > MAX_BATCH:
                return _answer(400, _error(None, INVALID_REQUEST, f"a batch holds 1 to "
                                           f"{MAX_BATCH} messages"))
            answers = [a for a in map(self.one, message) if a is not None]
            return _answer(200, answers) if answers else bottle.HTTPResponse(status=202)
        answer = self.one(message)
        if answer is None:
            return bottle.HTTPResponse(status=202)
        return _answer(400 if "error" in answer and answer["id"] is None else 200, answer)

    def one(self, message: Any) -> dict[str, Any] | None:
        """The answer to one message; None for a notification or a response."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, 'not a JSON-RPC 2.0 message: send an object '
                                                 'with "jsonrpc": "2.0"')
        method = message.get("method")
        if method is None or "id" not in message:
            return None  # a response (this server asks clients nothing) or a notification
        request_id = message["id"]
        if isinstance(request_id, bool) or not isinstance(request_id, str | int):
            return _error(None, INVALID_REQUEST, "a request's id must be a string or an "
                                                 "integer")
        params = message.get("params", {})
        if not isinstance(method, str) or not isinstance(params, dict):
            return _error(request_id, INVALID_REQUEST, "method must be a string and params "
                                                       "an object")
        try:
            result = self.call(method, params)
        except RpcError as e:
            return _error(request_id, e.code, e.message)
        except Exception:
            log.exception("mcp_request_failed", method=method)
            return _error(request_id, INTERNAL_ERROR, "the server failed on this request; "
                                                      "its log says why")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            asked = params.get("protocolVersion")
            return {
                "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0],
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "blanket", "version": __version__},
                "instructions": INSTRUCTIONS,
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": self.tools.listed()}
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments") or {}
            if not isinstance(name, str) or not self.tools.exists(name):
                raise RpcError(INVALID_PARAMS, f"unknown tool {name!r}; tools/list names them")
            if not isinstance(arguments, dict):
                raise RpcError(INVALID_PARAMS, "arguments must be an object")
            return self.call_tool(name, arguments)
        raise RpcError(METHOD_NOT_FOUND, f"method {method!r} is not offered; this server "
                                         "offers initialize, ping, tools/list and tools/call")

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A tool's result; what went wrong in it (bad arguments, a refusal, a task not
        found) is a result with isError, worded so that the agent can correct its call."""
        try:
            value = self.tools.call(name, arguments)
        except (ToolError, BlanketError) as e:  # bad arguments, refusals, not found, ...
            return _tool_error(str(e))
        return {"content": [{"type": "text", "text": json.dumps(value, default=str)}],
                "structuredContent": value, "isError": False}


def _tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _answer(status: int, body: Any, headers: dict[str, str] | None = None,
            ) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(json.dumps(body, default=str), status=status,
                               headers={"Content-Type": "application/json", **(headers or {})})
