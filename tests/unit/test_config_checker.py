"""The one config checker: each kind of problem is found and worded the same way in a type
file and in a schedule file."""

from __future__ import annotations

from pathlib import Path

import pytest

from blanket.config.checker import (
    MAX_COMMAND,
    MAX_DESCRIPTION,
    MAX_DURATION,
    MAX_KEEP,
    MAX_RETRY_DELAY,
    MAX_STRING,
    Checker,
    header_line,
    key_line,
    parse_toml,
    type_name,
)
from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.schedule import parse_schedule_text
from blanket.config.typefile import parse_type_file
from blanket.config.workflow import parse_workflow_text
from blanket.server.catalog import validate_config_dir


def type_problems(tmp_path: Path, text: str) -> list[ConfigProblem]:
    path = tmp_path / "types" / "t.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(ConfigInvalid) as caught:
        parse_type_file(path)
    return caught.value.problems


def schedule_problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_schedule_text(text, "s", "s.toml")
    return caught.value.problems


def only(problems: list[ConfigProblem]) -> ConfigProblem:
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize(("type_text", "schedule_text", "line", "message"), [
    ('command = "x"\nretries = = 1\n', 'type = "t"\nevery = = 1\n', 2,
     "not valid TOML: Invalid value"),
    ('command = "x"\ndescriptoin = "a"\n', 'type = "t"\nevery = "1h"\ndescriptoin = "a"\n', None,
     "unknown key 'descriptoin'; did you mean 'description'? valid keys are: "),
    ('command = "x"\ntags = "a"\n', 'type = "t"\nevery = "1h"\ntags = "a"\n', None,
     "tags: expected a list of non-empty strings, like [\"a\", \"b\"], got a string ('a')"),
    ('command = "x"\ntags = ["a", ""]\n', 'type = "t"\nevery = "1h"\ntags = ["a", ""]\n', None,
     "tags: expected a list of non-empty strings"),
    ('command = "x"\ndescription = 3\n', 'type = "t"\nevery = "1h"\ndescription = 3\n', None,
     "description: expected a"),
    ('command = "x"\n[environment.defaults]\n2X = "a"\n',
     'type = "t"\nevery = "1h"\n[environment]\n2X = "a"\n', None,
     "'2X' is not a valid variable name; use letters, digits and '_', not starting with a digit"),
    ('command = "x"\n[environment.defaults]\nX = [1]\n',
     'type = "t"\nevery = "1h"\n[environment]\nX = [1]\n', None,
     "X: expected a string, number or boolean, got a list"),
])
def test_each_kind_of_problem_is_worded_one_way_in_both_kinds_of_file(
        tmp_path, type_text, schedule_text, line, message):
    in_type = only(type_problems(tmp_path, type_text))
    in_schedule = only(schedule_problems(schedule_text))
    assert message in in_type.message and message in in_schedule.message
    if line is None:  # the key's own line: the last one in both texts
        line_of_type, line_of_schedule = type_text.count("\n"), schedule_text.count("\n")
    else:
        line_of_type = line_of_schedule = line
    assert (in_type.line, in_schedule.line) == (line_of_type, line_of_schedule)


def test_a_syntax_error_at_the_end_of_the_document_points_at_the_last_line():
    with pytest.raises(ConfigInvalid) as caught:
        parse_toml('a = 1\nb = "unterminated', "f.toml")
    [problem] = caught.value.problems
    assert problem.line == 2 and problem.message.startswith("not valid TOML: ")
    assert "(at" not in problem.message  # the position moved into `line`


def test_a_number_too_long_for_python_is_a_toml_problem_not_a_crash():
    with pytest.raises(ConfigInvalid) as caught:
        parse_toml("a = " + "9" * 5000, "f.toml")
    assert caught.value.problems[0].message.startswith("not valid TOML: ")


def test_key_and_header_lines():
    text = 'a = 1\n[[files]]\nsrc = "x"\n[[files]]\n  src = "y"\n[ environment . defaults ]\n'
    assert key_line(text, "src") == 3 and key_line(text, "src", after=3) == 5
    assert header_line(text, "files", 1) == 4 and header_line(text, "files", 2) is None
    assert header_line(text, "environment.defaults") == 6
    assert key_line(text, "missing") is None


