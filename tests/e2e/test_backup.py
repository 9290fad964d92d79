"""Backups of a running server, restored into a fresh data dir that a new server runs; exports
through the API; the PostgreSQL path (the files, and pg_dump's command). Real processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from blanket.client import Client
from tests.conftest import ServerProcess, wait_until
from tests.store.conftest import _postgres_unreachable, fresh_postgres_database

BLANKET = str(Path(sys.executable).parent / "blanket")
WORK = 'command = "sleep 0.02; echo run {{ N }} $KEY"\n' \
       '[environment.defaults]\nN = "0"\nKEY = { value = "hunter2", secret = true }\n'
FLAKY = 'command = "echo out {{ N }}; test {{ N }} != fail"\n' \
        '[environment.defaults]\nN = "0"\n'
ENDED = ("SUCCESS", "FAILED", "TIMEDOUT", "STOPPED")


def blanket(*args: str, cwd: Path, ok: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("BLANKET_SERVER", "BLANKET_SETTINGS", "BLANKET_TOKEN")}
    done = subprocess.run([BLANKET, "--settings", str(cwd / "none.toml"), *args], cwd=cwd,
                          env={**environ, **(env or {})}, capture_output=True, text=True,
                          timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def submit_with_input(server: ServerProcess, data: bytes) -> dict:
    """A task that waits an hour, with an uploaded input in its folder."""
    fields = {"data": json.dumps({"type": "work", "not_before": "+1h"}),
              "input.txt": ("input.txt", data)}
    return server.client.request("POST", "/task/", fields=fields)[1]


class Submitter(threading.Thread):
    """Submits tasks one after another until stopped; `acked` holds the ids answered 201."""

    def __init__(self, server: ServerProcess):
        super().__init__(daemon=True)
        self.client = Client(server.url, timeout=30, token=server.admin_token)
        self.acked: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            self.acked.append(self.client.post("/task/", {"type": "work",
                                                          "environment": {"N": str(n)}})["id"])


def test_a_backup_under_load_restores_into_a_server_that_sees_every_acknowledged_task(
        make_server, tmp_path):
    server = make_server(types={"work": WORK})
    make_server.worker(server, slots=2)
    waiting = submit_with_input(server, b"the input\n")
    submitter = Submitter(server)
    submitter.start()
    try:
        wait_until(lambda: server.client.get("/task/?state=SUCCESS&count")["count"] >= 10,
                   timeout=30)
        acked = list(submitter.acked)  # every task answered 201 before the backup begins
        before = {t["id"]: t["state"] for t in server.client.get("/task/?limit=10000")}
        running = blanket("backup", str(tmp_path / "b.tgz"), "--data-dir", "var",
                          cwd=server.base)
        during = len(submitter.acked) - len(acked)
    finally:
        submitter.halt.set()
        submitter.join()
    assert during > 0, "no submission went on during the backup"
    assert "tasks" in running.stdout and "versions" in running.stdout
    assert stat.S_IMODE((tmp_path / "b.tgz").stat().st_mode) == 0o600
    versions = {t["version"] for t in server.client.get("/task/?limit=10000") if t["version"]}

    restored = make_server(types={"work": WORK}, base=tmp_path / "restored", start=False)
    said = blanket("restore", str(tmp_path / "b.tgz"), "--data-dir", str(restored.data_dir),
                   cwd=tmp_path)
    assert f"--data-dir {restored.data_dir}" in said.stdout
    restored.start()
    assert stat.S_IMODE(restored.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((restored.data_dir / "admin.token").stat().st_mode) == 0o600
    assert restored.admin_token != server.admin_token  # made anew, not carried in the backup

    seen = {t["id"]: t for t in restored.client.get("/task/?limit=10000")}
    assert set(acked) | {waiting["id"]} <= set(seen)
    for task_id, state in before.items():
        if state in ENDED:
            assert seen[task_id]["state"] == state, task_id
    assert seen[waiting["id"]]["environment"]["KEY"] == "***"
    assert restored.client.get(f"/task/{waiting['id']}/files/input.txt") == "the input\n"
    for version in versions:
        bundle = restored.data_dir / "versions" / f"{version}.tar.gz"
        status, _ = restored.client.request("GET", f"/version/{version}.tar.gz")
        assert status == 200
        assert bundle.read_bytes() == (server.data_dir / "versions" /
                                       f"{version}.tar.gz").read_bytes()

    make_server.worker(restored, slots=2)
    new = restored.client.post("/task/", {"type": "work", "environment": {"N": "new"}})
    assert restored.wait_for_task(new["id"], timeout=60)["state"] == "SUCCESS"
    assert "run new ***" in restored.client.get(f"/task/{new['id']}/log/stdout")
    # What was queued when the backup was taken runs too (a task running then is lost).
    wait_until(lambda: restored.client.get("/task/?state=QUEUED,CLAIMED,RUNNING&count")[
        "count"] == 1, timeout=90, interval=0.2)


def test_restore_refuses_a_data_dir_in_use_and_changes_nothing(make_server, tmp_path):
    server = make_server(types={"work": WORK})
    blanket("backup", str(tmp_path / "b.tgz"), "--data-dir", "var", cwd=server.base)
    listing = sorted(p.name for p in server.data_dir.iterdir())
    refused = blanket("restore", str(tmp_path / "b.tgz"), "--data-dir", "var",
                      cwd=server.base, ok=False)
    assert refused.returncode == 1
    assert f"{server.data_dir} is not empty" in refused.stderr
    assert "--data-dir NEW" in refused.stderr
    assert sorted(p.name for p in server.data_dir.iterdir()) == listing
    again = blanket("backup", str(tmp_path / "b.tgz"), "--data-dir", "var", cwd=server.base,
                    ok=False)
    assert again.returncode == 1 and "exists: name a new file" in again.stderr
    hostile = tmp_path / "hostile.tgz"
    with tarfile.open(tmp_path / "b.tgz") as source, tarfile.open(hostile, "w:gz") as out:
        manifest = source.getmember("blanket-backup.json")
        out.addfile(manifest, source.extractfile(manifest))
        link = tarfile.TarInfo("versions")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        out.addfile(link)
    refused = blanket("restore", str(hostile), "--data-dir", str(tmp_path / "new"),
                      cwd=tmp_path, ok=False)
    assert refused.returncode == 1 and "is a link" in refused.stderr
    assert not (tmp_path / "new").exists()


def test_export_writes_the_tasks_the_filters_select_as_json_lines(make_server, tmp_path):
    server = make_server(types={"work": WORK, "flaky": FLAKY})
    make_server.worker(server)
    ids = [server.client.post("/task/", {"type": kind, "environment": {"N": n}})["id"]
           for kind, n in (("work", "1"), ("flaky", "2"), ("flaky", "fail"), ("work", "3"))]
    for task_id in ids:
        server.wait_for_task(task_id)
    viewer = server.token("reader", "viewer")
    as_viewer = {"BLANKET_TOKEN": viewer, "BLANKET_SERVER": server.url}

    everything = blanket("export", cwd=tmp_path, env=as_viewer).stdout.splitlines()
    tasks = [json.loads(line) for line in everything]
    assert [t["id"] for t in tasks] == ids  # oldest first, one line each
    assert tasks[0] == server.client.get(f"/task/{ids[0]}")  # the record as the API shows it
    assert tasks[0]["environment"]["KEY"] == "***"

    blanket("export", "--type", "flaky", "--state", "success", "-o", "out.jsonl", "--files",
            "files.tgz", cwd=tmp_path, env=as_viewer)
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [ids[1]]
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "files.tgz").stat().st_mode) == 0o600
    with tarfile.open(tmp_path / "files.tgz") as tar:
        assert {n.rsplit("/", 1)[0] for n in tar.getnames()} == {f"flaky/{ids[1]}"}
        assert tar.extractfile(f"flaky/{ids[1]}/stdout.log").read() == b"out 2\n"

    blanket("export", "--type", "work", "--files", "work.tgz", "-o", "work.jsonl",
            cwd=tmp_path, env=as_viewer)
    with tarfile.open(tmp_path / "work.tgz") as tar:
        log = tar.extractfile(f"work/{ids[0]}/stdout.log").read()
    assert log == b"run 1 ***\n"  # served masked, as the API serves it

    later = blanket("export", "--since", str(server.client.get(f"/task/{ids[2]}")["added"]),
                    cwd=tmp_path, env=as_viewer).stdout.splitlines()
    assert [json.loads(line)["id"] for line in later] == ids[2:]
    bad = blanket("export", "--state", "nonsense", cwd=tmp_path, env=as_viewer, ok=False)
    assert bad.returncode == 2 and "nonsense" in bad.stderr
    taken = blanket("export", "-o", "out.jsonl", cwd=tmp_path, env=as_viewer, ok=False)
    assert taken.returncode == 2 and "exists" in taken.stderr


def test_with_postgresql_a_backup_holds_the_files_and_names_pg_dump(make_server, tmp_path):
    reason = _postgres_unreachable()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(reason)
    with fresh_postgres_database() as url:
        server = make_server(types={"work": WORK}, extra_args=("--database", url))
        waiting = submit_with_input(server, b"pg input\n")
        made = blanket("backup", str(tmp_path / "pg.tgz"), "--data-dir", "var", "--database",
                       url, "--json", cwd=server.base)
    manifest = json.loads(made.stdout)
    assert manifest["store"] == "postgresql" and not manifest["database_included"]
    assert manifest["tasks"] == {"QUEUED": 1} and manifest["versions"] == 1
    assert "pg_dump --format=custom" in made.stderr
    with tarfile.open(tmp_path / "pg.tgz") as tar:
        names = tar.getnames()
    assert "blanket.db" not in names
    assert f"tasks/work/{waiting['id']}/input.txt" in names
    assert any(n.startswith("versions/") and n.endswith(".tar.gz") for n in names)
    done = blanket("restore", str(tmp_path / "pg.tgz"), "--data-dir", str(tmp_path / "new"),
                   cwd=tmp_path)
    assert "pg_restore" in done.stderr
    assert (tmp_path / "new" / "tasks" / "work" / str(waiting["id"]) / "input.txt"
            ).read_bytes() == b"pg input\n"
