"""HTTP helpers shared by the route modules: JSON in, JSON out, JSON errors."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import bottle
import fastjsonschema
import msgspec

from blanket import protocol
from blanket.errors import BlanketError, InvalidInput, StorageFull, is_disk_full
from blanket.jsontext import parse_json

M = TypeVar("M", bound=protocol.Request)
MAX_JSON = 1024 * 1024
MAX_BULK_BODY = 8 * 1024 * 1024  # a bulk submission (POST /task/ with a list of tasks)
# A body somewhat over a limit is read and dropped before the 413 goes out: a client still
# sending it would otherwise see its connection reset instead of the answer. Larger ones are
# cut off.
MAX_DRAIN = 16 * 1024 * 1024
# Multipart submissions carry files: the most a submission with its files may weigh.
MAX_UPLOAD = 1024 * 1024 * 1024


def close_body(body: object) -> None:
    """Close an answer's body if it can be (WSGI: the server calls `close` once it is done
    with it, sent or not)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


_ENCODER = msgspec.json.Encoder(enc_hook=str)


def json_response(data: Any, status: int = 200) -> bottle.HTTPResponse:
    try:
        body: bytes | str = _ENCODER.encode(data)  # UTF-8, not \u escapes
    except (UnicodeEncodeError, TypeError):  # a lone surrogate (a name that is not UTF-8)
        body = json.dumps(data, default=str)
    return bottle.HTTPResponse(body, status=status,
                               headers={"Content-Type": "application/json"})


def serve(app: bottle.Bottle, route: protocol.Route, callback: Callable, **config: Any) -> None:
    """Install the handler of a worker protocol route, as blanket/protocol.py declares it
    (path, method, who may call)."""
    app.route(route.rule, route.method, callback, role=route.callers, **config)


def message_response(message: protocol.Answer, status: int = 200) -> bottle.HTTPResponse:
    """A protocol message as the answer, in its one JSON form."""
    return bottle.HTTPResponse(message.to_json(), status=status,
                               headers={"Content-Type": "application/json"})


def error_body(status: int, code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def refuse(start_response: Callable, status: str, code: str, message: str) -> list[bytes]:
    """A JSON error answered before any route (by a WSGI middleware)."""
    body = error_body(0, code, message).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))),
                            ("X-Content-Type-Options", "nosniff")])
    return [body]


def read_json_body(required: bool = True, checked: bool = True) -> Any:
    """The request body as JSON, whatever content type the client claimed, checked against
    the route's `body` schema (unless the handler checks it later: `checked=False`)."""
    raw = read_body()
    if not raw.strip():
        if required:
            raise InvalidInput("the request body is empty; send a JSON object")
        data = {}
    else:
        data = parse_json(raw)
    return check_body(data) if checked else data


def read_message(kind: type[M]) -> M:
    """The request body as the protocol message `kind`; InvalidInput naming the field, or
    saying why the body is not JSON (as `parse_json` words it), when it is not."""
    raw = read_body()
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        return kind.from_json(raw)
    except protocol.BadMessage as e:
        if e.malformed:
            parse_json(raw)  # says what is wrong in the words every route uses
        raise InvalidInput(str(e)) from None


def check_body(data: Any, what: str = "the body") -> Any:
    """`data` if it fits the route's `body` schema (blanket.server.api.schemas), else InvalidInput
    naming the field and the rule it breaks."""
    body = bottle.request.route.config.get("body")
    return data if body is None else check_against(body, data, what)


def check_against(body: Any, data: Any, what: str) -> Any:
    """`data` if it fits `body` (a blanket.server.api.schemas.Body), else InvalidInput naming
    the field and the rule it breaks: what every route says, for any reader of a request."""
    try:
        body.validate(data)
    except fastjsonschema.JsonSchemaValueException as e:
        field = (e.name or "data").removeprefix("data").lstrip(".") or what
        rule = e.message.removeprefix(e.name or "").strip()
        if e.rule == "propertyNames" and isinstance(e.value, dict):
            pattern = e.rule_definition.get("pattern", "") if isinstance(
                e.rule_definition, dict) else ""
            bad = [n for n in e.value if not re.search(pattern, n)] or list(e.value)
            rule = (f"name {bad[0]!r} is not valid; use letters, digits and _, not starting "
                    "with a digit")
        elif e.rule == "required" and isinstance(e.value, dict) and isinstance(
                e.rule_definition, list):
            missing = [name for name in e.rule_definition if name not in e.value]
            rule = f"{', '.join(map(repr, missing))} is missing" if missing else rule
        elif e.rule == "oneOf" and isinstance(e.rule_definition, list):
            rule = _branch_reason(e.value, e.rule_definition) or rule
        elif e.rule == "additionalProperties" and isinstance(e.definition, dict):
            known = sorted(e.definition.get("properties", {}))
            unknown = sorted(set(e.value) - set(known)) if isinstance(e.value, dict) else []
            rule = f"unknown field(s) {', '.join(unknown)}; it takes {', '.join(known)}"
        raise InvalidInput(f"{field}: {rule}") from None
    return data


