"""The retention sweep over a real SQLite store and data dir: what goes (records, folders,
versions) and what stays, batches, dry runs and manual prunes."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import nullcontext
from pathlib import Path

import pytest

from blanket.config.retention import Retention
from blanket.errors import Conflict
from blanket.models import TaskState
from blanket.server.queue import Queue
from blanket.server.retention import RetentionRules
from blanket.server.sweeper import PAGE, Sweeper, folder_size
from blanket.store.base import Claim, NewTask, Outcome
from blanket.store.sqlite import SQLiteStore
from blanket.taskdir import DataDir

DAY = 86400.0
NOW = 1_000 * DAY


class World:
    """A store, a data dir and a sweeper whose rules and current versions a test sets."""

    def __init__(self, root: Path):
        self.data = DataDir(root / "var")
        self.store = SQLiteStore(self.data.store)
        self.rules = RetentionRules(Retention())
        self.current: set[str] = set()
        queue = Queue(self.store, lambda name: None, dict, task_dir=self.data.task)
        self.sweeper = Sweeper(self.store, lambda: self.rules, lambda: set(self.current),
                               nullcontext, self.data.task, queue.remove_folder,
                               self.data.versions, clock=lambda: NOW, pause=0)

    def task(self, days_ago: float | None = 10, state: TaskState = TaskState.SUCCESS,
             type: str = "echo", version: str | None = None, schedule: str | None = None,
             started: bool = False) -> int:
        """A task with a folder holding 100 bytes: ended `days_ago`, or queued (None), or
        running (`started`)."""
        task = self.store.add_task(NewTask(type=type, environment={}, tags=(), score=1.0,
                                           added=1.0, schedule=schedule))
        folder = self.data.task(type, task.id)
        folder.mkdir(parents=True)
        (folder / "stdout.log").write_bytes(b"x" * 100)
        if days_ago is None and not started:
            return task.id
        claimed = self.store.claim_task(Claim("w", frozenset(), now=1.0,
                                              versions={type: version} if version else {}))
        assert claimed is not None and claimed.id == task.id
        if started:
            self.store.mark_started(task.id, claimed.token or "", 1, 2.0)
            return task.id
        assert days_ago is not None
        self.store.finish_task(task.id, claimed.token or "",
                               Outcome(state, finished=NOW - days_ago * DAY))
        return task.id

    def version(self, hash: str, type: str = "echo") -> Path:
        self.store.record_version(hash, type, 1.0)
        self.data.versions.mkdir(parents=True, exist_ok=True)
        bundle = self.data.versions / f"{hash}.tar.gz"
        bundle.write_bytes(b"z" * 50)
        return bundle

    def there(self, task_id: int, type: str = "echo") -> bool:
        return self.store.get_task(task_id) is not None and self.data.task(type, task_id).exists()

    def gone(self, task_id: int, type: str = "echo") -> bool:
        return self.store.get_task(task_id) is None and not self.data.task(type, task_id).exists()


@pytest.fixture
def world(tmp_path: Path):
    made = World(tmp_path)
    yield made
    made.store.close()


def test_ended_tasks_past_their_keep_go_with_their_folders(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=7 * DAY, keep_failed=90 * DAY))
    old, recent = world.task(days_ago=8), world.task(days_ago=1)
    failed = world.task(days_ago=30, state=TaskState.FAILED)
    running = world.task(days_ago=None, started=True)
    queued = world.task(days_ago=None)
    report = world.sweeper.sweep()
    assert report is not None and report.tasks == 1
    assert world.gone(old)
    assert all(world.there(t) for t in (recent, failed, queued, running))
    assert report.types["echo"].ids == [old]


def test_nothing_goes_without_rules(world: World) -> None:
    ids = [world.task(days_ago=5000) for _ in range(3)]
    report = world.sweeper.sweep()
    assert report is not None and report.tasks == 0
    assert all(world.there(t) for t in ids)


def test_removal_goes_in_batches_past_a_page(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=DAY))
    total = PAGE * 2 + 17
    with sqlite3.connect(world.data.store) as db:
        db.executemany("INSERT INTO tasks (type, state, environment, tags, score, added, "
                       "finished) VALUES ('bulk', 'SUCCESS', '{}', '', 1, 1, ?)",
                       [(NOW - 2 * DAY + n,) for n in range(total)])
    keep = world.task(days_ago=0.5)
    batches = []
    original = world.store.delete_ended

    def counted(ids):
        batches.append(len(ids))
        return original(ids)

    world.store.delete_ended = counted  # type: ignore[method-assign]
    report = world.sweeper.sweep()
    assert report is not None and report.tasks == total
    assert max(batches) <= PAGE and sum(batches) == total
    assert world.there(keep)


def test_keep_last_keeps_the_newest_of_each_group(world: World) -> None:
    world.rules = RetentionRules(Retention(keep_last=2), {},
                                 {"nightly": Retention(keep_last=1)})
    plain = [world.task(days_ago=1) for _ in range(4)]
    nightly = [world.task(days_ago=1, schedule="nightly") for _ in range(3)]
    world.task(days_ago=None)  # queued: never counted, never removed
    world.sweeper.sweep()
    assert [world.there(t) for t in plain] == [False, False, True, True]
    assert [world.there(t) for t in nightly] == [False, False, True]


def test_a_dry_run_removes_nothing_and_says_what_would_go(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=7 * DAY))
    old = [world.task(days_ago=8), world.task(days_ago=9, type="other")]
    world.task(days_ago=1)
    report = world.sweeper.prune(dry_run=True)
    data = report.to_json()
    assert data["tasks"] == 2 and data["bytes"] == 200 and data["dry_run"]
    assert data["types"]["echo"] == {"tasks": 1, "bytes": 100, "ids": [old[0]],
                                     "more_ids": False}
    assert world.there(old[0]) and world.there(old[1], "other")


def test_a_manual_prune_by_age_and_type_overrides_the_rules(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=400 * DAY))
    echo, other = world.task(days_ago=3), world.task(days_ago=3, type="other")
    failed = world.task(days_ago=3, state=TaskState.FAILED)
    young = world.task(days_ago=1)
    report = world.sweeper.prune(dry_run=False, older_than=2 * DAY, type_name="echo")
    assert report.tasks == 2
    assert world.gone(echo) and world.gone(failed)
    assert world.there(other, "other") and world.there(young)


def test_versions_go_once_unused_and_not_current_at_two_sweeps(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=7 * DAY))
    old_bundle, used_bundle = world.version("old"), world.version("used")
    current_bundle = world.version("current")
    world.current = {"current"}
    world.task(days_ago=10, version="old")  # goes: then nothing uses "old"
    kept = world.task(days_ago=1, version="used")
    first = world.sweeper.sweep()
    assert first is not None and first.versions == []  # nothing to compare with yet
    dry = world.sweeper.prune(dry_run=True)
    assert [v["version"] for v in dry.versions] == ["old"]
    assert dry.versions[0]["bytes"] == 50 and old_bundle.exists()
    second = world.sweeper.sweep()
    assert second is not None and [v["version"] for v in second.versions] == ["old"]
    assert not old_bundle.exists() and used_bundle.exists() and current_bundle.exists()
    assert sorted(r[0] for r in world.store.version_records()) == ["current", "used"]
    assert world.there(kept)


def test_a_version_current_at_the_previous_sweep_stays(world: World) -> None:
    bundle = world.version("was-current")
    world.current = {"was-current"}
    world.sweeper.sweep()
    world.current = set()
    world.sweeper.sweep()
    assert bundle.exists()
    world.sweeper.sweep()
    assert not bundle.exists()


def test_a_dry_run_counts_the_versions_its_tasks_would_free(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=7 * DAY))
    world.version("v")
    world.sweeper.sweep()
    world.task(days_ago=10, version="v")
    assert [v["version"] for v in world.sweeper.prune(dry_run=True).versions] == ["v"]
    world.task(days_ago=1, version="v")
    assert world.sweeper.prune(dry_run=True).versions == []


def test_a_folder_that_is_a_symlink_is_unlinked_never_followed(world: World,
                                                               tmp_path: Path) -> None:
    world.rules = RetentionRules(Retention(keep=DAY))
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    task = world.task(days_ago=2)
    folder = world.data.task("echo", task)
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.symlink_to(outside)
    inner = world.task(days_ago=2)
    os.symlink(outside, world.data.task("echo", inner) / "link")
    world.sweeper.sweep()
    assert world.gone(task) and world.gone(inner)
    assert (outside / "keep.txt").read_text() == "mine"


def test_folder_sizes_never_follow_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"2" * 5)
    (tmp_path / "loop").symlink_to(tmp_path)
    assert folder_size(tmp_path) == 15 + len(str(tmp_path))
    assert folder_size(tmp_path / "missing") == 0


def test_a_prune_while_another_server_sweeps_is_refused(world: World) -> None:
    world.store.try_sweep_lock = lambda: False  # type: ignore[method-assign]
    assert world.sweeper.sweep() is None
    with pytest.raises(Conflict, match="another server is sweeping"):
        world.sweeper.prune(dry_run=True)


def test_a_sweep_stops_when_the_server_stops(world: World) -> None:
    world.rules = RetentionRules(Retention(keep=DAY))
    ids = [world.task(days_ago=2) for _ in range(3)]
    world.sweeper.stopping.set()
    report = world.sweeper.sweep()
    assert report is not None and report.tasks == 0
    assert all(world.there(t) for t in ids)


def test_background_sweeps_do_not_overlap(world: World) -> None:
    entered, release = threading.Event(), threading.Event()
    rules = world.rules

    def slow_rules() -> RetentionRules:
        entered.set()
        release.wait(10)
        return rules

    world.sweeper.rules = slow_rules
    first = threading.Thread(target=world.sweeper.sweep)
    first.start()
    assert entered.wait(10)
    assert world.sweeper.sweep() is None  # the second finds the first under way
    release.set()
    first.join(10)
