"""Packing a task directory on a worker and unpacking it on the server: plain files only,
inside the task directory, within the size limit, all or nothing."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from blanket.outputs import BadOutputs, pack, server_id, shares_data_dir, unpack


def make_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def archive_of(tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    path = tmp_path / "outputs.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_a_packed_directory_unpacks_the_same_without_the_skipped_files(tmp_path):
    work = make_dir(tmp_path / "worker" / "7", {
        "stdout.log": b"hello\n", "stderr.log": b"", "task.json": b"{}\n",
        "made/deep/result.txt": b"42\n", "input.csv": b"a,b\n"})
    os.symlink("/etc/passwd", work / "link")
    packed = tmp_path / "p.tar.gz"
    with open(packed, "wb") as out:
        assert pack(work, ["input.csv"], out) == 4
    server_dir = tmp_path / "server" / "7"
    server_dir.mkdir(parents=True)
    written = unpack(packed, server_dir, tmp_path / "staging")
    assert written == ["made/deep/result.txt", "stderr.log", "stdout.log", "task.json"]
    assert (server_dir / "made" / "deep" / "result.txt").read_bytes() == b"42\n"
    assert not (server_dir / "input.csv").exists() and not (server_dir / "link").exists()
    assert list((tmp_path / "staging").iterdir()) == []  # no staging left behind


def test_unpacking_replaces_files_of_the_same_name(tmp_path):
    task_dir = make_dir(tmp_path / "t" / "1", {"stdout.log": b"old\n", "keep.txt": b"k"})
    unpack(archive_of(tmp_path, [("stdout.log", b"new\n")]), task_dir, tmp_path / "staging")
    assert (task_dir / "stdout.log").read_bytes() == b"new\n"
    assert (task_dir / "keep.txt").read_bytes() == b"k"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(("member", "words"), [
    (("../escape.txt", b"x"), "outside"),
    (("/etc/cron.d/evil", b"x"), "outside"),
    (("a/../../escape.txt", b"x"), "outside"),
    (_link("stdout.log", "/etc/passwd"), "not a plain file"),
    (_link("hard.log", "stdout.log", tarfile.LNKTYPE), "not a plain file"),
    (_device("tty"), "not a plain file"),
])
def test_an_unsafe_member_is_refused_and_nothing_is_written(tmp_path, member, words):
    task_dir = make_dir(tmp_path / "t" / "1", {"stdout.log": b"old\n"})
    archive = archive_of(tmp_path, [("first.txt", b"fine"), member])
    with pytest.raises(BadOutputs, match=words):
        unpack(archive, task_dir, tmp_path / "staging")
    assert sorted(p.name for p in task_dir.iterdir()) == ["stdout.log"]
    assert (task_dir / "stdout.log").read_bytes() == b"old\n"
    assert not (tmp_path / "escape.txt").exists()
    assert list((tmp_path / "staging").iterdir()) == []


def test_more_than_the_size_limit_is_refused(tmp_path):
    task_dir = (tmp_path / "t" / "1")
    task_dir.mkdir(parents=True)
    archive = archive_of(tmp_path, [("a.bin", b"x" * 600), ("b.bin", b"y" * 600)])
    with pytest.raises(BadOutputs, match="more than 1000 bytes"):
        unpack(archive, task_dir, tmp_path / "staging", max_unpacked=1000)
    assert list(task_dir.iterdir()) == []


def test_outputs_sent_again_may_not_grow_the_folder_past_its_limits(tmp_path):
    """What an earlier archive left counts: a worker posting outputs under new names again
    and again keeps the folder within its bytes and files (a file replaced counts once)."""
    task_dir = make_dir(tmp_path / "t" / "1", {"stdout.log": b"x" * 400})
    staging = tmp_path / "staging"
    unpack(archive_of(tmp_path, [("a.bin", b"a" * 400)]), task_dir, staging, max_unpacked=1000)
    unpack(archive_of(tmp_path, [("a.bin", b"A" * 500)]), task_dir, staging, max_unpacked=1000)
    with pytest.raises(BadOutputs, match="would hold 1300 bytes; it keeps at most 1000"):
        unpack(archive_of(tmp_path, [("b.bin", b"b" * 400)]), task_dir, staging,
               max_unpacked=1000)
    assert not (task_dir / "b.bin").exists() and (task_dir / "a.bin").read_bytes() == b"A" * 500
    empties = [(f"e{n}", b"") for n in range(3)]
    unpack(archive_of(tmp_path, empties), task_dir, staging, max_files=5)  # 2 + 3 files
    with pytest.raises(BadOutputs, match="would hold 6 files; it keeps at most 5"):
        unpack(archive_of(tmp_path, [("f", b"")]), task_dir, staging, max_files=5)


def test_an_archive_of_too_many_entries_is_refused_before_it_is_read_whole(tmp_path):
    task_dir = (tmp_path / "t" / "1")
    task_dir.mkdir(parents=True)
    folders = []
    for n in range(6):
        info = tarfile.TarInfo(f"d{n}")
        info.type = tarfile.DIRTYPE
        folders.append(info)
    with pytest.raises(BadOutputs, match="more than 5 entries"):  # folders count too
        unpack(archive_of(tmp_path, folders), task_dir, tmp_path / "staging", max_members=5)
    assert list(task_dir.iterdir()) == []


def test_outputs_may_not_replace_the_tasks_inputs_or_bear_names_no_url_can_ask_for(tmp_path):
    task_dir = make_dir(tmp_path / "t" / "1", {"in.txt": b"uploaded"})
    for name, words in (("in.txt", "uploaded inputs"), ("./in.txt", "uploaded inputs"),
                        ("bad\udcff.txt", "not UTF-8 text"), ("new\nline", "control"),
                        ("tab\there", "control")):
        with pytest.raises(BadOutputs, match=words):
            unpack(archive_of(tmp_path, [("ok.txt", b"ok"), (name, b"evil")]), task_dir,
                   tmp_path / "staging", keep=["in.txt"])
        assert (task_dir / "in.txt").read_bytes() == b"uploaded"
        assert not (task_dir / "ok.txt").exists()


def test_a_file_may_not_replace_a_link_or_a_folder_in_the_task_directory(tmp_path):
    task_dir = make_dir(tmp_path / "t" / "1", {"made/x.txt": b"x"})
    os.symlink("/etc", task_dir / "etc")
    for name in ("etc/passwd", "made"):
        with pytest.raises(BadOutputs):
            unpack(archive_of(tmp_path, [("ok.txt", b"ok"), (name, b"evil")]), task_dir,
                   tmp_path / "staging")
        assert not (task_dir / "ok.txt").exists()


def test_what_is_not_a_tar_gz_is_refused(tmp_path):
    task_dir = tmp_path / "t" / "1"
    task_dir.mkdir(parents=True)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(BadOutputs, match=r"not a readable tar\.gz"):
        unpack(junk, task_dir, tmp_path / "staging")


def test_the_server_id_is_made_once_and_tells_a_shared_data_dir(tmp_path):
    first = server_id(tmp_path / "var")
    assert first == server_id(tmp_path / "var") and len(first) == 32
    assert shares_data_dir(tmp_path / "var", first)
    assert not shares_data_dir(tmp_path / "elsewhere", first)
    assert not shares_data_dir(tmp_path / "var", "another-server")


def test_a_secret_cut_by_a_chunk_boundary_is_still_masked(monkeypatch):
    import io

    from blanket.server.api import taskfiles
    monkeypatch.setattr(taskfiles, "CHUNK", 7)
    masker = taskfiles.Masker(["s3cr3t-value", "ab"])  # too short to hunt for: kept
    text = b"x" * 5 + b"s3cr3t-value" + b"-ab-" + b"s3cr3t-value" * 2 + b"end"
    masked = b"".join(masker.stream(io.BytesIO(text)))
    assert masked == b"xxxxx***-ab-******end"
    assert b"".join(taskfiles.Masker([]).mask(b"plain") for _ in range(1)) == b"plain"
