"""A multipart body's parts are counted by its boundary before Bottle parses it (Bottle makes
an object of each part: 100,000 tiny files took 200 MB)."""

from __future__ import annotations

import io

import pytest

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
