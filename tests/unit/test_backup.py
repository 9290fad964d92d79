"""The rules of backups: what a backup file holds and how it is made (0600, never over a file,
nothing left under its name when it fails), what a restore refuses (a data dir in use, a
file that is not a backup, a newer schema, hostile members), and export's paging."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from blanket.backup import archive, create
from blanket.backup.archive import MANIFEST, BadBackup, Manifest, safe_name
from blanket.backup.create import make_backup
from blanket.backup.export import exported_tasks, write_files
from blanket.backup.restore import restore_backup
from blanket.models import TaskFilter
from blanket.store.base import NewTask
from blanket.store.snapshot import schema_level
from blanket.store.sqlite import SQLiteStore
from blanket.taskdir import COMMAND_FILE, DataDir
from tests.conftest import wait_until


def new_task(type_name: str = "hello", **env: str) -> NewTask:
    return NewTask(type=type_name, environment=env, tags=(), score=1.0, added=time.time())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with a store of three tasks (one ended), a version and their folders."""
    root = tmp_path / "var"
    root.mkdir(mode=0o700)
    layout = DataDir(root)
    store = SQLiteStore(layout.store)
    try:
        tasks = [store.add_task(new_task(N=str(n))) for n in range(3)]
        store.record_version("ab" * 32, "hello", time.time())
        with store._tx() as db:  # one ended task, as a worker's report would leave it
            db.execute("UPDATE tasks SET state = 'SUCCESS' WHERE id = ?", (tasks[0].id,))
    finally:
        store.close()
    layout.versions.mkdir()
    (layout.versions / f"{'ab' * 32}.tar.gz").write_bytes(b"bundle")
    (layout.versions / f".{'ab' * 32}.123.part").write_bytes(b"half written")
    for task in tasks:
        folder = layout.task("hello", task.id)
        folder.mkdir(parents=True)
        (folder / "input.txt").write_text(f"input of {task.id}\n")
        (folder / COMMAND_FILE).write_text("echo secret\n")
    (root / "admin.token").write_text("bkt_x.secret\n")
    (root / "tmp").mkdir()
    (root / "tmp" / "upload").write_text("staged")
    return root


def sqlite_url(root: Path) -> str:
    return f"sqlite:///{DataDir(root).store}"


def names_in(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_a_backup_holds_the_store_versions_and_the_folders_of_tasks_not_ended(data_dir,
                                                                             tmp_path):
    made = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    names = names_in(made.path)
    assert names[0] == MANIFEST
    assert set(names[1:]) == {"blanket.db", f"versions/{'ab' * 32}.tar.gz",
                              "tasks/hello/2/input.txt", "tasks/hello/3/input.txt"}
    assert made.manifest.tasks == {"QUEUED": 2, "SUCCESS": 1}
    assert made.manifest.schema == schema_level("sqlite")
    assert (made.manifest.versions, made.manifest.task_dirs, made.files) == (1, 2, 4)
    everything = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "all.tgz",
                             with_tasks=True)
    assert "tasks/hello/1/input.txt" in names_in(everything.path)
    assert not any(COMMAND_FILE in n or "admin.token" in n or n.startswith("tmp")
                   for n in names_in(everything.path))


def test_a_backup_file_is_private_from_its_first_byte_and_never_replaces_one(data_dir,
                                                                             tmp_path):
    old = os.umask(0)
    try:
        made = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    with pytest.raises(BadBackup, match="exists: name a new file"):
        make_backup(data_dir, sqlite_url(data_dir), made.path)
    (tmp_path / "c.tgz.partial").write_text("left by a crash")
    with pytest.raises(BadBackup, match=r"c\.tgz\.partial exists"):
        make_backup(data_dir, sqlite_url(data_dir), tmp_path / "c.tgz")
    assert not (tmp_path / "c.tgz").exists()


