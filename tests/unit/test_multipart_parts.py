"""A multipart body's parts are counted by its boundary before Bottle parses it (Bottle makes
an object of each part: 100,000 tiny files took 200 MB)."""

from __future__ import annotations

import io

import pytest

from blanket.errors import InvalidInput
from blanket.server.api.tasks import count_parts


def body(files: int, boundary: bytes = b"XyZ") -> bytes:
    parts = [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="data"\r\n\r\n{}\r\n']
    parts += [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f"; '
              b'filename="a%d"\r\n\r\nx--XyZ-ish\r\n' % n for n in range(files)]
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 1024 * 1024])
def test_parts_are_counted_whatever_the_chunks_they_are_read_in(chunk_size):
    for files in (0, 1, 9):
        source = io.BytesIO(body(files))
        assert count_parts(source, "multipart/form-data; boundary=XyZ", chunk_size) == files + 1
        assert source.tell() == 0  # left for Bottle to read from the start


def test_a_quoted_boundary_counts_and_none_counts_nothing():
    assert count_parts(io.BytesIO(body(2)), 'multipart/form-data; boundary="XyZ"') == 3
    assert count_parts(io.BytesIO(body(2)), "multipart/form-data") == 0


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary=AAA; boundary=XyZ",
    "multipart/form-data; boundary=XyZ; boundary=AAA",
    "multipart/form-data; boundary*=AAA; boundary=XyZ",
    "multipart/form-data; BOUNDARY=AAA; boundary=XyZ",
])
def test_a_boundary_named_twice_is_refused(content_type):
    """email's parser takes the first, Bottle's the last: counted by one and parsed by the
    other, 100,000 files went through."""
    with pytest.raises(InvalidInput, match="more than once"):
        count_parts(io.BytesIO(body(2)), content_type)


def test_the_boundary_is_read_as_bottle_reads_it():
    import bottle
    for content_type in ('multipart/form-data; boundary="XyZ"',
                         "multipart/form-data;boundary=XyZ",
                         'multipart/form-data; boundary="XyZ"; charset=utf-8'):
        assert bottle._parse_http_header(content_type)[0][1].get("boundary") == "XyZ"
        assert count_parts(io.BytesIO(body(4)), content_type) == 5, content_type
