"""A TCP proxy between a worker and the server that swallows one answer: the request
reaches the server and is answered, but the answer never reaches the worker, whose
connection is closed instead (what a server killed right after storing a claim, or a
connection broken on its way back, does to a worker)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import BinaryIO


def _head(stream: BinaryIO) -> bytes:
    """An HTTP message's head (through the blank line), b"" at the end of the stream."""
    lines = []
    while True:
        line = stream.readline(65536)
        if not line:
            return b""
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _body(stream: BinaryIO, head: bytes) -> bytes:
    """The message's body, as it came (Content-Length or chunked)."""
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        parts = []
        while True:
            size_line = stream.readline(65536)
            parts.append(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while True:  # trailers, through the blank line
                    line = stream.readline(65536)
                    parts.append(line)
                    if line in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            parts.append(stream.read(size + 2))
    return stream.read(int(_header(head, b"content-length") or 0))


class LossyProxy:
    """Listens on a free loopback port (`url`) and passes each request to `upstream_port`,
    one at a time per connection; the first answer that `swallow(request_head,
    answer_head)` picks is never passed on (`swallowed` then holds its request line)."""

    def __init__(self, upstream_port: int, swallow: Callable[[bytes, bytes], bool]):
        self.upstream_port = upstream_port
        self.swallow = swallow
        self.swallowed: bytes | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            upstream = stack.enter_context(
                socket.create_connection(("127.0.0.1", self.upstream_port)))
            from_client = stack.enter_context(client.makefile("rb"))
            from_upstream = stack.enter_context(upstream.makefile("rb"))
            with contextlib.suppress(OSError, ValueError):
                while True:
                    request = _head(from_client)
                    if not request:
                        return
                    upstream.sendall(request + _body(from_client, request))
                    answer = _head(from_upstream)
                    if not answer:
                        return
                    body = _body(from_upstream, answer)
                    with self._lock:
                        lose = self.swallowed is None and self.swallow(request, answer)
                        if lose:
                            self.swallowed = request.split(b"\r\n", 1)[0]
                    if lose:
                        return  # both connections close: the answer is lost
                    client.sendall(answer + body)