def test_a_backup_that_fails_half_way_leaves_nothing_under_either_name(data_dir, tmp_path,
                                                                       monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "versions/x")

    monkeypatch.setattr(archive.ArchiveWriter, "add_tree", broken)
    with pytest.raises(BadBackup, match=r"nothing is left at .*b\.tgz: No space left"):
        make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]  # no file, partial or copy


def test_a_file_that_shrinks_while_it_is_copied_keeps_the_archive_whole(tmp_path):
    source = tmp_path / "log"
    source.write_bytes(b"x" * 1000)
    writer = archive.ArchiveWriter(tmp_path / "a.tgz")
    real_fstat = os.fstat

    def fstat_then_truncate(fd):  # the size is taken, then the file is cut short
        found = real_fstat(fd)
        if fd > 2 and stat.S_ISREG(found.st_mode) and found.st_size == 1000:
            os.truncate(source, 10)
        return found

    os.fstat = fstat_then_truncate
    try:
        assert writer.add_file(source, "tasks/t/1/log")
    finally:
        os.fstat = real_fstat
    writer.commit()
    with tarfile.open(tmp_path / "a.tgz") as tar:
        assert tar.extractfile("tasks/t/1/log").read() == b"x" * 10 + b"\0" * 990


def test_restore_makes_a_private_data_dir_that_a_store_opens(data_dir, tmp_path):
    made = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    target = tmp_path / "new" / "var"
    done = restore_backup(made.path, target)
    assert done.files == 4
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for path in target.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert (target / "tasks/hello/2/input.txt").read_text() == "input of 2\n"
    store = SQLiteStore(DataDir(target).store)
    try:
        assert sorted(t.id for t in store.list_tasks(TaskFilter())) == [1, 2, 3]
    finally:
        store.close()
    assert [p.name for p in target.parent.iterdir()] == ["var"]  # no staging left


