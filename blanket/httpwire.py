"""HTTP/1.1 on a kept-alive socket, written and read by hand: a request goes out in one
`sendall`, and its answer is parsed with bytes operations. http.client parses every
answer's headers with the email package, which took a third of a small request's time in
the worker and the command line; this takes a fraction of that.

What a server answers is held to limits (a line, the number and size of the headers, the
body) and anything malformed ends the connection with an http.client error, so callers
handle it as they handle http.client's own.
"""

from __future__ import annotations

import http.client
import select
import socket

MAX_LINE = 64 * 1024  # bytes of the status line or of one header line
MAX_HEADERS = 100
MAX_HEADER_BYTES = 256 * 1024
MAX_BODY = 256 * 1024 * 1024  # bytes of an answer's body
_RECV = 64 * 1024
_BODYLESS = frozenset({204, 304})


class BadResponse(http.client.HTTPException):
    """The server's answer is not HTTP/1.1 this client can read; the text says why."""


class TLSAnswer(BadResponse):
    """The server answered plain HTTP with a TLS alert: it speaks HTTPS."""


class Answer:
    """One answer: its status, headers (names lowercased) and body; `keep` says whether the
    connection may carry another request."""

    __slots__ = ("body", "headers", "keep", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep: bool):
        self.status = status
        self.headers = headers
        self.body = body
        self.keep = keep


class Wire:
    """One connection to the server: its socket and what has been read ahead on it."""

    def __init__(self, sock: socket.socket, host: str):
        self.sock = sock
        self.host = host  # the Host header's value
        self._buffer = bytearray()
        self._timeout: float | None = sock.gettimeout()
        self._poll: select.poll | None = None

    def close(self) -> None:
        self.sock.close()

    def set_timeout(self, seconds: float) -> None:
        if seconds != self._timeout:
            self.sock.settimeout(seconds)
            self._timeout = seconds

    def dropped(self) -> bool:
        """Whether the server closed this idle connection (or sent bytes nobody asked for)
        meanwhile: then it must not carry another request."""
        if self._buffer:
            return True
        try:
            if self._poll is None:  # not select.select: it fails on descriptors above 1023
                self._poll = select.poll()
                self._poll.register(self.sock, select.POLLIN)
            return bool(self._poll.poll(0))
        except (OSError, ValueError):
            return True

    def exchange(self, method: str, target: str, headers: dict[str, str],
                 body: bytes | None) -> Answer:
        """Send one request and read its answer."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}",
                 "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if body else head)
        return self._answer(method)

    def _answer(self, method: str) -> Answer:
        while True:
            status, http10 = self._status_line()
            headers = self._headers()
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue) is followed by the real one
        connection = headers.get("connection", "").lower()
        keep = ("keep-alive" in connection) if http10 else ("close" not in connection)
        if method == "HEAD" or status in _BODYLESS:
            return Answer(status, headers, b"", keep)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return Answer(status, headers, self._chunked(), keep)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise BadResponse(f"the answer's Content-Length is {length[:40]!r}")
            return Answer(status, headers, self._exact(int(length)), keep)
        return Answer(status, headers, self._until_closed(), False)

    def _status_line(self) -> tuple[int, bool]:
        line = self._line()
        if not line:
            raise http.client.RemoteDisconnected("the server closed the connection without "
                                                 "answering")
        if line.startswith(b"\x15\x03"):  # a TLS record of type alert, version 3.x
            raise TLSAnswer("the server answered with a TLS alert: it speaks HTTPS")
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or \
                not parts[1].isdigit() or len(parts[1]) != 3:
            raise BadResponse(f"not an HTTP answer: {line[:80]!r}")
        return int(parts[1]), parts[0] == b"HTTP/1.0"

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        size = 0
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise BadResponse("the answer ended inside its headers")
            size += len(line)
            if size > MAX_HEADER_BYTES:
                break
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise BadResponse(f"a malformed header line: {line[:80]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        raise BadResponse(f"the answer's headers are over {MAX_HEADERS} lines or "
                          f"{MAX_HEADER_BYTES} bytes")

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self._line()
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadResponse(f"a malformed chunk size: {line[:40]!r}") from None
            if size < 0 or len(body) + size > MAX_BODY:
                raise BadResponse(f"the answer's body is over {MAX_BODY} bytes")
            if size == 0:
                break
            body += self._exact(size)
            if self._exact(2) != b"\r\n":
                raise BadResponse("a chunk does not end with CRLF")
        for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return bytes(body)
            if not line:
                raise http.client.IncompleteRead(bytes(body))
        raise BadResponse("too many trailer lines")

    def _line(self) -> bytes:
        """The next line, CRLF included; what is left at the end of the stream (maybe b"")."""
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                if len(line) > MAX_LINE:
                    raise BadResponse(f"a line of the answer is over {MAX_LINE} bytes")
                return line
            if len(buffer) > MAX_LINE:
                raise BadResponse(f"a line of the answer is over {MAX_LINE} bytes")
            start = len(buffer)
            if not self._fill():
                line = bytes(buffer)
                buffer.clear()
                return line

    def _exact(self, count: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < count:
            if not self._fill():
                raise http.client.IncompleteRead(bytes(buffer), count - len(buffer))
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    def _until_closed(self) -> bytes:
        while self._fill():
            if len(self._buffer) > MAX_BODY:
                raise BadResponse(f"the answer's body is over {MAX_BODY} bytes")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _fill(self) -> bool:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            return False
        self._buffer += chunk
        return True
