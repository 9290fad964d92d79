"""The inbox without a server: reading task files and folders, knowing when an entry is
complete, naming in done/ and failed/, and taking entries through a real intake and store."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from blanket.config.checker import parse_toml
from blanket.config.tasktype import RequiredVariable, TaskType
from blanket.errors import InvalidInput
from blanket.models import TaskFilter
from blanket.server.inbox import (
    Inbox,
    Settling,
    done_name,
    folder_files,
    folder_key,
    free_name,
    is_candidate,
    parse_task_text,
    read_task_file,
)
from blanket.server.intake import Intake
from blanket.store.sqlite import SQLiteStore

NOW = 1_800_000_000.0
REPORT = TaskType(name="report", command="make-report {{ TARGET }}",
                  required=(RequiredVariable("TARGET", "what to report on"),))


class Types:
    def __init__(self, *types: TaskType):
        self.types = {t.name: t for t in types}

    def current_type(self, name: str) -> TaskType | None:
        return self.types.get(name)

    def type_names(self) -> list[str]:
        return sorted(self.types)

    def base_names(self) -> list[str]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- task files


def test_toml_task_file_gives_every_field() -> None:
    raw = b'type = "report"\ntags = ["gpu"]\npriority = 3\n[environment]\nTARGET = "sales"\n'
    request = parse_task_text("r.toml", raw, NOW)
    assert (request.type, request.environment, request.tags, request.priority) == (
        "report", {"TARGET": "sales"}, ("gpu",), 3)


def test_json_task_file_gives_every_field() -> None:
    raw = json.dumps({"type": "report", "environment": {"TARGET": "x"}, "tags": "a,b"}).encode()
    request = parse_task_text("r.json", raw, NOW)
    assert (request.type, request.environment, request.tags) == ("report", {"TARGET": "x"},
                                                                 ("a", "b"))


def test_relative_not_before_counts_from_now() -> None:
    request = parse_task_text("r.toml", b'type = "report"\nnot_before = "+2h"\n', NOW)
    assert request.not_before == NOW + 7200


def test_toml_native_datetime_is_a_not_before() -> None:
    raw = b'type = "report"\nnot_before = 2027-01-15T08:00:00+01:00\n'
    expected = datetime(2027, 1, 15, 7, 0, tzinfo=UTC).timestamp()
    assert parse_task_text("r.toml", raw, NOW).not_before == expected


def test_toml_datetime_without_offset_is_refused_like_the_api() -> None:
    with pytest.raises(InvalidInput, match="has no UTC offset"):
        parse_task_text("r.toml", b'type = "report"\nnot_before = 2027-01-15T08:00:00\n', NOW)


def test_bad_toml_names_the_file_and_line() -> None:
    with pytest.raises(InvalidInput, match=r"^r\.toml:2: not valid TOML"):
        parse_task_text("r.toml", b'type = "report"\nenvironment = {\n', NOW)


def test_a_number_too_long_for_python_is_refused_as_bad_toml() -> None:
    with pytest.raises(InvalidInput, match=r"^r\.toml: not valid TOML: Exceeds the limit"):
        parse_task_text("r.toml", b'type = "report"\nn = ' + b"9" * 5000, NOW)


def test_bad_json_says_so() -> None:
    with pytest.raises(InvalidInput, match=r"^r\.json is not valid JSON: .*line 1"):
        parse_task_text("r.json", b'{"type": ', NOW)


@pytest.mark.parametrize(("name", "raw", "reason"), [
    ("r.json", b'{"type": "report", "environment": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     r"^r\.json nests too deeply"),
    ("r.toml", b'type = "report"\nx = ' + b"[" * 5000 + b"]" * 5000,
     r"^r\.toml: tables and lists nest more than 100 levels deep"),
    ("r.toml", b'type = "report"\nx = ' + b"{a=" * 5000 + b"1" + b"}" * 5000,
     r"^r\.toml: tables and lists nest more than 100 levels deep"),
    ("r.toml", b'type = "report"\n[' + b"a." * 500 + b"b]\n",
     r"^r\.toml: tables and lists nest more than 100 levels deep"),
    ("r.toml", b'type = "report"\n[' + b"a." * 100_000 + b"b]\n",
     r"^r\.toml:2: a key of more than 1000 dotted parts nests too deeply"),
])
def test_a_file_nested_too_deeply_is_refused_saying_so(name, raw, reason) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_task_text(name, raw, NOW)


def test_dots_in_strings_numbers_and_comments_do_not_count_as_key_parts() -> None:
    raw = (b'type = "report"\n# ' + b"." * 3000 + b'\n[environment]\nTARGET = "'
           + b"." * 3000 + b'" # ' + b"." * 3000 + b"\n")
    assert parse_task_text("r.toml", raw, NOW).environment["TARGET"] == "." * 3000
    assert parse_toml("x = [" + "1.5, " * 1500 + "]\n", "t.toml")["x"][0] == 1.5


def test_json_in_a_task_file_is_read_as_the_api_reads_it() -> None:
    with pytest.raises(InvalidInput, match=r"r\.json is not valid JSON: NaN is not a JSON"):
        parse_task_text("r.json", b'{"type": "report", "priority": NaN}', NOW)
    with pytest.raises(InvalidInput, match="lone surrogate"):
        parse_task_text("r.json", b'{"type": "report", "environment": {"A": "\\ud800"}}', NOW)


def test_a_task_file_is_checked_as_the_api_checks_a_submission() -> None:
    with pytest.raises(InvalidInput, match=r"^environment\.N: must be string or number or bool"):
        parse_task_text("r.toml", b'type = "report"\n[environment]\nN = [1, 2]\n', NOW)


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_task_text("r.toml", b'type = "\xff"', NOW)


def test_unknown_field_gets_the_api_message() -> None:
    with pytest.raises(InvalidInput, match=r"^the task: unknown field\(s\) command; it takes"):
        parse_task_text("r.toml", b'type = "report"\ncommand = "rm"\n', NOW)


def test_missing_type_gets_the_api_message() -> None:
    with pytest.raises(InvalidInput, match=r"^the task: 'type' is missing$"):
        parse_task_text("r.toml", b"", NOW)


def test_dedupe_key_depends_on_name_and_content(tmp_path: Path) -> None:
    def key(name: str, text: str) -> str | None:
        path = tmp_path / name
        path.write_text(text)
        return read_task_file(path, NOW).dedupe_key

    first = key("a.toml", 'type = "report"')
    assert first is not None and first.startswith("inbox:")
    assert key("a.toml", 'type = "report"') == first
    assert key("b.toml", 'type = "report"') != first
    assert key("a.toml", 'type = "report"\npriority = 1') != first


# ---------------------------------------------------------------- folders


def make_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_folder_gives_its_task_file_and_visible_data_files(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "batch", {"task.toml": "", "a.csv": "1", "b.pdf": "2",
                                              ".DS_Store": "", "notes.txt~": ""})
    task_file, data = folder_files(folder)
    assert task_file.name == "task.toml"
    assert [p.name for p in data] == ["a.csv", "b.pdf"]


def test_folder_without_task_file_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "batch", {"a.csv": "1"})
    with pytest.raises(InvalidInput, match=r"no task\.toml or task\.json"):
        folder_files(folder)


def test_a_folder_of_more_files_than_a_task_takes_is_refused_before_they_are_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a submission over HTTP: a task takes at most MAX_SUBMITTED_FILES files (the inbox opened
    every one of them at once)."""
    monkeypatch.setattr("blanket.server.intake.MAX_SUBMITTED_FILES", 3)
    folder = make_folder(tmp_path / "batch", {"task.toml": "", **{f"{n}.csv": "" for n in
                                                                   range(4)}})
    with pytest.raises(InvalidInput, match="4 files, and a task takes at most 3 files"):
        folder_files(folder)
    (folder / "3.csv").unlink()
    assert len(folder_files(folder)[1]) == 3


