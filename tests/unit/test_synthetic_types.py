"""Types made from a schedule's or a workflow step's own command are bundled from the file as
it was parsed, so a file removed or edited after the scan neither breaks a run nor puts other
bytes in the bundle than its version was hashed from."""

from __future__ import annotations

import tarfile
from pathlib import Path

from blanket.config.bundles import bundle_path
from blanket.config.schedule import parse_schedule_file
from blanket.server.catalog import Catalog
from blanket.server.currenttypes import CommandTypes, StepTypes

SCHEDULE = 'command = "echo from the schedule"\nevery = "1h"\n'
WORKFLOW = '[steps.a]\ncommand = "echo from the workflow"\n'


def _catalog(tmp_path: Path) -> Catalog:
    conf = tmp_path / "conf.d"
    (conf / "schedules").mkdir(parents=True)
    (conf / "workflows").mkdir()
    (conf / "schedules" / "nightly.toml").write_text(SCHEDULE)
    (conf / "workflows" / "w.toml").write_text(WORKFLOW)
    catalog = Catalog(conf, tmp_path / "versions", schedule_parser=parse_schedule_file)
    catalog.scan()
    return catalog


def _type_toml(versions: Path, version: str) -> bytes:
    with tarfile.open(bundle_path(versions, version)) as tar:
        member = tar.extractfile("type.toml")
        assert member is not None
        return member.read()


def test_a_command_schedule_whose_file_is_gone_is_bundled_as_parsed(tmp_path):
    catalog = _catalog(tmp_path)
    (tmp_path / "conf.d" / "schedules" / "nightly.toml").unlink()
    loaded = CommandTypes(catalog, tmp_path / "versions").get("schedule.nightly")
    assert loaded is not None and loaded.version is not None
    assert loaded.task_type is not None
    assert loaded.task_type.command == "echo from the schedule"
    assert _type_toml(tmp_path / "versions", loaded.version) == SCHEDULE.encode()


def test_a_workflow_step_whose_file_changed_is_bundled_as_parsed(tmp_path):
    catalog = _catalog(tmp_path)
    path = tmp_path / "conf.d" / "workflows" / "w.toml"
    path.write_text('[steps.a]\ncommand = "echo edited, not yet scanned"\n')
    steps = StepTypes(catalog, tmp_path / "versions")
    loaded = steps.get("workflow.w.a")
    assert loaded is not None and loaded.version is not None
    assert _type_toml(tmp_path / "versions", loaded.version) == WORKFLOW.encode()
    path.unlink()
    again = StepTypes(catalog, tmp_path / "versions2").get("workflow.w.a")
    assert again is not None and again.version == loaded.version
    assert _type_toml(tmp_path / "versions2", loaded.version) == WORKFLOW.encode()


def test_a_schedule_saved_broken_after_its_type_went_does_not_stop_the_scan(tmp_path):
    """Its last good parse names a missing type; the problem's line is looked up in the
    file, which is no longer UTF-8: the scan goes on (it raised UnicodeDecodeError)."""
    catalog = _catalog(tmp_path)
    conf = tmp_path / "conf.d"
    (conf / "types").mkdir()
    path = conf / "schedules" / "nightly.toml"
    path.write_text('type = "report"\nevery = "1h"\n')
    catalog.scan()
    path.write_bytes(b'type = "report"\nevery = "1h"\ndescription = "caf\xe9"\n')
    (conf / "types" / "other.toml").write_text('command = "true"\n')
    catalog.scan()
    assert [t.name for t in catalog.types()] == ["other"]
    problems = " ".join(p.message for p in catalog.schedule("nightly").problems)
    assert "not UTF-8" in problems


def test_a_command_schedule_edited_only_in_a_comment_gets_the_new_text_s_version(tmp_path):
    catalog = _catalog(tmp_path)
    types = CommandTypes(catalog, tmp_path / "versions")
    first = types.get("schedule.nightly")
    path = tmp_path / "conf.d" / "schedules" / "nightly.toml"
    path.write_text("# runs every hour\n" + SCHEDULE)
    catalog.scan()
    second = types.get("schedule.nightly")
    assert first is not None and second is not None and first.version != second.version
    assert second.version is not None
    assert _type_toml(tmp_path / "versions", second.version) == path.read_bytes()