_JSON_TYPES = {list: "array", dict: "object", str: "string", bool: "boolean",
               int: "integer", float: "number"}


def _branch_reason(value: Any, branches: list) -> str | None:
    """Why `value` breaks the one branch of a oneOf made for its JSON type (fastjsonschema
    says only that no branch matched), e.g. "item 0 must match pattern ..."."""
    kind = _JSON_TYPES.get(type(value))
    kinds = {kind, "number"} if kind == "integer" else {kind}
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") in kinds:
            try:
                _compiled(branch)(value)
            except fastjsonschema.JsonSchemaValueException as inner:
                name = inner.name or "data"
                where = f"item {name[5:-1]} " if re.fullmatch(r"data\[\d+\]", name) else ""
                return where + inner.message.removeprefix(name).strip()
            return None
    return None


_BRANCHES: dict[int, tuple[dict, Callable[[Any], Any]]] = {}


def _compiled(branch: dict) -> Callable[[Any], Any]:
    """A branch's validator, compiled once (the schemas are module constants): a client
    sending bad bodies must not make the server compile one each time."""
    found = _BRANCHES.get(id(branch))
    if found is None or found[0] is not branch:
        found = _BRANCHES[id(branch)] = (branch, fastjsonschema.compile(branch))
    return found[1]


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


def parse_id(text: str, what: str = "task") -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidInput(f"{text!r} is not a {what} id; ids are whole numbers such as 42")
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


def query_int(name: str, default: int, maximum: int,
              query: bottle.FormsDict | None = None) -> int:
    """A whole number from the query string (`?limit=`, `?offset=`), at most `maximum`."""
    raw = (bottle.request.query if query is None else query).get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"?{name}={raw!r} must be a whole number")
    return min(int(raw), maximum)


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
                return _error_response(e)
            except OSError as e:  # a full disk wherever a route writes (logs, outputs)
                if not is_disk_full(e):
                    raise
                return _error_response(StorageFull.at(
                    Path(os.fsdecode(e.filename)).parent if e.filename
                    else "the server's data dir"))
        return wrapper


def _error_response(e: BlanketError) -> bottle.HTTPResponse:
    headers = {"Content-Type": "application/json"}
    if e.status == 429:  # too many at once: a moment later there is room again
        headers["Retry-After"] = "1"
    return bottle.HTTPResponse(json.dumps(e.to_json()), status=e.status, headers=headers)


_TRUTHS = frozenset({"", "true", "false", "1", "0", "yes", "no"})


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fits(raw: str, schema: dict) -> str | None:
    """Why the query value `raw` does not fit `schema` (a small JSON Schema subset: oneOf,
    type, enum, minimum, maximum, maxLength, pattern), or None when it fits."""
    if "oneOf" in schema:
        reasons = [_fits(raw, branch) for branch in schema["oneOf"]]
        return None if None in reasons else " or ".join(r for r in reasons if r)
    kind = schema.get("type", "string")
    if kind == "boolean":
        return None if raw.lower() in _TRUTHS else "must be true or false"
    if "enum" in schema and raw not in schema["enum"]:
        return f"must be one of {', '.join(map(repr, schema['enum']))}"
    if kind in ("integer", "number"):
        try:
            value = int(raw) if kind == "integer" and raw.lstrip("-").isdigit() else float(raw)
        except ValueError:
            return f"must be a{'n integer' if kind == 'integer' else ' number'}"
        if (kind == "integer" and not isinstance(value, int)) or not math.isfinite(value):
            return f"must be a{'n integer' if kind == 'integer' else ' finite number'}"
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                return f"must be {_number(low)} or more"
            if low is None:
                return f"must be {_number(high)} or less"
            return f"must be from {_number(low)} to {_number(high)}"
        return None
    if len(raw) > schema.get("maxLength", 100_000):
        return f"must be at most {schema['maxLength']} characters"
    if "pattern" in schema and not re.search(schema["pattern"], raw):
        return "is not spelt as it should be"
    return None


class QueryCheck:
    """Bottle plugin: the query parameters a route declares (`query=`, blanket.server.api.schemas)
    are checked against their schemas before the handler runs; 400 names the parameter."""

    name = "query_check"
    api = 2

    def apply(self, callback, route):
        declared = {p["name"]: p["schema"] for p in route.config.get("query", ())}
        if not declared:
            return callback

        def wrapper(*args, **kwargs):
            for name, schema in declared.items():
                for raw in bottle.request.query.getall(name):
                    reason = _fits(raw, schema)
                    if reason:
                        raise InvalidInput(f"?{name}={raw[:50]!r}: {reason}")
            return callback(*args, **kwargs)
        return wrapper