def test_top_level_keys_are_looked_for_before_the_first_table():
    checker = Checker("f.toml", 'x = 1\n[t]\ny = 2\n[y]\n')
    assert checker.top_line("x") == 1
    assert checker.top_line("y") == 4  # the [y] table, not t's y = 2


@pytest.mark.parametrize(("value", "kwargs", "message"), [
    ("1", {}, "n: expected a whole number, got a string ('1')"),
    (True, {}, "n: expected a whole number, got a boolean (True)"),
    (1.5, {"low": 1}, "n: expected a whole number of 1 or more, got a number (1.5)"),
    (0, {"low": 1}, "n: 0 is too small; the least is 1"),
    (11, {"low": 0, "high": 10}, "n: 11 is too large; the most is 10"),
    (2**40, {"low": 0}, "n: 1099511627776 is too large; the most is 2147483647"),
])
def test_integers_are_whole_numbers_within_their_bounds(value, kwargs, message):
    checker = Checker("f.toml", "")
    assert checker.integer("n", value, 7, **kwargs) is None
    assert checker.problems == [ConfigProblem("f.toml", message, 7)]


def test_a_check_that_passes_returns_the_value_and_records_nothing():
    checker = Checker("f.toml", "")
    assert checker.integer("n", 5, None, low=0, high=10) == 5
    assert checker.choice("c", "b", None, ("a", "b")) == "b"
    assert checker.duration("d", "1m", None) == 60.0
    assert checker.environment_value("e", False, None) == "false"
    assert checker.string_list("l", ["a"], None) == ("a",)
    assert checker.finish("done") == "done" and checker.problems == []


def test_finish_raises_every_problem_recorded():
    checker = Checker("f.toml", "")
    checker.choice("c", "z", 2, ("a", "b"))
    checker.duration("d", "soon", 3)
    with pytest.raises(ConfigInvalid) as caught:
        checker.finish("never")
    assert [(p.line, p.message.split(":")[0]) for p in caught.value.problems] == [
        (2, "c"), (3, "d")]
    assert caught.value.problems[0].message == "c: 'z' is not allowed; use one of: a, b"


def test_type_names_read_as_toml_types():
    assert [type_name(v) for v in ("", True, 1, 1.0, [], {})] == [
        "a string", "a boolean", "an integer", "a number", "a list", "a table"]


def test_a_schedule_priority_outside_the_queue_bounds_is_refused_when_the_file_is_read():
    problem = only(schedule_problems('type = "t"\nevery = "1h"\npriority = -10001\n'))
    assert (problem.line, problem.message) == (3, "priority: -10001 is too small; the least is "
                                                  "-10000")


@pytest.mark.parametrize(("value", "kwargs", "message"), [
    ("x" * (MAX_STRING + 1), {}, f"s: {MAX_STRING + 1} characters is too long; the most is "
                                 f"{MAX_STRING}"),
    ("abcd", {"most": 3}, "s: 4 characters is too long; the most is 3"),
    ("x" * (MAX_COMMAND + 1), {"most": MAX_COMMAND},
     f"s: {MAX_COMMAND + 1} characters is too long; the most is {MAX_COMMAND}"),
])
def test_strings_are_at_most_their_bound(value, kwargs, message):
    checker = Checker("f.toml", "")
    assert checker.string("s", value[:-1], 7, **kwargs) == value[:-1]  # at the limit
    assert checker.problems == []
    assert checker.string("s", value, 7, **kwargs) is None
    assert checker.problems == [ConfigProblem("f.toml", message, 7)]


