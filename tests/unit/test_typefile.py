"""Task type files: what a valid file becomes, and how each mistake is reported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.tasktype import FileSection, RequiredVariable, TaskType
from blanket.config.typefile import parse_type_file


def write_type(folder: Path, text: str, name: str = "ocr") -> Path:
    path = folder / "types" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_type_file(path)
    return caught.value.problems


def only_problem(path: Path) -> ConfigProblem:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


def test_minimal_file_takes_defaults_and_its_stem_as_name(tmp_path):
    task_type = parse_type_file(write_type(tmp_path, 'command = "echo hi"\n'))
    assert (task_type.name, task_type.command, task_type.executor) == ("ocr", "echo hi", "bash")
    assert (task_type.retries, task_type.weight, task_type.timeout) == (0, 1, None)


def test_full_file_is_read_into_every_field(tmp_path):
    (tmp_path / "types" / "assets").mkdir(parents=True)
    path = write_type(tmp_path, """
description = "OCR a scan"
command = "ocrmypdf {{ INPUT }} out.pdf"
executor = "sh"
tags = ["ocr", "unix"]
timeout = "30m"
retries = 2
retry_delay = "30s"
max_concurrent = 2
estimate = 90
weight = 3
combine_output = true
results = ["*.pdf"]
checks = ["which ocrmypdf"]

[environment.defaults]
LANG = "eng"
PAGES = 3
FAST = true

[environment.required]
INPUT = { description = "the PDF", type = "string" }
DPI = "scan resolution"

