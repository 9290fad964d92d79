"""An attempt as the worker holds it: once its command has ended, its result stands."""

from __future__ import annotations

import time

from blanket.config.tasktype import TaskType
from blanket.models import Task, TaskState
from blanket.worker.attempt import Attempt
from tests.conftest import wait_until


def attempt() -> Attempt:
    task = Task(id=1, type="echo", state=TaskState.RUNNING, environment={}, tags=(), score=1.0,
                added=time.time(), token="t", attempt=1)
    return Attempt(task, TaskType(name="echo", command="echo hi"))


def test_a_running_attempt_can_be_handed_back():
    running = attempt()
    running.stop(handback=True)
    assert running.handback


def test_an_attempt_whose_command_ended_is_never_handed_back():
    # Its outputs may still be on their way to the server when the worker is told to stop
    # or to hand back: the task must end with its result, not run again.
    ended = attempt()
    ended.ran = True
    ended.stop(handback=True)
    assert not ended.handback


def test_a_superseded_attempt_is_not_handed_back():
    superseded = attempt()
    superseded.supersede("the task moved on")
    superseded.stop(handback=True)
    assert not superseded.handback


def test_outputs_that_cannot_be_packed_are_logged_and_the_task_still_ends(tmp_path, monkeypatch):
    # Say the task left a file the worker cannot read: its end must still be reported.
    import threading

    from blanket.client import Client
    from blanket.worker import shipping
    from blanket.worker.client import WorkerClient

    def unreadable(*_args: object) -> int:
        raise PermissionError(13, "Permission denied", "made/secret.txt")

    monkeypatch.setattr(shipping, "pack", unreadable)
    work_dir = tmp_path / "tasks" / "echo" / "1"
    work_dir.mkdir(parents=True)
    server = WorkerClient(Client("http://127.0.0.1:9"))
    # no exception: the worker carries on
    shipping.send_outputs(server, attempt(), work_dir, tmp_path / "outputs", threading.Event())
    assert list((tmp_path / "outputs").iterdir()) == []  # and leaves no archive behind


def test_a_superseded_attempt_is_killed_without_its_grace_time(tmp_path):
    # Another attempt of the task may already run: this one must not run beside it while a
    # command that ignores SIGTERM sits out its grace.
    import threading

    from blanket.config.tasktype import TaskType
    from blanket.worker.runner import TaskRun

    superseded = attempt()
    task_type = TaskType(name="echo", command="trap '' TERM; echo up > up; sleep 30")
    superseded.run = TaskRun(superseded.task, task_type, tmp_path / "bundle", tmp_path / "w",
                             grace=30.0)
    results = []
    runner = threading.Thread(target=lambda: results.append(superseded.run.run()))
    runner.start()
    wait_until(lambda: (tmp_path / "w" / "up").exists())
    began = time.monotonic()
    superseded.supersede("heartbeat refused: stale attempt")
    runner.join(10)
    assert time.monotonic() - began < 5
    assert results[0].state is TaskState.STOPPED