@pytest.mark.parametrize(("at_most", "too_long", "kwargs", "message"), [
    ("366d", "367d", {}, "d: '367d' is too long; the most is 366d"),
    (MAX_DURATION, MAX_DURATION + 1, {}, "d: 31622401.0 is too long; the most is 366d"),
    ("7d", "7d1s", {"most": MAX_RETRY_DELAY}, "d: '7d1s' is too long; the most is 7d"),
    ("36500d", "36501d", {"most": MAX_KEEP}, "d: '36501d' is too long; the most is 36500d"),
    ("1d", "100000000000d", {}, "d: '100000000000d' is too long; the most is 366d"),
    ("90", "9" * 101, {}, "d: 101 characters is too long for a duration; write seconds (90) "
                          "or a string like '90s', '5m', '2h', '1h30m'"),
])
def test_durations_are_at_most_their_bound(at_most, too_long, kwargs, message):
    checker = Checker("f.toml", "")
    assert checker.duration("d", at_most, 7, **kwargs) is not None
    assert checker.problems == []
    assert checker.duration("d", too_long, 7, **kwargs) is None
    assert checker.problems == [ConfigProblem("f.toml", message, 7)]


def test_a_type_file_bounds_each_key_as_its_use_needs(tmp_path):
    """A command may be a whole script, a description a page, a name or path a line; a
    timeout at most a year, a retry delay a week (what a submission may ask), a keep a
    century. Each too-long value is reported at its own line."""
    long_command = "echo " + "x" * (MAX_COMMAND - 5)
    good = f'command = "{long_command}"\ndescription = "{"d" * MAX_DESCRIPTION}"\n' \
           'timeout = "366d"\nretry_delay = "366d"\nkeep = "36500d"\n'
    path = tmp_path / "types" / "t.toml"
    path.parent.mkdir(parents=True)
    path.write_text(good)
    task_type = parse_type_file(path)
    assert len(task_type.command) == MAX_COMMAND and task_type.timeout == 366 * 86400
    problems = type_problems(tmp_path, (
        f'command = "{long_command}x"\ndescription = "{"d" * (MAX_DESCRIPTION + 1)}"\n'
        'timeout = "367d"\nretry_delay = "367d"\nkeep = "36501d"\nexecutor = "'
        + "e" * (MAX_STRING + 1) + '"\nmax_timeout = "100000000000d"\n'))
    assert [(p.line, p.message) for p in problems] == [
        (1, f"command: {MAX_COMMAND + 1} characters is too long; the most is {MAX_COMMAND}"),
        (2, f"description: {MAX_DESCRIPTION + 1} characters is too long; the most is "
            f"{MAX_DESCRIPTION}"),
        (6, f"executor: {MAX_STRING + 1} characters is too long; the most is {MAX_STRING}"),
        (3, "timeout: '367d' is too long; the most is 366d"),
        (4, "retry_delay: '367d' is too long; the most is 366d"),
        (7, "max_timeout: '100000000000d' is too long; the most is 366d"),
        (5, "keep: '36501d' is too long; the most is 36500d"),
    ]


def test_a_schedule_and_a_workflow_bound_their_commands_and_durations():
    problems = schedule_problems(f'command = "{"x" * (MAX_COMMAND + 1)}"\nevery = "367d"\n')
    assert [(p.line, p.message) for p in problems] == [
        (1, f"command: {MAX_COMMAND + 1} characters is too long; the most is {MAX_COMMAND}"),
        (2, "every: '367d' is too long; the most is 366d")]
    schedule_problems_ok = parse_schedule_text(
        f'command = "{"x" * MAX_COMMAND}"\nevery = "366d"\n', "s", "s.toml")
    assert schedule_problems_ok.every == 366 * 86400
    with pytest.raises(ConfigInvalid) as caught:
        parse_workflow_text('[steps.a]\ncommand = "true"\ntimeout = "400d"\n'
                            f'description = "{"d" * (MAX_DESCRIPTION + 1)}"\n', "w", "w.toml")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (3, "steps.a.timeout: '400d' is too long; the most is 366d"),
        (4, f"steps.a.description: {MAX_DESCRIPTION + 1} characters is too long; the most "
            f"is {MAX_DESCRIPTION}")]


def test_validate_reports_a_value_past_its_bound_with_file_and_line(tmp_path):
    config = tmp_path / "conf.d"
    (config / "types").mkdir(parents=True)
    (config / "types" / "slow.toml").write_text('command = "true"\ntimeout = "100000000000d"\n')
    [problem] = validate_config_dir(config)
    assert str(problem) == (f"{config / 'types' / 'slow.toml'}:2: timeout: '100000000000d' is "
                            "too long; the most is 366d")