[[files]]
src = "assets/"
dest = "in"
include = ["*.txt"]
exclude = ["*.bak"]
render = false
""")
    task_type = parse_type_file(path)
    assert task_type.tags == ("ocr", "unix")
    assert (task_type.timeout, task_type.retry_delay, task_type.estimate) == (1800, 30, 90)
    assert (task_type.max_concurrent, task_type.weight, task_type.combine_output) == (2, 3, True)
    assert task_type.defaults == {"LANG": "eng", "PAGES": "3", "FAST": "true"}
    assert task_type.required == (RequiredVariable("INPUT", "the PDF", "string"),
                                  RequiredVariable("DPI", "scan resolution", "string"))
    assert task_type.files == (FileSection("assets/", "in", ("*.txt",), ("*.bak",), False),)
    assert (task_type.results, task_type.checks) == (("*.pdf",), ("which ocrmypdf",))


def test_name_argument_overrides_the_stem(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n')
    assert parse_type_file(path, name="other").name == "other"


def test_toml_syntax_error_reports_the_line(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\ntimeout = = 3\n'))
    assert problem.line == 2
    assert "not valid TOML" in problem.message
    assert "(at line" not in problem.message


def test_missing_command_says_how_to_add_one(tmp_path):
    problem = only_problem(write_type(tmp_path, 'description = "x"\n'))
    assert "command is missing" in problem.message
    assert "command =" in problem.message


def test_command_template_error_reports_the_file_line(tmp_path):
    path = write_type(tmp_path, 'tags = []\ncommand = """\necho one\necho {{ oops \n"""\n')
    problem = only_problem(path)
    assert problem.line == 4
    assert "template error on line 2 of the command" in problem.message


def test_unknown_key_names_it_suggests_a_fix_and_lists_valid_keys(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\ntimout = "5m"\n'))
    assert problem.line == 2
    assert "'timout'" in problem.message
    assert "did you mean 'timeout'?" in problem.message
    assert "retry_delay" in problem.message


def test_bad_duration_says_how_to_write_one(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n\n\ntimeout = "5 minutes"\n')
    problem = only_problem(path)
    assert str(problem) == (
        f"{path}:4: timeout: '5 minutes' is not a duration; write seconds (90) "
        "or a string like '90s', '5m', '2h', '1h30m'"
    )


def test_negative_retries_asks_for_zero_or_more(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\nretries = -1\n'))
    assert problem.line == 2
    assert "retries: -1 is too small; the least is 0" in problem.message


def test_zero_max_concurrent_asks_for_one_or_more(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\nmax_concurrent = 0\n'))
    assert "max_concurrent: 0 is too small; the least is 1" in problem.message


def test_weight_given_as_text_names_the_expected_type(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\nweight = "heavy"\n'))
    assert "weight: expected a whole number of 1 or more, got a string" in problem.message


def test_tags_must_be_a_list_of_strings(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\ntags = "ocr"\n'))
    assert problem.line == 2
    assert problem.message.startswith(
        'tags: expected a list of non-empty strings, like ["a", "b"], got a string')


def test_combine_output_must_be_a_boolean(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "true"\ncombine_output = "yes"\n'))
    assert "combine_output: expected true or false" in problem.message


def test_unknown_executor_is_rejected(tmp_path):
    problem = only_problem(write_type(tmp_path, 'command = "x"\nexecutor = "no-such-shell-xyz"\n'))
    assert problem.line == 2
    assert "not an installed program or an executable file" in problem.message


def test_executor_may_be_an_interpreter_path(tmp_path):
    path = write_type(tmp_path, f'command = "print(1)"\nexecutor = "{sys.executable}"\n')
    assert parse_type_file(path).executor == sys.executable


def test_python_executor_is_always_valid(tmp_path):
    path = write_type(tmp_path, 'command = "print(1)"\nexecutor = "python"\n')
    assert parse_type_file(path).executor == "python"


def test_default_value_of_wrong_type_is_reported_at_its_line(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[environment.defaults]\nA = "x"\nB = [1]\n')
    problem = only_problem(path)
    assert problem.line == 4
    assert "environment.defaults.B: expected a string, number or boolean" in problem.message


def test_environment_variable_names_must_be_valid(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[environment.defaults]\n"my-var" = 1\n')
    problem = only_problem(path)
    assert problem.line == 3
    assert "'my-var' is not a valid variable name" in problem.message


def test_required_variable_type_must_be_known(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[environment.required]\n'
                                'N = { description = "count", type = "int" }\n')
    problem = only_problem(path)
    assert problem.line == 3
    assert "type: 'int' is not allowed; use one of: string, integer, number, boolean" in (
        problem.message)


def test_required_variable_rejects_unknown_keys(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[environment.required]\n'
                                'N = { descripton = "count" }\n')
    assert "did you mean 'description'?" in only_problem(path).message


def test_unknown_environment_section_is_rejected(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[environment.default]\nA = 1\n')
    problem = only_problem(path)
    assert problem.line == 2
    assert "did you mean 'defaults'?" in problem.message


def test_files_section_without_src_is_reported_at_its_header(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n\n[[files]]\ndest = "x"\n')
    problem = only_problem(path)
    assert problem.line == 3
    assert "files[0]: src is missing" in problem.message


def test_files_src_that_matches_nothing_is_reported(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "nowhere/*.png"\n')
    problem = only_problem(path)
    assert problem.line == 3
    assert "files[0].src: 'nowhere/*.png' matches nothing" in problem.message


def test_files_src_glob_matching_a_file_is_accepted(tmp_path):
    (tmp_path / "types" / "art").mkdir(parents=True)
    (tmp_path / "types" / "art" / "logo.png").write_bytes(b"png")
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "art/*.png"\n')
    assert parse_type_file(path).files[0].src == "art/*.png"


def test_files_src_expands_a_leading_tilde_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "assets").mkdir(parents=True)
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "~/assets"\n')
    assert parse_type_file(path).files[0].src == "~/assets"
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "a~/assets"\n')
    assert "matches nothing" in only_problem(path).message


def test_files_dest_may_not_leave_the_scratch_directory(tmp_path):
    (tmp_path / "types" / "assets").mkdir(parents=True)
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "assets"\ndest = "../up"\n')
    problem = only_problem(path)
    assert problem.line == 4
    assert "leaves the task's scratch directory" in problem.message


def test_second_files_section_errors_point_into_that_section(tmp_path):
    (tmp_path / "types" / "assets").mkdir(parents=True)
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "assets"\nrender = true\n'
                                '[[files]]\nsrc = "assets"\nrender = "no"\n')
    problem = only_problem(path)
    assert problem.line == 7
    assert "files[1].render: expected true or false" in problem.message


def test_files_unknown_key_suggests_the_right_one(tmp_path):
    (tmp_path / "types" / "assets").mkdir(parents=True)
    path = write_type(tmp_path, 'command = "true"\n[[files]]\nsrc = "assets"\nexclud = []\n')
    problem = only_problem(path)
    assert problem.line == 4
    assert "did you mean 'exclude'?" in problem.message


def test_invalid_type_name_is_rejected(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n', name="_hidden")
    assert "type name '_hidden' is not allowed" in only_problem(path).message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write_type(tmp_path, 'command = "true"\nretries = -1\ntimeout = "soon"\nbogus = 1\n')
    assert sorted(p.line for p in problems_of(path)) == [2, 3, 4]


def test_files_written_as_a_single_table_asks_for_double_brackets(tmp_path):
    path = write_type(tmp_path, 'command = "true"\n\n[files]\nsrc = "a"\n')
    problem = only_problem(path)
    assert problem.line == 3
    assert "files: expected [[files]] sections" in problem.message


def test_secret_variables_and_extra_environment_are_read(tmp_path):
    path = tmp_path / "db.toml"
    path.write_text('command = "true"\nallow_extra_environment = ["X_*"]\n'
                    '[environment.required]\nPW = { description = "pw", secret = true }\n'
                    '[environment.defaults]\nKEY = { value = "k", secret = true }\nR = "eu"\n')
    task_type = parse_type_file(path)
    assert task_type.secrets == {"PW", "KEY"}
    assert task_type.defaults == {"KEY": "k", "R": "eu"}
    assert task_type.extra_environment == ("X_*",)
    assert task_type.shown_json()["defaults"] == {"KEY": "***", "R": "eu"}
    assert TaskType.from_json(task_type.to_json()) == task_type


@pytest.mark.parametrize(("text", "message"), [
    ('[environment.defaults]\nK = { value = "v", secret = "yes" }\n', "secret"),
    ('[environment.defaults]\nK = { secret = true }\n', "value is missing"),
    ('[environment.defaults]\nK = { value = "v", hidden = true }\n', "unknown key 'hidden'"),
    ('allow_extra_environment = "yes"\n', "allow_extra_environment"),
])
def test_bad_secret_or_extra_environment_settings_are_problems(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text('command = "true"\n' + text)
    with pytest.raises(ConfigInvalid) as problems:
        parse_type_file(path)
    assert message in str(problems.value)
