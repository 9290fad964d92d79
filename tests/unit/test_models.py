"""The JSON forms of the records that cross the HTTP boundary read back as the same records."""

from __future__ import annotations

import json

from blanket.config.tasktype import FileSection, RequiredVariable, TaskType
from blanket.models import Task, TaskState, Worker


def test_a_task_survives_its_json_form_with_its_token():
    task = Task(7, "ocr", TaskState.CLAIMED, {"LANG": "eng"}, ("ocr", "unix"), 12.0, 3.0,
                token="abc", inputs=("scan.pdf",), attempts=({"attempt": 1, "state": "LOST"},))
    assert Task.from_json(json.loads(json.dumps(task.to_json(with_token=True)))) == task


def test_a_tasks_json_hides_its_token_unless_asked():
    task = Task(7, "ocr", TaskState.QUEUED, {}, (), 1.0, 1.0, token="secret")
    assert "token" not in task.to_json()


def test_a_task_type_survives_its_json_form():
    task_type = TaskType(name="ocr", command="ocrmypdf {{ INPUT }}", tags=("ocr",),
                         defaults={"LANG": "eng"},
                         required=(RequiredVariable("INPUT", "the PDF", "string"),),
                         files=(FileSection("assets/", "lib", ("*.txt",), ("*.bak",), False),))
    assert TaskType.from_json(json.loads(json.dumps(task_type.to_json()))) == task_type


def test_only_idle_or_busy_workers_take_tasks():
    worker = Worker("w", (), "h", 1, "idle", 1.0, 1.0)
    assert [Worker(**{**worker.__dict__, "state": s}).takes_tasks
            for s in ("idle", "busy", "paused", "stopping")] == [True, True, False, False]
