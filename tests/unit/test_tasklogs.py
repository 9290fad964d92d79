"""The server's copy of a remote worker's live log: chunks from the offset the worker says,
resent ones harmless, gaps and what is past the copy's limit refused."""

from __future__ import annotations

import pytest

from blanket.errors import BlanketError
from blanket.server.tasklogs import TaskLogs


def test_a_live_log_grows_by_its_chunks_up_to_its_limit(tmp_path):
    logs = TaskLogs(lambda type_name, task_id: tmp_path / type_name / str(task_id))
    path = tmp_path / "t" / "1" / "stdout.log"
    assert logs.append(path, 0, b"hello ", most=10) == 6
    assert logs.append(path, 0, b"hello wo", most=10) == 8  # resent: only what is new
    with pytest.raises(BlanketError) as gap:
        logs.append(path, 9, b"x", most=10)
    assert gap.value.status == 409
    with pytest.raises(BlanketError) as full:
        logs.append(path, 8, b"rld", most=10)
    assert full.value.status == 413 and "at most 10 bytes" in full.value.message
    assert path.read_bytes() == b"hello wo"  # nothing of the refused chunk
    assert logs.append(path, 8, b"rl", most=10) == 10


def test_the_limit_counts_a_tasks_live_logs_together(tmp_path):
    logs = TaskLogs(lambda type_name, task_id: tmp_path / type_name / str(task_id))
    folder = tmp_path / "t" / "1"
    assert logs.append(folder / "stdout.log", 0, b"x" * 6, most=10) == 6
    with pytest.raises(BlanketError) as full:
        logs.append(folder / "stderr.log", 0, b"y" * 5, most=10)
    assert full.value.status == 413 and "logs together" in full.value.message
    assert logs.append(folder / "stderr.log", 0, b"y" * 4, most=10) == 4
    assert logs.append(folder / "stdout.log", 0, b"x" * 6, most=10) == 6  # resent: no growth
