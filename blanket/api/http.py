"""HTTP helpers shared by the route modules: JSON in, JSON out, JSON errors."""

from __future__ import annotations

import json
import math
from typing import Any

import bottle

from blanket.errors import BlanketError, InvalidInput

MAX_JSON = 1024 * 1024
# A body somewhat over a limit is read and dropped before the 413 goes out: a client still
# sending it would otherwise see its connection reset instead of the answer. Larger ones are
# cut off.
MAX_DRAIN = 16 * 1024 * 1024


def json_response(data: Any, status: int = 200) -> bottle.HTTPResponse:
    body = json.dumps(data, default=str)
    return bottle.HTTPResponse(body, status=status,
                               headers={"Content-Type": "application/json"})


def error_body(status: int, code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def read_json_body(required: bool = True) -> Any:
    """The request body as JSON, whatever content type the client claimed."""
    raw = read_body()
    if not raw.strip():
        if required:
            raise InvalidInput("the request body is empty; send a JSON object")
        return {}
    return parse_json(raw)


def read_body(limit: int = MAX_JSON) -> bytes:
    length = bottle.request.content_length
    if length > limit:
        _drain(length)
        raise BlanketError(f"the body is {length} bytes; the limit is {limit}", code="too_large",
                           status=413)
    body = bottle.request.body.read(limit + 1)
    if len(body) > limit:
        _drain(MAX_DRAIN)
        raise BlanketError(f"the body is over {limit} bytes", code="too_large", status=413)
    return body


def _drain(length: int) -> None:
    """Read and drop what is left of the request body, up to MAX_DRAIN bytes."""
    if length > MAX_DRAIN:
        return
    stream = bottle.request.environ["wsgi.input"]
    left = length
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


def parse_json(raw: bytes | str, what: str = "the body") -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput(f"{what} nests too deeply; flatten the JSON") from None


def parse_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidInput(f"{text!r} is not a task id; ids are whole numbers such as 42")
    return int(text)


def query_float(name: str, default: float | None = None, maximum: float | None = None
                ) -> float | None:
    raw = bottle.request.query.get(name)
    if raw is None:
        return default
    if raw in ("", "true"):
        return maximum if maximum is not None else default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"?{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"?{name} must be a number of seconds, 0 or more")
    return min(value, maximum) if maximum is not None else value


def flag(name: str) -> bool:
    raw = bottle.request.query.get(name)
    return raw is not None and raw.lower() not in ("0", "false", "no")


class JSONErrors:
    """Bottle plugin: user errors become JSON with their status; bugs become a JSON 500."""

    name = "json_errors"
    api = 2

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except BlanketError as e:
                return bottle.HTTPResponse(error_body(e.status, e.code, e.message),
                                           status=e.status,
                                           headers={"Content-Type": "application/json"})
        return wrapper
