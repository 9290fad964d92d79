"""A type file (and its bases) is read once per build: the definition, its version hash and
its bundle come from the same bytes even when the file is saved again mid-scan, and the next
scan sees that save. Config files that cannot be read as text (a FIFO, a huge file) are
problems of their own, never a hung or bloated scan."""

from __future__ import annotations

import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from blanket.config.bundles import bundle_path
from blanket.config.problems import MAX_CONFIG_BYTES
from blanket.config.selection import select_files
from blanket.config.typefile import parse_type_file
from blanket.config.versions import HashCache, version_hash
from blanket.server import catalog as catalog_module
from blanket.server.catalog import Catalog

BASE = 'abstract = true\ntags = ["old"]\n'
CHILD = 'extends = "base"\ncommand = "echo parsed"\n'


def _members(versions: Path, version: str) -> dict[str, bytes]:
    with tarfile.open(bundle_path(versions, version)) as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
        return out


def _write_old(path: Path, text: str, age: float) -> None:
    path.write_text(text)
    then = time.time() - age
    os.utime(path, (then, then))


def test_a_type_saved_mid_scan_is_built_from_the_bytes_parsed(tmp_path, monkeypatch):
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    _write_old(types / "base.toml", BASE, 20)
    _write_old(types / "job.toml", CHILD, 20)
    select = catalog_module.select_files_with_inputs

    def save_again(path, *args, **kwargs):  # between the parse and the hash and the bundle
        if path.name != "job.toml":
            return select(path, *args, **kwargs)
        _write_old(types / "base.toml", BASE.replace("old", "new"), 10)
        _write_old(types / "job.toml", CHILD.replace("parsed", "saved later"), 10)
        return select(path, *args, **kwargs)

    monkeypatch.setattr(catalog_module, "select_files_with_inputs", save_again)
    catalog = Catalog(tmp_path / "conf.d", tmp_path / "versions")
    catalog.scan()
    monkeypatch.undo()
    first = catalog.get("job")
    assert first is not None and first.task_type is not None and first.version
    assert first.task_type.command == "echo parsed" and first.task_type.tags == ("old",)
    # The version is that of the bytes parsed, and so is the bundle.
    alone = tmp_path / "alone" / "types"
    alone.mkdir(parents=True)
    (alone / "base.toml").write_text(BASE)
    (alone / "job.toml").write_text(CHILD)
    expected = version_hash(alone / "job.toml", parse_type_file(alone / "job.toml"), [],
                            HashCache())
    assert first.version == expected
    members = _members(tmp_path / "versions", first.version)
    assert members["type.toml"] == CHILD.encode()
    assert members["bases/base.toml"] == BASE.encode()
    # The save is not lost: the next scan builds the file as it is now.
    catalog.scan()
    second = catalog.get("job")
    assert second is not None and second.task_type is not None
    assert second.task_type.command == "echo saved later"
    assert second.task_type.tags == ("new",)
    assert second.version != first.version
    assert _members(tmp_path / "versions", second.version)["type.toml"] == \
        CHILD.replace("parsed", "saved later").encode()


def _scan_within(catalog: Catalog, seconds: float) -> None:
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            catalog.scan()
        except BaseException as exc:  # handed to the test below
            failure.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "the scan hung"
    assert not failure, failure


def _scanned_with_fifo(tmp_path: Path, fifo: str, others: dict[str, str]) -> Catalog:
    """A catalog scanned (never hung) over types/: a FIFO named `fifo` beside `others`."""
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    os.mkfifo(types / fifo)
    for name, text in others.items():
        (types / name).write_text(text)
    catalog = Catalog(tmp_path / "conf.d", tmp_path / "versions")
    _scan_within(catalog, 10)
    return catalog


def test_a_fifo_named_like_a_type_file_is_a_problem_not_a_hang(tmp_path):
    catalog = _scanned_with_fifo(tmp_path, "pipe.toml", {"good.toml": 'command = "true"\n'})
    good, pipe = catalog.get("good"), catalog.get("pipe")
    assert good is not None and good.version
    assert pipe is not None and pipe.version is None
    assert "not a regular file" in pipe.problems[0].message


def test_a_type_file_too_big_is_refused_with_its_size(tmp_path):
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    path = types / "huge.toml"
    path.write_text('command = "true"\n' + "#" * MAX_CONFIG_BYTES + "\n")
    catalog = Catalog(tmp_path / "conf.d", tmp_path / "versions")
    catalog.scan()
    huge = catalog.get("huge")
    assert huge is not None and huge.version is None
    message = huge.problems[0].message
    assert str(path.stat().st_size) in message and str(MAX_CONFIG_BYTES) in message
    assert "keep large content in files" in message


def test_a_type_file_at_the_bound_is_read(tmp_path):
    size = MAX_CONFIG_BYTES
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    head = 'command = "true"\n'
    (types / "big.toml").write_text(head + "#" * (size - len(head) - 1) + "\n")
    catalog = Catalog(tmp_path / "conf.d", tmp_path / "versions")
    catalog.scan()
    big = catalog.get("big")
    assert big is not None and big.version, big.problems


