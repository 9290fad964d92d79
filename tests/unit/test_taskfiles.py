"""Reading the tail of a task's log: a secret cut by where the tail starts is masked whole,
and a file that leads out of the task's folder is not read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blanket.errors import InvalidInput
from blanket.server.api.taskfiles import MASK, Masker, read_tail

SECRET = "sk-live-ABCDEFGHIJKLMNOP"


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=60))
def test_no_piece_of_a_secret_shows_wherever_the_tail_starts(before: int, after: int):
    data = b"x" * before + SECRET.encode() + b"y" * after
    masker = Masker([SECRET])
    for cut in range(len(data) + 1):
        shown = masker.mask_from(data, cut)
        assert not any(SECRET[i:i + 4].encode() in shown for i in range(len(SECRET) - 3)), \
            (cut, shown)
        tail = data[cut:]
        expected = tail.replace(SECRET.encode(), MASK) if SECRET.encode() in tail else None
        if expected is not None:
            assert shown == expected


def test_the_tail_of_a_log_is_masked_where_it_is_cut(tmp_path: Path):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "stdout.log").write_bytes(b"x" * 1000 + SECRET.encode() + b"y" * 100)
    data, size = read_tail(folder, "stdout.log", Masker([SECRET]), 110)
    assert size == 1124 and data == MASK + b"y" * 100


def test_a_log_leading_out_of_the_folder_is_not_read(tmp_path: Path):
    folder = tmp_path / "task"
    folder.mkdir()
    (tmp_path / "admin.token").write_text("secret")
    (folder / "stdout.log").symlink_to(tmp_path / "admin.token")
    with pytest.raises(InvalidInput, match="outside the task directory"):
        read_tail(folder, "stdout.log", Masker([]), 100)
