"""Whatever a config directory holds, a scan never raises: each bad file is a reported
problem with its file (and line where there is one), and the other types still load."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blanket.config.schedule import parse_schedule_file
from blanket.config.tree import audit_tree
from blanket.server.catalog import Catalog, validate_config_dir

GOOD = 'command = "echo good"\n'
WITH_ASSETS = 'command = "echo assets"\n[[files]]\nsrc = "assets/"\n'
HOSTILE_LINES = ["\\", "!", "[z-a]", "[", "**/", "!*", "a/**/b", "\\\\", "#", "/", "[]", "?*"]
PROPERTY = settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


def fresh(base: Path) -> Path:
    """An empty conf.d with one plain type and one type that ships an assets folder."""
    shutil.rmtree(base, ignore_errors=True)
    types = base / "conf.d" / "types"
    (types / "assets").mkdir(parents=True)
    (types / "assets" / "run.sh").write_text("echo hi\n")
    (types / "good.toml").write_text(GOOD)
    (types / "assets_user.toml").write_text(WITH_ASSETS)
    (base / "conf.d" / "schedules").mkdir()
    return base / "conf.d"


def scanned(config: Path) -> Catalog:
    catalog = Catalog(config, config.parent / "versions", schedule_parser=parse_schedule_file)
    catalog.scan()  # must not raise, whatever is on disk
    return catalog


def no_bugs(problems) -> None:
    assert not [p for p in problems if "bug in blanket" in p.message], problems


@pytest.mark.parametrize("line", ["\\", "!", "[z-a]"])
def test_a_bad_blanketignore_line_is_a_problem_with_its_line(tmp_path: Path, line: str):
    config = fresh(tmp_path)
    ignore = config / "types" / "assets" / ".blanketignore"
    ignore.write_text(f"*.bak\n{line}\n")
    catalog = scanned(config)
    assert catalog.get("good").version is not None
    assert [(p.file, p.line) for p in catalog.problems()] == [(str(ignore), 2)]
    assert catalog.get("assets_user").version is None
    assert [(p.file, p.line) for p in validate_config_dir(config)] == [(str(ignore), 2)]


def test_a_blanketignore_that_is_not_utf8_names_the_line(tmp_path: Path):
    config = fresh(tmp_path)
    ignore = config / ".blanketignore"
    ignore.write_bytes(b"*.bak\n\xff\xfe\n")
    problems = scanned(config).problems()
    assert [(p.file, p.line) for p in problems] == [(str(ignore), 2)]
    assert "not UTF-8" in problems[0].message


def test_a_broken_type_keeps_its_last_good_version(tmp_path: Path):
    config = fresh(tmp_path)
    catalog = scanned(config)
    good = catalog.get("assets_user").version
    (config / "types" / "assets" / ".blanketignore").write_text("!\n")
    catalog.scan()
    loaded = catalog.get("assets_user")
    assert loaded.version == good and loaded.problems
    (config / "types" / "assets" / ".blanketignore").write_text("*.bak\n")
    catalog.scan()
    assert not catalog.get("assets_user").problems


def test_a_bad_templateignore_is_a_problem_of_its_own_file(tmp_path: Path):
    config = fresh(tmp_path)
    ignore = config / "types" / "assets" / ".templateignore"
    ignore.write_text("ok.txt\n[z-a]\n")
    catalog = scanned(config)
    assert [(p.file, p.line) for p in catalog.problems()] == [(str(ignore), 2)]
    assert catalog.get("good").version is not None


def test_a_symlink_loop_is_reported_and_other_types_load(tmp_path: Path):
    config = fresh(tmp_path)
    loop = config / "types" / "assets" / "loop"
    os.symlink("loop", loop)
    os.symlink("loop.toml", config / "types" / "looping.toml")
    catalog = scanned(config)
    files = {p.file for p in catalog.problems()}
    assert {str(loop), str(config / "types" / "looping.toml")} <= files
    assert catalog.get("good").version is not None
    no_bugs(catalog.problems())


def test_links_a_double_star_glob_would_follow_forever_are_refused_at_once(tmp_path: Path):
    config = fresh(tmp_path)
    os.symlink(".", config / "types" / "assets" / "a")
    os.symlink("..", config / "types" / "assets" / "b")
    (config / "types" / "globbing.toml").write_text(
        'command = "true"\n[[files]]\nsrc = "assets/**/*.sh"\n')
    problems = scanned(config).problems()
    assert {p.file for p in problems} == {str(config / "types" / "assets" / n) for n in "ab"}


def test_a_file_name_that_is_not_utf8_is_reported_printably(tmp_path: Path):
    config = fresh(tmp_path)
    os.close(os.open(os.path.join(os.fsencode(config / "types" / "assets"), b"bad\xff.sh"),
                     os.O_CREAT | os.O_WRONLY))
    os.close(os.open(os.path.join(os.fsencode(config / "types"), b"\xfe.toml"),
                     os.O_CREAT | os.O_WRONLY))
    catalog = scanned(config)
    shown = [str(p) for p in catalog.problems()]
    assert any("bad\\xff.sh" in s for s in shown) and any("\\xfe.toml" in s for s in shown)
    for text in shown:
        text.encode("utf-8")  # printable anywhere
    assert catalog.get("good").version is not None


@PROPERTY
@given(st.lists(st.one_of(st.sampled_from(HOSTILE_LINES), st.text(max_size=12)), max_size=6))
def test_any_blanketignore_lines_never_stop_the_scan(tmp_path: Path, lines: list[str]):
    config = fresh(tmp_path)
    text = "\n".join(lines)
    (config / "types" / "assets" / ".blanketignore").write_text(
        text, encoding="utf-8", errors="surrogateescape")
    catalog = scanned(config)
    assert catalog.get("good").version is not None
    no_bugs(catalog.problems())
    for problem in catalog.problems():
        assert problem.file.endswith(".blanketignore") and problem.line is not None
    assert validate_config_dir(config, parse_schedule_file) == catalog.problems()


@PROPERTY
@given(st.binary(max_size=200), st.sampled_from(["types", "schedules"]))
def test_random_bytes_in_a_toml_file_are_a_problem_of_that_file(tmp_path: Path, data: bytes,
                                                                folder: str):
    config = fresh(tmp_path)
    bad = config / folder / "random.toml"
    bad.write_bytes(data)
    catalog = scanned(config)
    assert catalog.get("good").version is not None
    assert catalog.get("assets_user").version is not None
    no_bugs(catalog.problems())
    assert {p.file for p in catalog.problems()} <= {str(bad)}
    validate_config_dir(config, parse_schedule_file)  # never raises either


@PROPERTY
@given(st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b
                                                   and b not in (b".", b"..")),
       st.sampled_from([b"", b".toml"]), st.sampled_from(["types", "types/assets"]))
def test_any_file_name_never_stops_the_scan(tmp_path: Path, name: bytes, suffix: bytes,
                                            folder: str):
    config = fresh(tmp_path)
    path = os.path.join(os.fsencode(config / folder), name + suffix)
    if os.path.exists(path):
        return
    with open(path, "wb") as handle:
        handle.write(b'command = "echo"\n')
    catalog = scanned(config)
    assert catalog.get("good").version is not None
    no_bugs(catalog.problems())
    for problem in catalog.problems():
        str(problem).encode("utf-8")


def test_a_types_folder_that_cannot_be_listed_is_a_problem_and_keeps_what_was_loaded(
        tmp_path: Path):
    config = fresh(tmp_path)
    catalog = scanned(config)
    shutil.move(config / "types", config / "moved")
    os.symlink("types", config / "types")  # a link to itself: listing it fails (ELOOP)
    catalog.scan()
    assert [p.file for p in catalog.problems()] == [str(config / "types")]
    assert catalog.get("good").version is not None
    assert [p.file for p in validate_config_dir(config)] == [str(config / "types")]


def test_problems_in_files_no_type_uses_are_reported_too(tmp_path: Path):
    config = fresh(tmp_path)
    stray = config / "unused" / ".blanketignore"
    stray.parent.mkdir()
    stray.write_text("ok\n[z-a]\n")
    os.symlink("nowhere", config / "unused" / "dangling")
    os.symlink(".#lock", config / "types" / ".#good.toml")  # an editor's lock: not a problem
    catalog = scanned(config)
    found = [(p.file, p.line) for p in catalog.problems()]
    assert found == [(str(stray), 2), (str(config / "unused" / "dangling"), None)]
    assert [(p.file, p.line) for p in validate_config_dir(config)] == found
    stray.write_text("ok\n")
    catalog.scan({stray})  # as the watcher reports the change
    assert [p.file for p in catalog.problems()] == [str(config / "unused" / "dangling")]


def test_a_change_that_cannot_add_a_problem_does_not_rescan_the_tree(tmp_path: Path,
                                                                     monkeypatch):
    config = fresh(tmp_path)
    catalog = scanned(config)
    audits = []
    monkeypatch.setattr("blanket.server.catalog.audit_tree",
                        lambda root: audits.append(root) or audit_tree(root))
    (config / "types" / "good.toml").write_text(GOOD + "# edited\n")
    catalog.scan({config / "types" / "good.toml"})
    assert audits == []
    catalog.scan({config / ".blanketignore"})
    assert audits == [config]


def test_a_rescan_looks_over_the_tree_again_only_when_a_folder_changed(tmp_path: Path,
                                                                       monkeypatch):
    config = fresh(tmp_path)
    for folder, _dirs, names in os.walk(config):  # old enough to be trusted as unchanged
        for path in [folder, *(os.path.join(folder, n) for n in names)]:
            os.utime(path, ns=(10**18, 10**18))
    catalog = Catalog(config, tmp_path / "versions")
    catalog.scan()
    audits = []
    monkeypatch.setattr("blanket.server.catalog.audit_tree",
                        lambda root: audits.append(root) or audit_tree(root))
    catalog.scan()
    assert audits == []
    os.symlink("nowhere", config / "types" / "dangling")
    catalog.scan()
    assert audits == [config]
    assert [p.file for p in catalog.problems()] == [str(config / "types" / "dangling")]
