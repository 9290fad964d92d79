"""File selection, ignore rules, version hashes and bundles."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from blanket.config.bundles import UnsafeBundle, extract_bundle, tar_header, write_bundle
from blanket.config.selection import select_files
from blanket.config.tasktype import FileSection, TaskType
from blanket.config.versions import HashCache, version_hash


def make_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def setup_type(tmp_path: Path, files: dict[str, str], *sections: FileSection):
    """A config dir with types/t.toml and `files` (paths relative to the config dir)."""
    make_files(tmp_path, files)
    type_path = tmp_path / "types" / "t.toml"
    type_path.parent.mkdir(parents=True, exist_ok=True)
    type_path.write_text('command = "true"\n')
    return type_path, TaskType("t", "true", files=sections)


def relpaths(type_path: Path, task_type: TaskType) -> list[str]:
    return [f.relpath for f in select_files(type_path, task_type)]


def current_hash(type_path: Path, task_type: TaskType) -> str:
    return version_hash(type_path, task_type, select_files(type_path, task_type), HashCache())


def test_directory_src_selects_every_file_recursively(tmp_path):
    type_path, task_type = setup_type(
        tmp_path, {"types/a/x.txt": "", "types/a/sub/y.txt": ""}, FileSection("a/"))
    selected = select_files(type_path, task_type)
    assert [(f.section, f.relpath) for f in selected] == [(0, "sub/y.txt"), (0, "x.txt")]
    assert selected[1].abspath == tmp_path / "types" / "a" / "x.txt"


def test_glob_src_paths_are_relative_to_its_plain_leading_folder(tmp_path):
    files = {"types/art/logo.png": "", "types/art/deep/icon.png": "", "types/art/notes.txt": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("art/**/*.png"))
    assert relpaths(type_path, task_type) == ["deep/icon.png", "logo.png"]


def test_file_src_selects_that_file(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/run.sh": "echo"}, FileSection("run.sh"))
    assert relpaths(type_path, task_type) == ["run.sh"]


def test_include_patterns_keep_only_matches(tmp_path):
    files = {"types/a/x.txt": "", "types/a/y.csv": "", "types/a/s/z.txt": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a", include=("*.txt",)))
    assert relpaths(type_path, task_type) == ["s/z.txt", "x.txt"]


def test_exclude_patterns_drop_matches(tmp_path):
    files = {"types/a/x.txt": "", "types/a/x.bak": "", "types/a/cache/c.txt": ""}
    type_path, task_type = setup_type(
        tmp_path, files, FileSection("a", exclude=("*.bak", "cache/")))
    assert relpaths(type_path, task_type) == ["x.txt"]


def test_sections_are_numbered_in_order(tmp_path):
    files = {"types/a/x.txt": "", "types/b/y.txt": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"), FileSection("b"))
    assert [(f.section, f.relpath) for f in select_files(type_path, task_type)] == [
        (0, "x.txt"), (1, "y.txt")]


def test_blanketignore_in_config_root_applies_below_it(tmp_path):
    files = {".blanketignore": "*.log\n", "types/a/x.txt": "", "types/a/run.log": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    assert relpaths(type_path, task_type) == ["x.txt"]


def test_blanketignore_files_themselves_are_not_selected(tmp_path):
    files = {"types/a/.blanketignore": "*.log\n", "types/a/x.txt": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    assert relpaths(type_path, task_type) == ["x.txt"]


def test_nested_blanketignore_applies_relative_to_its_folder(tmp_path):
    files = {"types/a/sub/.blanketignore": "/x.txt\n", "types/a/x.txt": "", "types/a/sub/x.txt": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    assert relpaths(type_path, task_type) == ["x.txt"]


def test_nested_blanketignore_can_reinclude_with_bang(tmp_path):
    files = {".blanketignore": "*.log\n", "types/a/keep/.blanketignore": "!important.log\n",
             "types/a/x.log": "", "types/a/keep/important.log": "", "types/a/keep/other.log": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    assert relpaths(type_path, task_type) == ["keep/important.log"]


def test_ignored_folder_is_not_entered(tmp_path):
    files = {"types/.blanketignore": "build/\n", "types/a/build/.blanketignore": "!*\n",
             "types/a/build/out.bin": "", "types/a/src.c": ""}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    assert relpaths(type_path, task_type) == ["src.c"]


def test_change_to_selected_file_changes_the_hash(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/a/x.txt": "one"}, FileSection("a"))
    before = current_hash(type_path, task_type)
    (tmp_path / "types" / "a" / "x.txt").write_text("two")
    assert current_hash(type_path, task_type) != before


def test_change_to_ignored_file_keeps_the_hash(tmp_path):
    files = {".blanketignore": "*.log\n", "types/a/x.txt": "", "types/a/run.log": "one"}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"))
    before = current_hash(type_path, task_type)
    (tmp_path / "types" / "a" / "run.log").write_text("two")
    assert current_hash(type_path, task_type) == before


def test_change_to_the_toml_file_changes_the_hash(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/a/x.txt": ""}, FileSection("a"))
    before = current_hash(type_path, task_type)
    type_path.write_text('command = "false"\n')
    assert current_hash(type_path, task_type) != before


def test_renaming_a_selected_file_changes_the_hash(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/a/x.txt": "same"}, FileSection("a"))
    before = current_hash(type_path, task_type)
    (tmp_path / "types" / "a" / "x.txt").rename(tmp_path / "types" / "a" / "y.txt")
    assert current_hash(type_path, task_type) != before


def test_hash_cache_does_not_reread_an_unchanged_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("content")
    old = os.stat(path).st_mtime_ns - 10**9
    os.utime(path, ns=(old, old))
    cache = HashCache()
    first = cache.sha256(path)
    monkeypatch.setattr("blanket.config.versions._file_sha256", lambda p: pytest.fail("re-read"))
    assert cache.sha256(path) == first


def test_hash_cache_rereads_a_changed_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("one")
    os.utime(path, ns=(10**18, 10**18))
    cache = HashCache()
    first = cache.sha256(path)
    path.write_text("two")
    assert cache.sha256(path) != first


def read_bundle(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_bundle_holds_type_toml_and_files_by_section(tmp_path):
    files = {"types/a/x.txt": "X", "types/b/deep/y.txt": "Y"}
    type_path, task_type = setup_type(tmp_path, files, FileSection("a"), FileSection("b"))
    selected = select_files(type_path, task_type)
    bundle = write_bundle(tmp_path / "versions", "abc123", type_path, selected)
    assert bundle == tmp_path / "versions" / "abc123.tar.gz"
    assert read_bundle(bundle) == {
        "type.toml": b'command = "true"\n', "files/0/x.txt": b"X", "files/1/deep/y.txt": b"Y"}


def test_bundle_keeps_long_names_and_the_executable_bit(tmp_path):
    long_rel = "d" * 60 + "/" + "f" * 60 + ".sh"
    type_path, task_type = setup_type(tmp_path, {f"types/a/{long_rel}": "#!/bin/sh"},
                                      FileSection("a"))
    (tmp_path / "types" / "a" / long_rel).chmod(0o755)
    bundle = write_bundle(tmp_path, "h", type_path, select_files(type_path, task_type))
    with tarfile.open(bundle) as tar:
        member = tar.getmember(f"files/0/{long_rel}")
    assert member.mode == 0o755


def test_bundle_is_written_once(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/a/x.txt": "X"}, FileSection("a"))
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "h.tar.gz").write_text("already here")
    write_bundle(tmp_path / "versions", "h", type_path, select_files(type_path, task_type))
    assert (tmp_path / "versions" / "h.tar.gz").read_text() == "already here"
    assert os.listdir(tmp_path / "versions") == ["h.tar.gz"]


def test_tar_header_matches_tarfile_byte_for_byte():
    info = tarfile.TarInfo("files/0/some/file.txt")
    info.size, info.mtime, info.mode = 12345, 1_700_000_000, 0o755
    expected = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    assert tar_header("files/0/some/file.txt", 12345, 1_700_000_000, 0o755) == expected


def test_extract_bundle_restores_the_layout(tmp_path):
    type_path, task_type = setup_type(tmp_path, {"types/a/s/x.txt": "X"}, FileSection("a"))
    bundle = write_bundle(tmp_path / "v", "h", type_path, select_files(type_path, task_type))
    extract_bundle(bundle, tmp_path / "out")
    assert (tmp_path / "out" / "files" / "0" / "s" / "x.txt").read_text() == "X"
    assert (tmp_path / "out" / "type.toml").read_text() == 'command = "true"\n'


def evil_bundle(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size))
    return path


def file_member(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 1
    return member


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "files/../../evil"])
def test_extract_bundle_refuses_paths_outside_dest(tmp_path, name):
    bundle = evil_bundle(tmp_path / "b.tar.gz", file_member(name))
    with pytest.raises(UnsafeBundle):
        extract_bundle(bundle, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_extract_bundle_refuses_links(tmp_path, kind):
    link = tarfile.TarInfo("files/0/link")
    link.type, link.linkname = kind, "type.toml"
    bundle = evil_bundle(tmp_path / "b.tar.gz", link)
    with pytest.raises(UnsafeBundle):
        extract_bundle(bundle, tmp_path / "out")