def test_folder_with_two_task_files_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "batch", {"task.toml": "", "task.json": "{}"})
    with pytest.raises(InvalidInput, match=r"both task\.toml and task\.json"):
        folder_files(folder)


def test_folder_with_a_subfolder_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "batch", {"task.toml": ""})
    (folder / "scans").mkdir()
    with pytest.raises(InvalidInput, match="subfolder scans; data files land at the top"):
        folder_files(folder)


def test_folder_key_changes_with_any_data_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "batch", {"task.toml": "x", "a.csv": "1"})
    before = folder_key(folder, folder.iterdir())
    assert folder_key(folder, folder.iterdir()) == before
    (folder / "a.csv").write_text("2")
    assert folder_key(folder, folder.iterdir()) != before


# ---------------------------------------------------------------- settling


def test_entry_is_ready_only_after_the_settle_time() -> None:
    clock = Clock()
    settling = Settling(0.5, clock)
    assert settling.observe({"a.toml": (10, 1)}) == ([], 0.5)
    clock.now += 0.4
    ready, wait = settling.observe({"a.toml": (10, 1)})
    assert ready == [] and wait == pytest.approx(0.1)
    clock.now += 0.1
    assert settling.observe({"a.toml": (10, 1)}) == (["a.toml"], None)


def test_a_change_restarts_the_settle_time() -> None:
    clock = Clock()
    settling = Settling(0.5, clock)
    settling.observe({"a.toml": (10, 1)})
    clock.now += 0.4
    settling.observe({"a.toml": (20, 2)})
    clock.now += 0.4
    assert settling.observe({"a.toml": (20, 2)})[0] == []
    clock.now += 0.1
    assert settling.observe({"a.toml": (20, 2)})[0] == ["a.toml"]


