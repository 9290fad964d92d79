"""Type inheritance rules: `extends`, what merges and what is replaced, abstract bases, the
problems (missing base, cycle, unreadable base) with the child's line, and versions that
cover a base's bytes."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from blanket.config.bundles import write_bundle
from blanket.config.inheritance import merge
from blanket.config.problems import ConfigInvalid
from blanket.config.selection import select_files
from blanket.config.tasktype import TaskType
from blanket.config.typefile import parse_type_file
from blanket.config.versions import HashCache, base_paths, version_hash

BASE = """\
abstract = true
description = "ansible playbooks"
tags = ["ansible", "unix"]
timeout = "30m"
retries = 2
command = "ansible-playbook {{ PLAYBOOK }}"

[environment.defaults]
PLAYBOOK = "site.yml"
FORKS = "5"

[environment.required]
INVENTORY = { description = "hosts file" }
"""


def write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in files.items():
        paths[name] = folder / f"{name}.toml"
        paths[name].write_text(text)
    return paths


def problems_of(path: Path) -> list:
    with pytest.raises(ConfigInvalid) as caught:
        parse_type_file(path)
    return caught.value.problems


def test_merge_merges_tables_and_replaces_lists_and_values():
    base = {"tags": ["a", "b"], "timeout": "5m", "environment": {"defaults": {"X": "1", "Y": "2"}}}
    child = {"tags": ["c"], "environment": {"defaults": {"Y": "3"}, "required": {"Z": {}}}}
    assert merge(base, child) == {
        "tags": ["c"], "timeout": "5m",
        "environment": {"defaults": {"X": "1", "Y": "3"}, "required": {"Z": {}}}}
    assert base["environment"]["defaults"] == {"X": "1", "Y": "2"}  # inputs untouched


def test_a_child_takes_its_bases_keys_and_overrides_them(tmp_path: Path):
    paths = write(tmp_path / "types", {
        "ansible": BASE,
        "deploy": 'extends = "ansible"\ntags = ["deploy"]\nretries = 0\n'
                  '[environment.defaults]\nFORKS = "20"\nTARGET = "prod"\n',
    })
    deploy = parse_type_file(paths["deploy"])
    assert deploy.command == "ansible-playbook {{ PLAYBOOK }}"
    assert deploy.description == "ansible playbooks" and deploy.timeout == 1800
    assert deploy.tags == ("deploy",)  # a list is replaced, not joined
    assert deploy.retries == 0
    assert deploy.defaults == {"PLAYBOOK": "site.yml", "FORKS": "20", "TARGET": "prod"}
    assert [r.name for r in deploy.required] == ["INVENTORY"]
    assert deploy.bases == ("ansible",) and not deploy.abstract  # abstract is not inherited
    base = parse_type_file(paths["ansible"])
    assert base.abstract and base.bases == ()


def test_bases_chain_nearest_first(tmp_path: Path):
    paths = write(tmp_path / "types", {
        "root": 'abstract = true\ntimeout = "1m"\ndescription = "root"\n',
        "middle": 'abstract = true\nextends = "root"\ncommand = "echo middle"\n',
        "leaf": 'extends = "middle"\ndescription = "leaf"\n',
    })
    leaf = parse_type_file(paths["leaf"])
    assert leaf.bases == ("middle", "root")
    assert (leaf.command, leaf.timeout, leaf.description) == ("echo middle", 60, "leaf")


def test_only_an_abstract_file_may_leave_out_the_command(tmp_path: Path):
    paths = write(tmp_path / "types", {"base": 'description = "no command"\n'})
    [problem] = problems_of(paths["base"])
    assert "command is missing" in problem.message and "abstract = true" in problem.message


@pytest.mark.parametrize("files, expected", [
    ({"a": 'extends = "nowhere"\ncommand = "x"\n'},
     "extends: no type file nowhere.toml"),
    ({"a": 'extends = "a"\ncommand = "x"\n'}, "a -> a is a cycle"),
    ({"a": 'extends = "b"\ncommand = "x"\n', "b": 'extends = "a"\ncommand = "y"\n'},
     "a -> b -> a is a cycle"),
    ({"a": 'extends = "../secret"\ncommand = "x"\n'}, "expected the name of a type file"),
    ({"a": 'extends = 3\ncommand = "x"\n'}, "expected the name of a type file"),
    ({"a": 'extends = "b"\ncommand = "x"\n', "b": "command = [unclosed\n"},
     "base 'b' cannot be read"),
])
def test_a_wrong_extends_is_a_problem_on_its_line(tmp_path: Path, files: dict, expected: str):
    paths = write(tmp_path / "types", files)
    problems = problems_of(paths["a"])
    found = [p for p in problems if expected in p.message]
    assert found, [p.message for p in problems]
    assert found[0].line == 1 and found[0].file == str(paths["a"])


def test_a_missing_base_names_the_ones_there_are(tmp_path: Path):
    paths = write(tmp_path / "types", {"child": 'extends = "bse"\ncommand = "x"\n',
                                       "base": 'abstract = true\n'})
    [problem] = problems_of(paths["child"])
    assert "use one of: base" in problem.message


def test_the_seed_spelling_in_a_base_is_read(tmp_path: Path):
    paths = write(tmp_path / "types", {
        "base": 'abstract = true\nmax_concurrent_tasks = 3\n',
        "child": 'extends = "base"\ncommand = "x"\n'})
    assert parse_type_file(paths["child"]).max_concurrent == 3


def test_a_bases_edit_changes_the_childs_version_and_only_its(tmp_path: Path):
    paths = write(tmp_path / "types", {
        "base": 'abstract = true\ncommand = "echo one"\n',
        "child": 'extends = "base"\n',
        "alone": 'command = "echo alone"\n',
    })

    def version(name: str) -> str:
        task_type = parse_type_file(paths[name])
        return version_hash(paths[name], task_type, select_files(paths[name], task_type),
                            HashCache())

    child, alone = version("child"), version("alone")
    paths["base"].write_text('abstract = true\ncommand = "echo two"\n')
    assert version("child") != child
    assert version("alone") == alone


def test_a_type_without_a_base_keeps_the_version_it_had(tmp_path: Path):
    """Versions made before inheritance existed stay the same (no spurious new versions)."""
    path = write(tmp_path / "types", {"t": 'command = "true"\n'})["t"]
    expected = hashlib.sha256(b"blanket-version 1\0t\0" + path.read_bytes()).hexdigest()
    assert version_hash(path, parse_type_file(path), [], HashCache()) == expected


def test_the_bundle_carries_the_bases(tmp_path: Path):
    paths = write(tmp_path / "types", {"base": 'abstract = true\ncommand = "echo"\n',
                                       "child": 'extends = "base"\n'})
    child = parse_type_file(paths["child"])
    bundle = write_bundle(tmp_path / "versions", "v1", paths["child"], [],
                          tuple(base_paths(paths["child"], child)))
    with tarfile.open(bundle) as tar:
        assert sorted(tar.getnames()) == ["bases/base.toml", "type.toml"]
        member = tar.extractfile("bases/base.toml")
        assert member is not None and member.read() == paths["base"].read_bytes()


def test_a_type_without_a_base_is_sent_as_older_workers_know_it():
    """Workers of the version before inheritance build a TaskType from every key they get
    (a key they do not know fails the task): a type without a base must not carry the new
    keys. These were TaskType's fields then."""
    before = {"name", "command", "description", "executor", "tags", "timeout", "retries",
              "retry_delay", "max_timeout", "max_retries", "max_concurrent", "estimate",
              "weight", "defaults", "required", "files", "results", "checks",
              "combine_output", "extra_environment", "secret_defaults"}
    assert set(TaskType("t", "true").to_json()) == before
    assert {"bases", "abstract"} <= set(TaskType("t", "true", bases=("b",),
                                                 abstract=True).to_json())


