"""The debounced watcher: one callback per burst, editor noise ignored, failures survived."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from blanket.config.watching import DebouncedWatcher, is_editor_noise


class Batches:
    """Collects callback batches so a test can await them one at a time."""

    def __init__(self) -> None:
        self._queue: queue.Queue[set[Path]] = queue.Queue()

    def __call__(self, paths: set[Path]) -> None:
        self._queue.put(paths)

    def next(self) -> set[Path]:
        return self._queue.get(timeout=5)

    def until(self, path: Path) -> list[set[Path]]:
        """Every batch up to and including the first that holds `path`."""
        seen = [self.next()]
        while path not in seen[-1]:
            seen.append(self.next())
        return seen


@pytest.fixture
def batches() -> Batches:
    return Batches()


@pytest.fixture
def watcher(tmp_path, batches) -> Iterator[DebouncedWatcher]:
    watcher = DebouncedWatcher(tmp_path, batches, delay=0.2)
    watcher.start()
    yield watcher
    watcher.stop()


def test_burst_of_writes_gives_one_callback(tmp_path, batches, watcher):
    target = tmp_path / "ocr.toml"
    for number in range(50):
        target.write_text(f"edit {number}\n")
    assert batches.next() == {target}
    marker = tmp_path / "marker"
    marker.write_text("")
    assert batches.until(marker) == [{marker}]


def test_editor_swap_and_temp_files_are_ignored(tmp_path, batches, watcher):
    for noise in (".ocr.toml.swp", ".ocr.toml.swx", "ocr.toml~", "4913", "x.tmp", ".#ocr.toml"):
        (tmp_path / noise).write_text("noise")
    real = tmp_path / "ocr.toml"
    real.write_text("real")
    assert batches.until(real) == [{real}]


def test_move_reports_both_source_and_destination(tmp_path, batches, watcher):
    source = tmp_path / "a.toml"
    source.write_text("a")
    batches.until(source)
    dest = tmp_path / "b.toml"
    source.rename(dest)
    assert {source, dest} <= set().union(*batches.until(dest))


def test_failing_callback_does_not_stop_the_watcher(tmp_path):
    batches = Batches()
    calls = []

    def callback(paths: set[Path]) -> None:
        calls.append(paths)
        batches(paths)
        if len(calls) == 1:
            raise RuntimeError("boom")

    watcher = DebouncedWatcher(tmp_path, callback, delay=0.05)
    watcher.start()
    try:
        (tmp_path / "first").write_text("1")
        batches.next()
        second = tmp_path / "second"
        second.write_text("2")
        batches.until(second)
    finally:
        watcher.stop()


def test_custom_ignore_replaces_the_default(tmp_path, batches):
    watcher = DebouncedWatcher(tmp_path, batches, delay=0.05,
                               ignore=lambda path: path.suffix == ".part")
    watcher.start()
    try:
        (tmp_path / "upload.part").write_text("half")
        swap = tmp_path / "x.swp"
        swap.write_text("kept")
        assert batches.until(swap) == [{swap}]
    finally:
        watcher.stop()


@pytest.mark.parametrize("name", [".#a.toml", "a.toml~", ".a.toml.swp", "b.swx", "c.tmp", "4913",
                                  ".hidden", ".git/index"])
def test_editor_noise_is_recognised(tmp_path, name):
    assert is_editor_noise(tmp_path / name, tmp_path)


@pytest.mark.parametrize("name", ["a.toml", ".blanketignore", "assets/.templateignore"])
def test_real_files_and_ignore_files_are_not_noise(tmp_path, name):
    assert not is_editor_noise(tmp_path / name, tmp_path)