def test_a_settled_entry_is_handed_out_once() -> None:
    clock = Clock()
    settling = Settling(0.5, clock)
    settling.observe({"a.toml": (10, 1)})
    clock.now += 1
    assert settling.observe({"a.toml": (10, 1)})[0] == ["a.toml"]
    clock.now += 1
    assert settling.observe({"a.toml": (10, 1)}) == ([], None)


def test_a_forgotten_entry_is_handed_out_again_after_settling_anew() -> None:
    clock = Clock()
    settling = Settling(0.5, clock)
    settling.observe({"a.toml": (10, 1)})
    clock.now += 1
    settling.observe({"a.toml": (10, 1)})
    settling.forget("a.toml")
    assert settling.observe({"a.toml": (10, 1)})[0] == []
    clock.now += 0.5
    assert settling.observe({"a.toml": (10, 1)})[0] == ["a.toml"]


# ---------------------------------------------------------------- names


def test_done_name_leads_with_the_task_id() -> None:
    assert done_name(42, "report.toml") == "42-report.toml"


def test_free_name_numbers_taken_names_and_counts_error_notes(tmp_path: Path) -> None:
    assert free_name(tmp_path, "report.toml") == "report.toml"
    (tmp_path / "report.toml").write_text("")
    assert free_name(tmp_path, "report.toml") == "report-2.toml"
    (tmp_path / "report-2.toml.error").write_text("")
    assert free_name(tmp_path, "report.toml") == "report-3.toml"
    (tmp_path / "batch").mkdir()
    assert free_name(tmp_path, "batch") == "batch-2"


@pytest.mark.parametrize("name", [".hidden.toml", "notes.txt", "report.toml.partial",
                                  "report.toml~", ".report.toml.swp", "report.tmp", "done",
                                  "failed"])
def test_non_candidates_are_ignored(tmp_path: Path, name: str) -> None:
    (tmp_path / "done").mkdir()
    (tmp_path / "failed").mkdir()
    path = tmp_path / name
    if not path.exists():
        path.write_text("")
    assert not is_candidate(path)


@pytest.mark.parametrize("name", ["report.toml", "report.json"])
def test_task_files_are_candidates(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("")
    assert is_candidate(tmp_path / name)


# ---------------------------------------------------------------- taking entries


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "var" / "blanket.db")
    yield store
    store.close()


@pytest.fixture
def inbox(tmp_path: Path, store: SQLiteStore) -> Inbox:
    intake = Intake(store, Types(REPORT), tmp_path / "var")
    inbox = Inbox(tmp_path / "inbox", intake, store, clock=Clock())
    for sub in ("done", "failed"):
        (inbox.dir / sub).mkdir(parents=True)
    return inbox


def drop(inbox: Inbox, name: str, text: str) -> Path:
    path = inbox.dir / name
    path.write_text(text)
    return path


GOOD = 'type = "report"\n[environment]\nTARGET = "sales"\n'


def all_tasks(store: SQLiteStore) -> list:
    return store.list_tasks(TaskFilter(limit=1000))


def test_a_good_file_becomes_a_task_and_moves_to_done(inbox: Inbox, store) -> None:
    inbox.take(drop(inbox, "r.toml", GOOD))
    [task] = all_tasks(store)
    assert task.environment["TARGET"] == "sales"
    assert [p.name for p in (inbox.dir / "done").iterdir()] == [f"{task.id}-r.toml"]
    assert not (inbox.dir / "r.toml").exists()


def test_a_bad_file_moves_to_failed_beside_its_reason(inbox: Inbox, store) -> None:
    inbox.take(drop(inbox, "r.toml", 'type = "nope"\n'))
    assert all_tasks(store) == []
    failed = inbox.dir / "failed"
    assert (failed / "r.toml").read_text() == 'type = "nope"\n'
    assert (failed / "r.toml.error").read_text() == (
        "unknown task type 'nope'; known types: report\n")


def test_a_task_file_over_a_mebibyte_is_refused_without_reading_it(inbox: Inbox,
                                                                  store) -> None:
    inbox.take(drop(inbox, "r.toml", GOOD + "# " + "x" * 1024 * 1024 + "\n"))
    assert all_tasks(store) == []
    note = (inbox.dir / "failed" / "r.toml.error").read_text()
    assert note.startswith("r.toml is 1,048,6") and "at most 1,048,576" in note


