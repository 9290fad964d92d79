"""The catalog: loading, last good versions, deletes, renames, schedules, validation, watching."""

from __future__ import annotations

import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.server.catalog import Catalog, LoadedType, validate_config_dir


@dataclass(frozen=True)
class FakeSchedule:
    type: str | None
    text: str = field(default="", compare=False)  # as the real one: what it was parsed from

    def to_json(self) -> dict:
        return {"type": self.type}


def parse_fake_schedule(path: Path, name: str) -> FakeSchedule:
    """A stand-in for the real schedule parser: needs `cron`, may name a `type`."""
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid([ConfigProblem(str(path), str(exc))]) from exc
    if "cron" not in data:
        raise ConfigInvalid([ConfigProblem(str(path), "cron is missing")])
    return FakeSchedule(data.get("type"), text)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, version: str, type_name: str, when: float) -> bool:
        self.calls.append((version, type_name))
        return True


@pytest.fixture
def config(tmp_path) -> Path:
    (tmp_path / "conf.d" / "types").mkdir(parents=True)
    return tmp_path / "conf.d"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def catalog(config, tmp_path, recorder) -> Catalog:
    return Catalog(config, tmp_path / "versions", recorder, parse_fake_schedule)


def write(config: Path, rel: str, text: str) -> Path:
    path = config / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def age(config: Path) -> None:
    """Backdate every file, as if it had been saved well before the scan."""
    past = 1_600_000_000 * 10**9
    for folder, _dirs, names in os.walk(config):
        for name in [*names, "."]:
            os.utime(os.path.join(folder, name), ns=(past, past))


def test_scan_loads_types_records_versions_and_writes_bundles(config, catalog, recorder, tmp_path):
    write(config, "types/ocr.toml", 'command = "ocr"\n')
    assert catalog.scan() is True
    loaded = catalog.get("ocr")
    assert loaded.task_type.command == "ocr"
    assert loaded.problems == ()
    assert recorder.calls == [(loaded.version, "ocr")]
    assert (tmp_path / "versions" / f"{loaded.version}.tar.gz").is_file()


def test_types_are_listed_by_name(config, catalog):
    for name in ("b", "a", "c"):
        write(config, f"types/{name}.toml", 'command = "true"\n')
    catalog.scan()
    assert [t.name for t in catalog.types()] == ["a", "b", "c"]


def test_scan_with_nothing_changed_reports_no_change(config, catalog, recorder):
    write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    assert catalog.scan() is False
    assert len(recorder.calls) == 1


def test_rescan_skips_unchanged_types_without_reading_them(config, catalog, monkeypatch):
    write(config, "types/ocr.toml", 'command = "ocr"\n[[files]]\nsrc = "assets"\n')
    write(config, "types/assets/a.txt", "A")
    age(config)
    catalog.scan()
    monkeypatch.setattr("blanket.server.catalog.parse_type_file",
                        lambda *a: pytest.fail("re-parsed"))
    assert catalog.scan() is False


def test_broken_edit_keeps_the_last_good_version_and_reports_the_problem(config, catalog):
    path = write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    good = catalog.get("ocr")
    path.write_text('command = "ocr"\ntimeout = "soon"\n')
    assert catalog.scan() is True
    broken = catalog.get("ocr")
    assert (broken.task_type, broken.version, broken.loaded_at) == (
        good.task_type, good.version, good.loaded_at)
    assert [(p.line, p.file) for p in broken.problems] == [(2, str(path))]
    assert catalog.problems() == list(broken.problems)


def test_fixing_the_file_clears_the_problem_and_loads_the_new_version(config, catalog):
    path = write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    first = catalog.get("ocr").version
    path.write_text("command = \n")
    catalog.scan()
    path.write_text('command = "ocr --fast"\n')
    catalog.scan()
    fixed = catalog.get("ocr")
    assert fixed.problems == ()
    assert fixed.task_type.command == "ocr --fast"
    assert fixed.version != first
    assert catalog.problems() == []


def test_type_invalid_from_the_start_has_no_definition(config, catalog, recorder):
    write(config, "types/ocr.toml", 'description = "no command"\n')
    catalog.scan()
    loaded = catalog.get("ocr")
    assert (loaded.task_type, loaded.version) == (None, None)
    assert "command is missing" in loaded.problems[0].message
    assert recorder.calls == []


def test_deleting_the_file_removes_the_type(config, catalog):
    path = write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    path.unlink()
    assert catalog.scan() is True
    assert catalog.get("ocr") is None


def test_renaming_the_file_removes_the_old_name_and_adds_the_new(config, catalog, recorder):
    path = write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    path.rename(config / "types" / "scan.toml")
    catalog.scan()
    assert catalog.get("ocr") is None
    assert catalog.get("scan").task_type.name == "scan"
    assert recorder.calls[-1] == (catalog.get("scan").version, "scan")


def test_editing_a_selected_asset_makes_a_new_version(config, catalog):
    write(config, "types/ocr.toml", 'command = "ocr"\n[[files]]\nsrc = "assets"\n')
    asset = write(config, "types/assets/lang.txt", "eng")
    catalog.scan()
    before = catalog.get("ocr").version
    asset.write_text("fra")
    assert catalog.scan() is True
    assert catalog.get("ocr").version != before