def test_a_fifo_or_device_among_a_type_s_files_is_a_problem_not_a_hang(tmp_path):
    from blanket.server.catalog import validate_config_dir

    conf = tmp_path / "conf.d"
    types = conf / "types"
    types.mkdir(parents=True)
    data = conf / "data"
    data.mkdir()
    (data / "ok.txt").write_text("fine\n")
    os.mkfifo(data / "pipe")
    (data / "zero").symlink_to("/dev/zero")
    os.mkfifo(conf / "alone")
    (types / "folder.toml").write_text('command = "true"\n[[files]]\nsrc = "../data"\n')
    (types / "direct.toml").write_text('command = "true"\n[[files]]\nsrc = "../alone"\n')
    (types / "good.toml").write_text('command = "true"\n')
    catalog = Catalog(conf, tmp_path / "versions")
    _scan_within(catalog, 10)
    for name, found in (("folder", {str(data / "pipe"): "a FIFO", str(data / "zero"): "a device"}),
                        ("direct", {str(conf / "alone"): "a FIFO"})):
        loaded = catalog.get(name)
        assert loaded is not None and loaded.version is None
        said = {p.file: p.message for p in loaded.problems}
        assert set(said) == set(found), said
        for file, kind in found.items():
            assert said[file].startswith(f"this file is {kind}, which a type cannot carry")
    good = catalog.get("good")
    assert good is not None and good.version
    problems = validate_config_dir(conf)
    assert sorted(p.file for p in problems) == sorted(
        [str(data / "pipe"), str(data / "zero"), str(conf / "alone")])


def test_a_file_swapped_for_a_fifo_after_the_selection_is_refused_when_read(tmp_path):
    from blanket.config.problems import open_regular_file

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        open_regular_file(tmp_path / "pipe")
    (tmp_path / "file").write_bytes(b"data")
    with open_regular_file(tmp_path / "file") as handle:
        assert handle.read() == b"data"


def test_a_base_that_is_a_fifo_is_said_to_be_one(tmp_path):
    catalog = _scanned_with_fifo(tmp_path, "base.toml",
                                 {"job.toml": 'extends = "base"\ncommand = "true"\n'})
    job = catalog.get("job")
    assert job is not None and job.version is None
    [problem] = job.problems
    assert problem.line == 1 and problem.message.startswith(
        "extends: base 'base' cannot be read (") and "not a regular file" in problem.message


def _files_type(tmp_path: Path) -> tuple[Path, Path]:
    conf = tmp_path / "conf.d"
    (conf / "types").mkdir(parents=True)
    (conf / "data").mkdir()
    _write_old(conf / "data" / "a.txt", "first\n", 20)
    (conf / "types" / "job.toml").write_text('command = "true"\n[[files]]\nsrc = "../data"\n')
    then = time.time() - 20  # all of it older than the scan's racy window: trusted as seen
    for path in (conf / "types" / "job.toml", conf / "types", conf / "data", conf):
        os.utime(path, (then, then))
    return conf, conf / "data" / "a.txt"


def test_a_type_s_file_saved_before_its_bundle_is_written_is_built_again(tmp_path,
                                                                         monkeypatch):
    conf, data = _files_type(tmp_path)
    write_bundle = catalog_module.write_bundle

    def saved_first(*args, **kwargs):
        _write_old(data, "second, longer\n", 10)
        return write_bundle(*args, **kwargs)

    monkeypatch.setattr(catalog_module, "write_bundle", saved_first)
    catalog = Catalog(conf, tmp_path / "versions")
    catalog.scan()
    monkeypatch.undo()
    job = catalog.get("job")
    assert job is not None and job.version is None  # not bundled with other bytes
    assert "changed after its version was worked out" in job.problems[0].message
    catalog.scan()
    job = catalog.get("job")
    assert job is not None and job.version and job.problems == ()
    assert _members(tmp_path / "versions", job.version)["files/0/a.txt"] == b"second, longer\n"


def test_a_type_s_file_saved_right_after_it_was_hashed_gets_the_new_bytes_version(
        tmp_path, monkeypatch):
    conf, data = _files_type(tmp_path)
    hashed = catalog_module.version_hash

    def saved_after(*args, **kwargs):
        version = hashed(*args, **kwargs)
        _write_old(data, "second\n", 10)  # the same size: only the mtime tells
        return version

    monkeypatch.setattr(catalog_module, "version_hash", saved_after)
    catalog = Catalog(conf, tmp_path / "versions")
    catalog.scan()
    monkeypatch.undo()
    catalog.scan()
    job = catalog.get("job")
    assert job is not None and job.version and job.problems == ()
    # The version is that of the bytes now there, and so is the bundle.
    alone = tmp_path / "alone"
    (alone / "types").mkdir(parents=True)
    (alone / "data").mkdir()
    (alone / "data" / "a.txt").write_text("second\n")
    (alone / "types" / "job.toml").write_text((conf / "types" / "job.toml").read_text())
    task_type = parse_type_file(alone / "types" / "job.toml")
    expected = version_hash(alone / "types" / "job.toml", task_type,
                            select_files(alone / "types" / "job.toml", task_type), HashCache())
    assert job.version == expected
    assert _members(tmp_path / "versions", job.version)["files/0/a.txt"] == b"second\n"


def test_a_base_that_is_a_dangling_link_is_said_to_be_one(tmp_path):
    types = tmp_path / "conf.d" / "types"
    types.mkdir(parents=True)
    (types / "base.toml").symlink_to(tmp_path / "gone.toml")
    (types / "job.toml").write_text('extends = "base"\ncommand = "true"\n')
    catalog = Catalog(tmp_path / "conf.d", tmp_path / "versions")
    catalog.scan()
    job = catalog.get("job")
    assert job is not None and job.version is None
    assert job.problems[0].message == (
        f"extends: {types / 'base.toml'} is a link to {tmp_path / 'gone.toml'}, which is "
        "missing; point it at a type file or remove it")
