"""The HTTP client the CLI and the workers use: keep-alive connections, JSON errors turned
into messages.

JSON requests, which a busy worker makes once per task, go through the standard library's
http.client on kept-alive connections: a third less CPU per request than urllib3's layers.
Multipart uploads, downloads and streams use urllib3. Both reach the server over TCP, TLS or a
unix socket as its URL says (blanket.transport).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3

from blanket.errors import BlanketError
from blanket.httpwire import TLSAnswer, Wire
from blanket.tls import TRUST_ADVICE, UntrustedServer
from blanket.transport import Target, parse_target

_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException)
BUSY_RETRIES = 30  # times a request refused with 429 is sent, BUSY_PAUSE seconds apart
BUSY_PAUSE = 1.0
A = TypeVar("A")
B = TypeVar("B")


class ServerUnreachable(BlanketError):
    code = "unreachable"
    status = 503


class ClientError(BlanketError):
    """The server answered with an error; `status` and `message` are the server's, `items`
    the wrong items of a request of many (index and message each), if it named them."""

    items: list[dict] = []


class Client:
    """A client for one server URL; safe to share between threads."""

    def __init__(self, base_url: str, timeout: float = 30.0, maxsize: int = 8,
                 token: str | None = None, ca: str | None = None,
                 fingerprint: str | None = None):
        """`ca` (a PEM file) or a pinned SHA-256 `fingerprint` is what an https server's
        certificate is checked against (else the system's authorities)."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._trust = (ca, fingerprint)
        # Every request carries the token, if any (Authorization: Bearer).
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.target = parse_target(self.base_url, ca, fingerprint)
        self.pool = self.target.pool(maxsize=maxsize, block=False, retries=False,
                                     timeout=urllib3.Timeout(connect=5.0, read=timeout),
                                     headers=self.headers)
        self._connections = _Connections(self.target, maxsize, self.headers)

    def with_token(self, token: str | None) -> Client:
        """A client of the same server, trusting its certificate the same way, that sends
        `token`."""
        return Client(self.base_url, self.timeout, token=token, ca=self._trust[0],
                      fingerprint=self._trust[1])

    def request(self, method: str, path: str, *, body: Any = None,
                fields: Any = None, timeout: float | None = None,
                ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """(status, decoded JSON or text). Error statuses raise ClientError unless listed
        in `ok`."""
        if fields is None:
            payload = json.dumps(body).encode() if body is not None else None
            status, content_type, raw = self._exchange(method, path, payload, timeout, ok)
            return status, _decode_bytes(raw, {"Content-Type": content_type})
        try:
            response = self.pool.request(
                method, self.target.prefix + path, fields=fields,
                timeout=urllib3.Timeout(connect=5.0, read=timeout or self.timeout))
        except _UNREACHABLE as e:
            raise self._unreachable(e) from None
        data = _decode(response)
        if response.status >= 400 and response.status not in ok:
            raise _refusal(response.status, data)
        return response.status, data

    def send(self, method: str, path: str, payload: bytes | None = None, *,
             timeout: float | None = None, ok: tuple[int, ...] = (),
             content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, raw answer) of a request whose body is already encoded (a protocol
        message, NDJSON); errors as for `request`."""
        status, _, raw = self._exchange(method, path, payload, timeout, ok, content_type)
        return status, raw

    def _exchange(self, method: str, path: str, payload: bytes | None, timeout: float | None,
                  ok: tuple[int, ...], sent_type: str = "application/json"
                  ) -> tuple[int, str, bytes]:
        def send() -> tuple[int, str, bytes]:
            try:
                return self._connections.request(method, path, payload,
                                                 timeout or self.timeout, sent_type)
            except _UNREACHABLE as e:
                raise self._unreachable(e) from None
        status, content_type, raw = (send() if 429 in ok else
                                     _while_busy(send, timeout or self.timeout))
        if status >= 400 and status not in ok:
            raise _refusal(status, _decode_bytes(raw, {"Content-Type": content_type}))
        return status, content_type, raw

    def _unreachable(self, error: Exception) -> BlanketError:
        return self._untrusted(error) or ServerUnreachable(
            f"cannot reach the blanket server at {self.base_url} ({_reason(error)}); is it "
            "running? Start one with `make run` or `blanket server`, or point to another "
            f"with --server URL or BLANKET_SERVER{_https_hint(self.target, error)}")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)[1]

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body=body if body is not None else {}, **kw)[1]

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)[1]

    def upload(self, path: str, source: str | bytes, headers: dict[str, str],
               timeout: float = 300.0, content_type: str = "application/gzip") -> Any:
        """POST the file named `source` (streamed, with its length), or the bytes `source`,
        as the raw body; the answer's JSON, or ClientError/ServerUnreachable as for
        `request`."""
        return _decode(self._upload(path, source, headers, timeout, content_type))

    def upload_raw(self, path: str, source: str | bytes, headers: dict[str, str],
                   timeout: float = 300.0, content_type: str = "application/gzip") -> bytes:
        """As `upload`, answering the raw body (a protocol message to decode)."""
        return self._upload(path, source, headers, timeout, content_type).data

    def _upload(self, path: str, source: str | bytes, headers: dict[str, str],
                timeout: float, content_type: str) -> urllib3.BaseHTTPResponse:
        try:
            with contextlib.ExitStack() as files:
                if isinstance(source, bytes):
                    body: Any = source
                    size = len(source)
                else:
                    body = files.enter_context(open(source, "rb"))
                    size = os.path.getsize(source)
                response = self.pool.request(
                    "POST", self.target.prefix + path, body=body,
                    headers={**self.headers, **headers, "Content-Length": str(size),
                             "Content-Type": content_type},
                    timeout=urllib3.Timeout(connect=5.0, read=timeout))
        except urllib3.exceptions.HTTPError as e:
            raise self._untrusted(e) or ServerUnreachable(
                f"cannot reach {self.base_url}: {_reason(e)}") from None
        if response.status >= 400:
            raise _refusal(response.status, _decode(response))
        return response

    def download(self, path: str, dest: str, timeout: float = 300.0) -> None:
        """Stream a file from the server to `dest`."""
        response = self.stream(path, timeout)
        try:
            if response.status != 200:
                raise _refusal(response.status,
                               _decode_bytes(response.read(), response.headers))
            with open(dest, "wb") as out:
                for chunk in response.stream(1024 * 1024):
                    out.write(chunk)
        finally:
            response.release_conn()

    def stream(self, path: str, timeout: float | None = None) -> urllib3.BaseHTTPResponse:
        """GET `path` with its body left to read (`.stream()`, then `.release_conn()`); an
        error answer raises ClientError, a busy one (429) is asked again as `_exchange` does."""
        def send() -> tuple[int, urllib3.BaseHTTPResponse, bytes]:
            try:
                response = self.pool.request(
                    "GET", self.target.prefix + path, preload_content=False,
                    timeout=urllib3.Timeout(connect=5.0, read=timeout or self.timeout))
            except urllib3.exceptions.HTTPError as e:
                raise self._untrusted(e) or ServerUnreachable(
                    f"cannot reach {self.base_url}: {_reason(e)}") from None
            if response.status < 400:
                return response.status, response, b""
            raw = response.read()  # an error's words; the connection goes back for the next
            response.release_conn()
            return response.status, response, raw
        status, response, raw = _while_busy(send, timeout or self.timeout)
        if status >= 400:
            raise _refusal(status, _decode_bytes(
                raw, {"Content-Type": response.headers.get("Content-Type", "")}))
        return response

    def _untrusted(self, error: Exception) -> UntrustedServer | None:
        """The refusal to use, when `error` is a certificate that failed verification."""
        reason = str(error)
        if isinstance(error, ssl.CertificateError) or "CERTIFICATE_VERIFY_FAILED" in reason:
            detail = _verify_message(error) or reason
            return UntrustedServer(f"the server at {self.base_url} is not trusted ({detail}): "
                                   f"{TRUST_ADVICE}")
        return None


class _Connections:
    """Kept-alive connections to one server (blanket.httpwire), one per caller at a time."""

    CONNECT_TIMEOUT = 5.0

    def __init__(self, target: Target, maxsize: int, headers: dict[str, str] | None = None):
        self.target = target
        self.headers = headers or {}
        self.prefix = target.prefix
        self.maxsize = maxsize
        self._idle: list[Wire] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, payload: bytes | None,
                timeout: float, content_type: str = "application/json"
                ) -> tuple[int, str, bytes]:
        """(status, content type, body) of one request on a kept-alive connection. A read
        (GET, HEAD) that finds its kept connection closed by the server just before it went
        out is sent once more on a new one; nothing else is sent twice."""
        headers = dict(self.headers)
        if payload is not None:
            headers["Content-Type"] = content_type
        wire, reused = self._take(timeout)
        try:
            wire.set_timeout(timeout)
            answer = wire.exchange(method, self.prefix + path, headers, payload)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            wire.close()
            if not reused or method not in ("GET", "HEAD"):
                raise
            wire = self._connect(timeout)
            try:
                wire.set_timeout(timeout)
                answer = wire.exchange(method, self.prefix + path, headers, payload)
            except BaseException:
                wire.close()
                raise
        except BaseException:
            wire.close()
            raise
        if answer.keep:
            self._give_back(wire)
        else:
            wire.close()
        return answer.status, answer.headers.get("content-type", ""), answer.body

    def _take(self, timeout: float) -> tuple[Wire, bool]:
        """A kept connection that still looks open (and True), else a new one (False)."""
        with self._lock:
            while self._idle:
                wire = self._idle.pop()
                if not wire.dropped():
                    return wire, True
                wire.close()
        return self._connect(timeout), False

    def _connect(self, timeout: float) -> Wire:
        connection = self.target.connection()  # connects and verifies, as http.client does
        connection.timeout = min(self.CONNECT_TIMEOUT, timeout)
        connection.connect()
        sock, connection.sock = connection.sock, None
        assert sock is not None
        return Wire(sock, self.target.host_header)

    def _give_back(self, wire: Wire) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(wire)
                return
        wire.close()


def _https_hint(target: Target, error: Exception) -> str:
    """A server that serves HTTPS drops plain HTTP: say so when that may be what happened."""
    if target.scheme == "http" and isinstance(error, (ConnectionResetError, TLSAnswer,
                                                      http.client.RemoteDisconnected)):
        return f" (if it serves HTTPS, write https://{target.host}:{target.port})"
    return ""


def _verify_message(error: BaseException) -> str | None:
    """Why OpenSSL refused the certificate ("self-signed certificate"), wherever urllib3
    wrapped it."""
    seen: list[BaseException] = []
    queue: list[object] = [error]
    while queue:
        item = queue.pop()
        if not isinstance(item, BaseException) or item in seen:
            continue
        seen.append(item)
        if isinstance(item, ssl.SSLCertVerificationError):
            return item.verify_message
        queue += [*item.args, item.__cause__, item.__context__]
    return None


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error) or type(error).__name__


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


def _while_busy(send: Callable[[], tuple[int, A, B]], timeout: float) -> tuple[int, A, B]:
    """`send()`'s answer (status first), sent again while the server answers 429: too many
    of this caller's requests held open (or bodies arriving) at once, refused before
    anything was done; room comes back as they end. Again a second or so later (spread, so
    callers sharing a token do not come back together), within `timeout` in all."""
    until = time.monotonic() + timeout
    for tries_left in reversed(range(BUSY_RETRIES)):
        answer = send()
        pause = BUSY_PAUSE * random.uniform(0.5, 1.5)
        if answer[0] != 429 or not tries_left or time.monotonic() + pause > until:
            return answer
        time.sleep(pause)
    raise AssertionError("BUSY_RETRIES is at least 1")


def _refusal(status: int, data: Any) -> ClientError:
    """The ClientError for an error answer: the server's message and code when it sent JSON."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = ClientError(data["error"].get("message", str(data)),
                            code=data["error"].get("code", "error"), status=status)
        items = data["error"].get("items")
        if isinstance(items, list):
            error.items = [item for item in items if isinstance(item, dict)]
        return error
    return ClientError(str(data), code="error", status=status)
