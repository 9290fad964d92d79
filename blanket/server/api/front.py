"""The first look at every request, before any route (a WSGI middleware): the path must be
UTF-8, header values ASCII, and a body is counted while it is read and refused past its
route's limit."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterable

from blanket.outputs import MAX_PACKED
from blanket.protocol import MAX_LOG_CHUNK
from blanket.server.api.http import MAX_BULK_BODY, MAX_DRAIN, MAX_JSON, MAX_UPLOAD, refuse

_OUTPUTS = re.compile(r"/task/[^/]+/outputs")
_LOG_CHUNK = re.compile(r"/task/[^/]+/log/[^/]+")
_READ_SIZE = 64 * 1024


def body_limit(environ: dict) -> int:
    """The most bytes of body the route of this request takes."""
    path = environ.get("PATH_INFO", "")
    if _OUTPUTS.fullmatch(path):
        return MAX_PACKED
    if _LOG_CHUNK.fullmatch(path):
        return MAX_LOG_CHUNK
    if path == "/task/" and environ.get("REQUEST_METHOD") == "POST":
        if environ.get("CONTENT_TYPE", "").lower().startswith("multipart/"):
            return MAX_UPLOAD  # a task with its files: the only route taking uploads
        return MAX_BULK_BODY  # a list of tasks; one task is held to MAX_JSON by its route
    return MAX_JSON


class RequestFront:
    """WSGI middleware: 400 for a path that is not UTF-8 (Bottle would drop the bytes it
    cannot decode, so `/task/1%FF2` would act on task 12) or a header value that is not
    ASCII, 413 for a body over its route's limit. granian hands a header value that is not
    visible ASCII over as an empty string, so an empty value (but Host's: HTTP/1.0 may omit
    it) is refused the same way. The server decodes a chunked body but leaves its
    Transfer-Encoding header, which would make Bottle decode it again: the body is handed on
    decoded, with its length."""

    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.isascii():  # the server hands it over as bytes read as Latin-1
            try:
                path.encode("latin-1").decode("utf-8")
            except UnicodeError:
                return refuse(start_response, "400 Bad Request", "bad_path",
                              "the path holds percent-encoded bytes that are not UTF-8 (such "
                              "as %FF); percent-encode text as UTF-8")
        for key, value in environ.items():
            if ((key.startswith("HTTP_") or key == "CONTENT_TYPE")
                    and (not value.isascii() or (not value and key != "HTTP_HOST"))):
                name = key.removeprefix("HTTP_").replace("_", "-").title()
                return refuse(start_response, "400 Bad Request", "bad_header",
                               f"the {name} header is empty or holds bytes that are not "
                               "ASCII; send header values in ASCII (percent-encode anything "
                               "else)")
        limit = body_limit(environ)
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            return self._dechunked(environ, start_response, limit)
        length = environ.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > limit:
            if int(length) <= MAX_DRAIN:  # larger ones are cut off
                _drain(environ["wsgi.input"], int(length))
            return _too_large(start_response, limit)
        return self.app(environ, start_response)

    def _dechunked(self, environ: dict, start_response: Callable,
                   limit: int) -> Iterable[bytes]:
        del environ["HTTP_TRANSFER_ENCODING"]
        stream = environ["wsgi.input"]
        with tempfile.SpooledTemporaryFile(max_size=MAX_JSON) as body:
            size = 0
            while chunk := stream.read(_READ_SIZE):
                size += len(chunk)
                if size > limit:
                    _drain(stream, MAX_DRAIN)
                    return _too_large(start_response, limit)
                body.write(chunk)
            body.seek(0)
            environ["wsgi.input"] = body
            environ["CONTENT_LENGTH"] = str(size)
            # The route reads the body while it handles the request, before this file closes.
            return self.app(environ, start_response)


def _drain(stream, most: int) -> None:
    """Read and drop up to `most` bytes, so a client still sending sees the answer rather
    than a reset connection."""
    left = most
    while left > 0:
        chunk = stream.read(min(left, _READ_SIZE))
        if not chunk:
            return
        left -= len(chunk)


def _too_large(start_response: Callable, limit: int) -> list[bytes]:
    return refuse(start_response, "413 Payload Too Large", "too_large",
                   f"the body is over {limit} bytes, the most this route takes; send less")

