"""A followed log: read a bounded chunk at a time from the file first opened, never through a
symlink a task swaps in; long lines sent in parts with secrets masked whole."""

from __future__ import annotations

import os
from pathlib import Path

from blanket.server.api.logfollow import LineSplitter, LogReader
from blanket.server.api.taskfiles import Masker


def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks" / "t" / "1"
    folder.mkdir(parents=True)
    return folder


def test_the_log_is_read_from_where_it_was_left_a_bounded_chunk_at_a_time(tmp_path):
    log = task_dir(tmp_path) / "stdout.log"
    reader = LogReader(log)
    assert reader.read() == b""  # no log yet
    log.write_bytes(b"hello\nwor")
    assert reader.read(4) == b"hell"
    assert reader.read() == b"o\nwor"
    assert reader.read() == b""
    with log.open("ab") as f:
        f.write(b"ld\n")
    assert reader.read() == b"ld\n"
    reader.close()


def test_a_log_swapped_for_a_symlink_is_never_read_through_it(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"TOP SECRET\n" * 10)
    log = task_dir(tmp_path) / "stdout.log"
    log.write_bytes(b"first\n")
    reader = LogReader(log)
    assert reader.read() == b"first\n"
    with log.open("ab") as f:  # the task writes on, then swaps its log for a link
        f.write(b"second\n")
    link = log.with_name("link")
    link.symlink_to(outside)
    os.replace(link, log)
    assert reader.read() == b"second\n"  # the file it had open, not the link's target
    assert reader.read() == b""
    reader.close()
    fresh = LogReader(log)  # a follower that comes after the swap reads nothing
    assert fresh.read() == b""
    fresh.close()


def test_a_log_made_anew_as_a_regular_file_is_read_on_from_the_same_place(tmp_path):
    log = task_dir(tmp_path) / "stdout.log"
    log.write_bytes(b"one\n")
    reader = LogReader(log)
    assert reader.read() == b"one\n"
    new = log.with_name("new")
    new.write_bytes(b"one\ntwo\n")
    os.replace(new, log)
    assert reader.read() == b"two\n"
    reader.close()


def test_a_log_that_leads_outside_by_a_linked_folder_is_not_read(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "stdout.log").write_bytes(b"TOP SECRET\n")
    folder = tmp_path / "tasks" / "t"
    folder.mkdir(parents=True)
    (folder / "1").symlink_to(outside)  # the task's folder itself swapped for a link
    reader = LogReader(folder / "1" / "stdout.log")
    assert reader.read() == b""
    reader.close()


def test_lines_come_out_masked_and_a_long_one_in_parts_of_bounded_size():
    lines = LineSplitter(Masker(["s3cret"]), limit=10)
    assert lines.feed(b"a s3cret b\npart") == [b"a *** b"]
    assert lines.feed(b"ial") == []
    assert lines.feed(b"\n") == [b"partial"]
    out = []
    for _ in range(1000):  # 100,000 bytes and no newline
        out += lines.feed(b"x" * 100)
        assert len(lines.partial) < 10 + len("s3cret") + 100
    assert all(part == b"x" * 10 for part in out) and len(out) >= 9990
    assert lines.rest() == b"x" * (100_000 - 10 * len(out))
    assert lines.rest() is None


def test_a_secret_across_the_cut_of_a_long_line_is_masked_whole():
    for start in range(0, 12):
        lines = LineSplitter(Masker(["s3cret"]), limit=10)
        data = b"x" * start + b"s3cret" + b"y" * 30
        parts = lines.feed(data)
        rest = lines.rest()
        whole = b"".join(parts) + (rest or b"")
        assert b"s3c" not in whole and b"ret" not in whole, (start, parts, rest)
        assert whole == b"x" * start + b"***" + b"y" * 30


def test_a_log_cut_short_in_place_is_read_again_from_its_start(tmp_path):
    log = task_dir(tmp_path) / "stdout.log"
    log.write_bytes(b"first attempt printed this\n")
    reader = LogReader(log)
    assert reader.read() == b"first attempt printed this\n"
    with log.open("r+b") as f:  # the next attempt truncates it and writes anew
        f.truncate(0)
        f.write(b"second\n")
    assert reader.read() == b"second\n"
    reader.close()