def test_adding_an_asset_to_an_aged_folder_makes_a_new_version(config, catalog):
    write(config, "types/ocr.toml", 'command = "ocr"\n[[files]]\nsrc = "assets"\n')
    write(config, "types/assets/lang.txt", "eng")
    age(config)
    catalog.scan()
    before = catalog.get("ocr").version
    write(config, "types/assets/more.txt", "deu")
    catalog.scan()
    assert catalog.get("ocr").version != before


def test_editing_an_ignored_asset_changes_nothing(config, catalog):
    write(config, ".blanketignore", "*.log\n")
    write(config, "types/ocr.toml", 'command = "ocr"\n[[files]]\nsrc = "assets"\n')
    log = write(config, "types/assets/run.log", "one")
    catalog.scan()
    log.write_text("two")
    assert catalog.scan() is False


def test_listeners_hear_only_scans_that_changed_something(config, catalog):
    calls = []
    catalog.add_listener(lambda: calls.append(1))
    write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    catalog.scan()
    assert calls == [1]


def test_loaded_type_json_has_definition_version_time_and_problems(config, catalog):
    write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    data = catalog.get("ocr").to_json()
    assert data["definition"]["command"] == "ocr"
    assert data["version"] == catalog.get("ocr").version
    assert data["loaded_at"].endswith("Z") and "T" in data["loaded_at"]
    assert data["problems"] == []


def test_loaded_type_json_of_a_never_valid_type():
    loaded = LoadedType("x", Path("x.toml"), None, None, None, (ConfigProblem("x.toml", "bad"),))
    assert loaded.to_json()["definition"] is None
    assert loaded.to_json()["problems"] == [{"file": "x.toml", "line": None, "message": "bad"}]


def test_schedules_are_loaded_with_the_parser(config, catalog):
    write(config, "types/report.toml", 'command = "report"\n')
    write(config, "schedules/nightly.toml", 'type = "report"\ncron = "0 2 * * *"\n')
    catalog.scan()
    [schedule] = catalog.schedules()
    assert (schedule.name, schedule.schedule, schedule.problems) == (
        "nightly", FakeSchedule("report"), ())
    assert schedule.to_json()["definition"] == {"type": "report"}


def test_schedule_naming_a_missing_type_carries_a_problem_at_the_type_line(config, catalog):
    path = write(config, "schedules/nightly.toml", 'cron = "0 2 * * *"\ntype = "report"\n')
    catalog.scan()
    [problem] = catalog.schedules()[0].problems
    assert (problem.file, problem.line) == (str(path), 2)
    assert "no task type named 'report'" in problem.message
    write(config, "types/report.toml", 'command = "report"\n')
    assert catalog.scan() is True
    assert catalog.schedules()[0].problems == ()


def test_broken_schedule_keeps_the_last_good_one(config, catalog):
    path = write(config, "schedules/nightly.toml", 'cron = "0 2 * * *"\n')
    catalog.scan()
    path.write_text("type = 'x'\n")
    catalog.scan()
    [schedule] = catalog.schedules()
    assert schedule.schedule == FakeSchedule(None)
    assert [p.message for p in schedule.problems] == ["cron is missing"]


def test_validate_reports_a_missing_config_dir(tmp_path):
    [problem] = validate_config_dir(tmp_path / "nope")
    assert "config directory not found" in problem.message


def test_validate_reports_type_and_schedule_problems(config):
    write(config, "types/ok.toml", 'command = "true"\n')
    write(config, "types/bad.toml", "retries = -1\n")
    write(config, "schedules/s.toml", 'cron = "* * * * *"\ntype = "gone"\n')
    problems = validate_config_dir(config, parse_fake_schedule)
    assert [(Path(p.file).name, p.line) for p in problems] == [
        ("s.toml", 2), ("bad.toml", None), ("bad.toml", 1)]


def test_validate_finds_nothing_in_a_good_dir(config):
    write(config, "types/ok.toml", 'command = "true"\n')
    assert validate_config_dir(config) == []


def test_validate_writes_nothing(config):
    write(config, "types/ok.toml", 'command = "true"\n')
    before = sorted(p for p in config.parent.rglob("*"))
    validate_config_dir(config)
    assert sorted(p for p in config.parent.rglob("*")) == before


def test_watching_makes_a_saved_edit_visible(config, catalog):
    path = write(config, "types/ocr.toml", 'command = "ocr"\n')
    catalog.scan()
    changed = threading.Event()
    catalog.add_listener(changed.set)
    catalog.start_watching()
    try:
        path.write_text('command = "ocr --fast"\n')
        assert changed.wait(5)
    finally:
        catalog.stop_watching()
    assert catalog.get("ocr").task_type.command == "ocr --fast"


def test_watching_notices_a_new_type_file(config, catalog):
    catalog.scan()
    changed = threading.Event()
    catalog.add_listener(changed.set)
    catalog.start_watching()
    try:
        write(config, "types/new.toml", 'command = "new"\n')
        assert changed.wait(5)
    finally:
        catalog.stop_watching()
    assert catalog.get("new") is not None