@pytest.mark.parametrize("kind", ["dangling link", "link", "pipe"])
def test_a_task_file_that_is_no_regular_file_moves_to_failed(inbox: Inbox, store, kind,
                                                             tmp_path: Path) -> None:
    import os
    path = inbox.dir / "r.toml"
    if kind == "pipe":
        os.mkfifo(path)
    else:
        target = tmp_path / "elsewhere.toml"
        if kind == "link":
            target.write_text(GOOD)
        path.symlink_to(target)
    assert is_candidate(path)
    inbox.scan()
    inbox.settling.clock.now += 1  # type: ignore[attr-defined]
    inbox.scan()
    assert all_tasks(store) == []
    assert sorted(p.name for p in (inbox.dir / "failed").iterdir()) == ["r.toml", "r.toml.error"]
    reason = "is not a regular file" if kind == "pipe" else "is a symbolic link"
    assert reason in (inbox.dir / "failed" / "r.toml.error").read_text()


def test_an_entry_failing_for_no_fault_of_its_own_is_tried_less_often_and_kept(
        inbox: Inbox, store, monkeypatch) -> None:
    tries = []

    def broken(request, now):
        tries.append(inbox.settling.clock())  # type: ignore[attr-defined]
        raise RuntimeError("database is locked")

    monkeypatch.setattr(inbox.intake, "submit", broken)
    drop(inbox, "r.toml", GOOD)
    clock = inbox.settling.clock
    for _ in range(400):  # 200 s of scans, every half a second
        inbox.scan()
        clock.now += 0.5  # type: ignore[attr-defined]
    # After settling, again after 1, 2, 4, 8, 16, 32, 60, 60 s: not every half second.
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(tries)]
    assert gaps[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0], gaps
    assert (inbox.dir / "r.toml").exists()  # kept, not failed: it was not the entry's fault
    monkeypatch.undo()
    (inbox.dir / "r.toml").write_text(GOOD + "# fixed\n")  # a change is taken after settling
    inbox.scan()
    clock.now += 1  # type: ignore[attr-defined]
    inbox.scan()
    assert len(all_tasks(store)) == 1 and not (inbox.dir / "r.toml").exists()


def test_a_missing_variable_is_explained_in_the_note(inbox: Inbox) -> None:
    inbox.take(drop(inbox, "r.json", '{"type": "report"}'))
    note = (inbox.dir / "failed" / "r.json.error").read_text()
    assert "needs TARGET (what to report on)" in note


def test_the_same_file_dropped_again_maps_to_the_first_task(inbox: Inbox, store) -> None:
    inbox.take(drop(inbox, "r.toml", GOOD))
    inbox.take(drop(inbox, "r.toml", GOOD))
    [task] = all_tasks(store)
    assert sorted(p.name for p in (inbox.dir / "done").iterdir()) == [
        f"{task.id}-r-2.toml", f"{task.id}-r.toml"]


def test_a_file_stored_before_a_crash_moves_to_done_even_if_its_type_went(
        tmp_path: Path, inbox: Inbox, store) -> None:
    path = drop(inbox, "r.toml", GOOD)
    stored = inbox.intake.submit(read_task_file(path, NOW))
    inbox.intake.types = Types()
    inbox.take(path)
    assert [p.name for p in (inbox.dir / "done").iterdir()] == [f"{stored.id}-r.toml"]
    assert len(all_tasks(store)) == 1


def test_a_folder_puts_its_data_files_in_the_task_directory(inbox: Inbox, store) -> None:
    folder = make_folder(inbox.dir / "batch", {"task.toml": GOOD, "a.csv": "1,2"})
    inbox.take(folder)
    [task] = all_tasks(store)
    assert task.inputs == ("a.csv",)
    assert (inbox.intake.task_dir("report", task.id) / "a.csv").read_text() == "1,2"
    assert (inbox.dir / "done" / f"{task.id}-batch" / "a.csv").read_text() == "1,2"


def test_a_bad_folder_moves_whole_to_failed(inbox: Inbox, store) -> None:
    make_folder(inbox.dir / "batch", {"a.csv": "1"})
    inbox.take(inbox.dir / "batch")
    assert (inbox.dir / "failed" / "batch" / "a.csv").exists()
    assert "no task.toml" in (inbox.dir / "failed" / "batch.error").read_text()


def test_scan_takes_an_entry_only_once_it_has_settled(inbox: Inbox, store) -> None:
    drop(inbox, "r.toml", GOOD)
    assert inbox.scan() == 0.5
    assert all_tasks(store) == []
    inbox.settling.clock.now += 0.5
    assert inbox.scan() is None
    assert len(all_tasks(store)) == 1


def test_scan_takes_many_entries_in_one_pass(inbox: Inbox, store) -> None:
    for number in range(50):
        drop(inbox, f"r{number}.toml", GOOD + f"# {number}\n")
    inbox.scan()
    inbox.settling.clock.now += 1
    inbox.scan()
    assert len(all_tasks(store)) == 50
    assert len(list((inbox.dir / "done").iterdir())) == 50