def test_restore_refuses_a_data_dir_that_holds_anything(data_dir, tmp_path):
    made = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    with pytest.raises(BadBackup, match=f"{data_dir} is not empty.*--data-dir NEW"):
        restore_backup(made.path, data_dir)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadBackup, match="is not a folder"):
        restore_backup(made.path, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    restore_backup(made.path, empty)  # an empty folder is fine
    assert (empty / "blanket.db").is_file()


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
           manifest: dict | None = None) -> Path:
    """A tar.gz whose first member is a manifest (unless None), then `members`."""
    with tarfile.open(path, "w:gz") as tar:
        if manifest is not None:
            raw = json.dumps(manifest).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def files_manifest(**changes) -> dict:
    """A manifest of a backup without its store (as PostgreSQL's)."""
    return {**json.loads(Manifest(blanket="0.1.0", created="now", store="postgresql",
                                  schema=None, database_included=False,
                                  with_tasks=False).to_bytes()), **changes}


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("hostile, refusal", [
    ([(member("../escaped"), b"x")], "outside the data dir"),
    ([(member("tasks/../../escaped"), b"x")], "outside the data dir"),
    ([(member("/tmp/escaped-absolute"), b"x")], "absolute"),
    ([(member("versions/link", tarfile.SYMTYPE, "/etc"), None)], "is a link"),
    ([(member("versions/hard", tarfile.LNKTYPE, "/etc/passwd"), None)], "is a link"),
    ([(member("tasks/dev", tarfile.CHRTYPE), None)], "special file"),
    ([(member("tasks/fifo", tarfile.FIFOTYPE), None)], "special file"),
    ([(member("admin.token"), b"bkt_planted")], "not part of a blanket backup"),
    ([(member("versions/a"), b"1"), (member("versions/a"), b"2")], "comes twice"),
    ([(member("versions/a"), b"1"), (member("versions/a/b"), b"2")], "both a file and"),
    ([(member("blanket.db"), b"planted store")], "does not mention"),
])
def test_a_hostile_backup_writes_nothing_anywhere(tmp_path, hostile, refusal):
    source = tar_gz(tmp_path / "hostile.tgz", [(member("tasks/t/1/ok.txt"), b"fine"),
                                               *hostile], files_manifest())
    target = tmp_path / "restored"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BadBackup, match=refusal):
        restore_backup(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no staging, no target
    assert not Path("/tmp/escaped-absolute").exists()


@pytest.mark.parametrize("make, refusal", [
    (lambda p: p.write_text("hello"), "not a blanket backup"),
    (lambda p: tar_gz(p, [(member("versions/a"), b"1")]), "does not begin with"),
    (lambda p: tar_gz(p, [], {"format": "zip"}), "not a blanket backup"),
    (lambda p: tar_gz(p, [], files_manifest(format_version=99)), "format 99"),
    (lambda p: tar_gz(p, [], files_manifest(store="sqlite", database_included=True,
                                            schema=schema_level("sqlite") + 1)),
     "newer than this blanket"),
    (lambda p: tar_gz(p, [(member("blanket.db"), b"not a database" * 100)],
                      files_manifest(store="sqlite", database_included=True, schema=1)),
     "fails its check"),
    (lambda p: tar_gz(p, [], files_manifest(store="sqlite", database_included=True,
                                            schema=1)), "does not"),
])
def test_restore_refuses_what_is_not_a_backup_it_can_use(tmp_path, make, refusal):
    source = tmp_path / "file"
    make(source)
    with pytest.raises(BadBackup, match=refusal):
        restore_backup(source, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_store_that_disagrees_with_its_manifest_is_refused(data_dir, tmp_path):
    made = make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    with tarfile.open(made.path) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        db = tar.extractfile("blanket.db").read()
    manifest["tasks"]["QUEUED"] = 99
    tampered = tar_gz(tmp_path / "t.tgz", [(member("blanket.db"), db)], manifest)
    with pytest.raises(BadBackup, match="does not match"):
        restore_backup(tampered, tmp_path / "restored")


@pytest.mark.parametrize("name", ["blanket.db", "versions/x.tar.gz", "tasks/t/1/a b\\c.txt",
                                  "tls/key.pem", "tasks/"])
def test_names_a_backup_may_hold(name):
    assert safe_name(name) == name.rstrip("/")


@pytest.mark.parametrize("name", ["", "..", "../x", "tasks/../../x", "/abs", "tasks//x",
                                  "./tasks/x", "tasks/./x", "other/x", "admin.token",
                                  "tasks/x\0y"])
def test_names_a_backup_may_not_hold(name):
    with pytest.raises(BadBackup):
        safe_name(name)


def test_the_store_copy_is_whole_while_another_connection_commits(tmp_path):
    """The copy is the store as of one commit, checked: a writer committing all the while
    (as the server does) neither tears it nor makes the backup fail."""
    path = tmp_path / "var" / "blanket.db"
    store = SQLiteStore(path)
    for n in range(500):
        store.add_task(new_task(N=str(n)))
    stop = threading.Event()
    committed = []

    def write() -> None:
        while not stop.is_set():
            committed.append(store.add_task(new_task(N="more")).id)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(committed) > 20)
        before = 500 + len(committed)
        made = make_backup(tmp_path / "var", f"sqlite:///{path}", tmp_path / "b.tgz")
        after = 500 + len(committed)
    finally:
        stop.set()
        writer.join()
        store.close()
    assert before <= made.manifest.tasks["QUEUED"] <= after + 1


class PagedServer:
    """GET /task/?sort=id&order=asc&limit&offset over a list that loses tasks between pages."""

    def __init__(self, ids: list[int], remove_after_each_page: list[list[int]]):
        self.ids = ids
        self.removals = list(remove_after_each_page)
        self.calls = 0

    def get(self, path: str) -> list[dict]:
        query = parse_qs(urlsplit(path).query)
        assert query["sort"] == ["id"] and query["order"] == ["asc"]
        offset, limit = int(query["offset"][0]), int(query["limit"][0])
        page = [{"id": i, "type": "t"} for i in self.ids[offset:offset + limit]]
        self.calls += 1
        if self.removals:
            gone = self.removals.pop(0)
            self.ids = [i for i in self.ids if i not in gone]
        return page


@pytest.mark.parametrize("removals", [
    [], [[1]], [[1, 2, 3, 4, 5, 6, 7]], [[2], [5, 6], [9]], [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
])
def test_export_pages_skip_no_task_that_stays_and_repeat_none(removals):
    server = PagedServer(list(range(1, 23)), removals)
    removed = {i for batch in removals for i in batch}
    seen = [t["id"] for t in exported_tasks(server, page=4)]  # type: ignore[arg-type]
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert set(range(1, 23)) - removed <= set(seen)


def test_export_asks_for_the_filters():
    class Recorder:
        asked: list[dict] = []

        def get(self, path):
            self.asked.append(parse_qs(urlsplit(path).query))
            return []

    recorder = Recorder()
    list(exported_tasks(recorder, since="-2h", until="2026-01-01T00:00:00Z",  # type: ignore
                        types=("a", "b"), states=("SUCCESS",)))
    asked = recorder.asked[0]
    assert asked["added_after"] == ["-2h"] and asked["added_before"] == ["2026-01-01T00:00:00Z"]
    assert asked["type"] == ["a,b"] and asked["state"] == ["SUCCESS"]


def test_a_backup_that_fails_its_read_back_never_gets_its_name(data_dir, tmp_path,
                                                               monkeypatch):
    def damaged(path):
        raise BadBackup(f"{path} is damaged")

    monkeypatch.setattr(create, "verify_backup", damaged)
    with pytest.raises(BadBackup, match=r"b\.tgz\.partial is damaged"):
        make_backup(data_dir, sqlite_url(data_dir), tmp_path / "b.tgz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]


def test_a_data_dir_whose_path_has_uri_characters(data_dir, tmp_path):
    odd = tmp_path / "a?b#c%20d"
    data_dir.rename(odd)
    made = make_backup(odd, sqlite_url(odd), tmp_path / "b.tgz")
    assert made.manifest.tasks == {"QUEUED": 2, "SUCCESS": 1}


@pytest.mark.parametrize("kind, path", [("t", "../../escaped"), ("t", "/etc/passwd"),
                                        ("../t", "x"), ("t", "a//b"), ("t", "./x")])
def test_export_refuses_file_names_a_server_should_never_list(tmp_path, kind, path):
    class Hostile:
        def get(self, asked):
            return [{"path": path, "size": 1}]

    with pytest.raises(BadBackup, match="outside the task's folder"):
        write_files(Hostile(), [{"id": 1, "type": kind}], tmp_path / "f.tgz")  # type: ignore
    assert list(tmp_path.iterdir()) == []


def test_a_sparse_member_is_refused_before_it_is_unpacked(tmp_path):
    """A few bytes of GNU sparse header could unpack to gigabytes beside the data dir."""
    source = tar_gz(tmp_path / "sparse.tgz", [(member("tasks/t/1/big", tarfile.GNUTYPE_SPARSE),
                                               b"x")], files_manifest())
    with tarfile.open(source) as tar:
        assert tar.getmember("tasks/t/1/big").issparse()  # what the check must catch
    with pytest.raises(BadBackup, match="sparse"):
        restore_backup(source, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_a_backup_larger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    from blanket.backup import restore
    source = tar_gz(tmp_path / "big.tgz", [(member("tasks/t/1/log"), b"x" * 4096)],
                    files_manifest())
    monkeypatch.setattr(restore, "_free_bytes", lambda folder: restore.KEEP_FREE + 1000)
    with pytest.raises(BadBackup, match="more than the free space"):
        restore_backup(source, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
