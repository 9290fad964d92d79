"""HTTP helpers shared by the route modules: JSON in, JSON out, JSON errors."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import bottle

from blanket.errors import BlanketError, InvalidInput

MAX_JSON = 1024 * 1024
# A body somewhat over a limit is read and dropped before the 413 goes out: a client still
# sending it would otherwise see its connection reset instead of the answer. Larger ones are
# cut off.
MAX_DRAIN = 16 * 1024 * 1024
# Multipart submissions carry files: the most a submission with its files may weigh.
MAX_UPLOAD = 1024 * 1024 * 1024
# Integers are stored in 64-bit columns; a larger one could only fail later, as a 500.
INT_RANGE = range(-(2**63), 2**63)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


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
    """JSON as RFC 8259 defines it: no NaN or Infinity, no number that overflows a double or
    a 64-bit integer, no lone surrogate; anything else is a 400 saying what to fix."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float,
                          parse_int=_int64)
    except _Refused as e:
        raise InvalidInput(f"{what}: {e}") from None
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        raise InvalidInput(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInput(f"{what} nests too deeply; flatten the JSON") from None
    if _may_hold_surrogates(raw) and not _valid_unicode(data):
        raise InvalidInput(f"{what} holds a lone surrogate (such as \\ud800), which is not "
                           "Unicode text; send valid UTF-8 strings")
    return data


class _Refused(ValueError):
    """A JSON value that parses but cannot be used."""


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number; send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is too large; send a finite number")
    return value


def _int64(text: str) -> int:
    if len(text) > 20:
        raise _Refused(f"the integer {text[:40]}... does not fit in 64 bits; send large "
                       "values as strings")
    value = int(text)
    if value not in INT_RANGE:
        raise _Refused(f"the integer {text} does not fit in 64 bits; send large values as "
                       "strings")
    return value


def _may_hold_surrogates(raw: bytes | str) -> bool:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    return _SURROGATE_ESCAPE.search(raw) is not None or b"\xed" in raw


def _valid_unicode(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_json_object(what: str = "the body") -> dict[str, Any]:
    """The request body as a JSON object; a 400 for anything else."""
    data = read_json_body()
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object, such as {{\"token\": \"...\"}}")
    return data


def body_field(data: dict[str, Any], key: str, kind: type | tuple[type, ...],
               required: bool = False, what: str = "") -> Any:
    """`data[key]` if it is of `kind` (booleans are not integers), None when absent and not
    `required`; a 400 naming the field and the expected kind otherwise."""
    value = data.get(key)
    if value is None and not required:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    expected = what or " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
    raise InvalidInput(f'"{key}" must be {expected}' + ("" if required else " or null")
                       + f", not {json.dumps(value)[:60]}")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               dict: "an object", list: "a list"}


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
