"""The data dir's layout as blanket/taskdir.py names it, and as docs/architecture.md tells it."""

import re
from pathlib import Path

import pytest

from blanket import taskdir
from blanket.taskdir import DataDir

DOC = Path(__file__).parents[2] / "docs" / "architecture.md"
LAYOUT_PROPERTIES = sorted(name for name, value in vars(DataDir).items()
                           if isinstance(value, property))


def documented_names() -> set[str]:
    """The first word of every line of the data dir's tree in "Files on disk"."""
    section = DOC.read_text().split("## Files on disk", 1)[1].split("```")[1]
    tree = section.split("var/ (data_dir", 1)[1].splitlines()[1:]
    names: set[str] = set()
    for line in tree:
        first = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        names.update(part.strip().rstrip("/").split("/")[0] for part in first.split(","))
    return names


@pytest.mark.parametrize("name", LAYOUT_PROPERTIES)
def test_every_place_in_the_data_dir_is_documented(name, tmp_path):
    path = getattr(DataDir(tmp_path), name)
    assert path.parent == tmp_path
    assert path.name in documented_names(), f"docs/architecture.md does not name {path.name}"


def test_every_name_a_task_directory_reserves_is_documented():
    assert set(taskdir.RESERVED_NAMES) <= documented_names() | {"output.log"}


def test_a_task_directory_is_under_its_type(tmp_path):
    assert DataDir(tmp_path).task("ocr", 42) == tmp_path / "tasks" / "ocr" / "42"


def test_the_log_of_each_stream():
    assert [taskdir.log_file(s) for s in ("stdout", "stderr", "output", "task")] == [
        "stdout.log", "stderr.log", "output.log", None]
    assert taskdir.error_log(combine_output=True) == "output.log"
    assert taskdir.error_log(combine_output=False) == "stderr.log"


def test_private_names_are_reserved():
    assert taskdir.PRIVATE_NAMES <= taskdir.RESERVED_NAMES
