"""The HTTP client the CLI and the workers use: keep-alive connections, JSON errors turned
into messages."""

from __future__ import annotations

import json
from typing import Any

import urllib3

from blanket.errors import BlanketError


class ServerUnreachable(BlanketError):
    code = "unreachable"
    status = 503


class ClientError(BlanketError):
    """The server answered with an error; `status` and `message` are the server's."""


class Client:
    """A client for one server URL; safe to share between threads."""

    def __init__(self, base_url: str, timeout: float = 30.0, maxsize: int = 8):
        self.base_url = base_url.rstrip("/")
        self.pool = urllib3.PoolManager(maxsize=maxsize, block=False, retries=False,
                                        timeout=urllib3.Timeout(connect=5.0, read=timeout))

    def request(self, method: str, path: str, *, body: Any = None,
                fields: Any = None, timeout: float | None = None,
                ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """(status, decoded JSON or text). Error statuses raise ClientError unless listed
        in `ok`."""
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["body"] = json.dumps(body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if fields is not None:
            kwargs["fields"] = fields
        if timeout is not None:
            kwargs["timeout"] = urllib3.Timeout(connect=5.0, read=timeout)
        try:
            response = self.pool.request(method, self.base_url + path, **kwargs)
        except urllib3.exceptions.HTTPError as e:
            raise ServerUnreachable(
                f"cannot reach the blanket server at {self.base_url} ({_reason(e)}); is it "
                "running? Start one with `make run` or `blanket server`, or point to another "
                "with --server URL or BLANKET_SERVER") from None
        data = _decode(response)
        if response.status >= 400 and response.status not in ok:
            message = data["error"]["message"] if _is_error(data) else str(data)
            code = data["error"]["code"] if _is_error(data) else "error"
            raise ClientError(message, code=code, status=response.status)
        return response.status, data

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body=body if body is not None else {}, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)[1]

    def download(self, path: str, dest: str, timeout: float = 300.0) -> None:
        """Stream a file from the server to `dest`."""
        try:
            response = self.pool.request("GET", self.base_url + path, preload_content=False,
                                         timeout=urllib3.Timeout(connect=5.0, read=timeout))
        except urllib3.exceptions.HTTPError as e:
            raise ServerUnreachable(f"cannot reach {self.base_url}: {_reason(e)}") from None
        try:
            if response.status != 200:
                data = _decode_bytes(response.read(), response.headers)
                message = data["error"]["message"] if _is_error(data) else str(data)
                raise ClientError(message, status=response.status)
            with open(dest, "wb") as out:
                for chunk in response.stream(1024 * 1024):
                    out.write(chunk)
        finally:
            response.release_conn()


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def _decode(response: urllib3.BaseHTTPResponse) -> Any:
    return _decode_bytes(response.data, response.headers)


def _decode_bytes(raw: bytes, headers: Any) -> Any:
    if not raw:
        return None
    if "json" in headers.get("Content-Type", ""):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw.decode(errors="replace")


def _is_error(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("error"), dict)
