"""Intake.submit_many: the scheduler's due runs in one transaction."""

from __future__ import annotations

from pathlib import Path

from blanket.config.tasktype import RequiredVariable, TaskType
from blanket.errors import InvalidInput
from blanket.server.intake import Intake, TaskRequest
from blanket.store.sqlite import SQLiteStore

REPORT = TaskType(name="report", command="echo {{ TARGET }}",
                  required=(RequiredVariable("TARGET"),))


class Types:
    def current_type(self, name: str) -> TaskType | None:
        return REPORT if name == "report" else None

    def type_names(self) -> list[str]:
        return ["report"]

    def base_names(self) -> list[str]:
        return []


def intake(tmp_path: Path) -> Intake:
    return Intake(SQLiteStore(tmp_path / "b.db"), Types(), tmp_path)


def test_each_request_gets_its_task_or_its_error_in_place(tmp_path: Path):
    answers = intake(tmp_path).submit_many([
        TaskRequest("report", {"TARGET": "a"}),
        TaskRequest("nope", {}),
        TaskRequest("report", {}),
        TaskRequest("report", {"TARGET": "b"}),
    ])
    assert answers[0].environment == {"TARGET": "a"}
    assert isinstance(answers[1], InvalidInput) and "unknown task type" in answers[1].message
    assert isinstance(answers[2], InvalidInput) and "TARGET" in answers[2].message
    assert answers[3].environment == {"TARGET": "b"}


def test_a_used_dedupe_key_gives_the_first_task(tmp_path: Path):
    front = intake(tmp_path)
    first = front.submit(TaskRequest("report", {"TARGET": "a"}, dedupe_key="k"))
    [again] = front.submit_many([TaskRequest("report", {"TARGET": "a"}, dedupe_key="k")])
    assert again.id == first.id