def test_a_worker_reads_a_newer_servers_type():
    data = TaskType("t", "true", bases=("b",)).to_json()
    data["a_field_from_the_future"] = 1
    assert TaskType.from_json(data).bases == ("b",)


def test_a_broken_chain_is_one_problem_not_what_the_base_would_have_given(tmp_path: Path):
    paths = write(tmp_path / "types", {"child": 'extends = "nowhere"\ntimeout = "1m"\n'})
    assert [p.message.split(":")[0] for p in problems_of(paths["child"])] == ["extends"]


def test_a_base_with_a_problem_is_named_with_its_file_and_line(tmp_path: Path):
    paths = write(tmp_path / "types", {
        "base": 'abstract = true\ncommand = "x"\ntimeout = "banana"\n',
        "child": 'extends = "base"\n'})
    [problem] = problems_of(paths["child"])
    assert problem.line == 1 and "base 'base' has a problem: base.toml:3" in problem.message
    assert "timeout" in problem.message and "fix that file" in problem.message


def test_naming_the_file_instead_of_the_type_says_so(tmp_path: Path):
    paths = write(tmp_path / "types", {"base": 'abstract = true\n',
                                       "child": 'extends = "base.toml"\ncommand = "x"\n'})
    [problem] = problems_of(paths["child"])
    assert 'name the type, not its file: extends = "base"' in problem.message
