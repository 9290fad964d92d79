"""Workflow files: what a good file becomes, and every mistake reported with its line and
what to change."""

from __future__ import annotations

import pytest

from blanket.config.problems import ConfigInvalid
from blanket.config.tasktype import RequiredVariable, TaskType
from blanket.config.workflow import (
    MAX_STEPS,
    find_cycle,
    parse_workflow_text,
    references,
    render,
    secret_names,
    type_problems,
)

GOOD = '''
description = "etl"
required = ["DAY"]
[environment]
SOURCE = "s3://x"
COUNT = 3

[steps.fetch]
type = "fetch"
environment = { URL = "{{ SOURCE }}/{{ DAY }}" }

[steps.convert]
command = "convert $ITEM"
executor = "sh"
after = ["fetch"]
each = "{{ FILES }}"
results = "out/r.json"
tags = ["gpu"]
timeout = "5m"
retries = 2

[steps.publish]
type = "publish"
after = ["convert"]
'''


def problems(text: str, name: str = "w") -> list:
    with pytest.raises(ConfigInvalid) as caught:
        parse_workflow_text(text, name, "w.toml")
    return caught.value.problems


def one(text: str):
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_a_good_file_becomes_its_steps_in_order():
    workflow = parse_workflow_text(GOOD, "etl", "etl.toml")
    assert [s.name for s in workflow.steps] == ["fetch", "convert", "publish"]
    assert workflow.environment == {"SOURCE": "s3://x", "COUNT": "3"}
    assert workflow.required == ("DAY",) and workflow.variables == {"SOURCE", "COUNT", "DAY"}
    convert = workflow.step("convert")
    assert convert is not None
    assert (convert.each, convert.results, convert.executor, convert.timeout,
            convert.retries) == ("FILES", "out/r.json", "sh", 300.0, 2)
    assert workflow.step_type(convert) == "workflow.etl.convert"
    assert workflow.step_type(workflow.steps[0]) == "fetch"
    assert len(workflow.version) == 64 and workflow.text == GOOD
    assert parse_workflow_text(GOOD + "\n", "etl", "etl.toml").version != workflow.version


def test_steps_are_ordered_after_what_they_wait_for_whatever_the_file_order():
    text = ('[steps.d]\ncommand = "x"\nafter = ["b", "c"]\n[steps.c]\ncommand = "x"\n'
            'after = ["a"]\n[steps.b]\ncommand = "x"\nafter = ["a"]\n[steps.a]\ncommand = "x"\n')
    assert [s.name for s in parse_workflow_text(text, "w", "w").order] == \
        ["a", "c", "b", "d"]


def test_a_cycle_is_named_with_the_line_of_the_after_that_closes_it():
    found = one('[steps.a]\ncommand = "x"\nafter = ["c"]\n[steps.b]\ncommand = "x"\n'
                'after = ["a"]\n[steps.c]\ncommand = "x"\nafter = ["b"]\n')
    assert found.message.startswith("steps wait for each other in a cycle: a -> c -> b -> a")
    assert found.line == 3


def test_find_cycle_finds_none_in_a_diamond():
    assert find_cycle({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}) is None
    assert find_cycle({"a": ("a",)}) == ["a"]


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[steps.a]\ncommand = "x"\nafter = ["zz"]\n', 3, "no step named 'zz'; steps: none"),
    ('[steps.a]\ncommand = "x"\nafter = ["a"]\n', 3, "cannot wait for itself"),
    ('[steps.a]\ntype = "t"\ncommand = "x"\n', 1, "set exactly one of 'type'"),
    ('[steps.a]\ndescription = "d"\n', 1, "set exactly one of 'type'"),
    ('[steps.a]\ntype = "t"\nexecutor = "sh"\n', 3, "only a command step has an executor"),
    ('[steps.a]\ncommand = "x"\nexecutor = "ruby"\n', 3, "use one of: bash, sh, python"),
    ('[steps.a]\ncommand = "x"\neach = "FILES"\n', 3, 'as "{{ NAME }}"'),
    ('[steps.a]\ncommand = "x"\nresults = "../up.json"\n', 3, "inside the task's folder"),
    ('[steps.a]\ncommand = "x"\nresults = "/etc/passwd"\n', 3, "inside the task's folder"),
    ('[steps.a]\ncommand = "x"\nresults = true\n', 3, "or false for none"),
    ('[steps.a]\ncommand = "x"\nenvironment = { A = "{{ B | upper }}" }\n', 3,
     "only as {{ NAME }}"),
    ('[steps.a]\ncommand = "x"\nenvironment = { A = "{% if x %}" }\n', 3, "only as {{ NAME }}"),
    ('[steps.a]\ncommand = "x"\nenvironment = { LD_PRELOAD = "/x.so" }\n', 3,
     "a workflow may not set it"),
    ('[steps.a]\ncommand = "x"\nenvironment = { A = [1] }\n', 3, "a string, number or boolean"),
    ('[steps.a]\ncommand = "x"\npriorty = 3\n', 3, "did you mean 'priority'"),
    ('[steps.a]\ncommand = "x"\ntimeout = "0s"\n', 3, "too short"),
    ('[steps.a]\ncommand = "x"\nretries = -1\n', 3, "too small"),
    ('[steps."a b"]\ncommand = "x"\n', 1, "a step's name is letters"),
    ('required = ["BASH_ENV"]\n[steps.a]\ncommand = "x"\n', 1, "a workflow may not set it"),
    ('[environment]\n1X = "y"\n[steps.a]\ncommand = "x"\n', 2, "not a valid variable name"),
    ('stpes = 1\n[steps.a]\ncommand = "x"\n', 1, "did you mean 'steps'"),
    ('description = "nothing to do"\n', None, "no steps"),
    ('steps = 3\n', 1, "write each step as a [steps.NAME] table"),
])
def test_each_mistake_is_reported_at_its_line_with_what_to_change(text, line, words):
    found = one(text)
    assert words in found.message and found.line == line, found


def test_a_broken_toml_file_says_where():
    found = one('[steps.a]\ncommand = "x\n')
    assert found.line == 2


def test_every_mistake_of_a_file_is_reported_at_once():
    found = problems('[steps.a]\ncommand = "x"\nexecutor = "ruby"\npriorty = 1\n'
                     '[steps.b]\ntype = "t"\ncommand = "y"\n')
    assert len(found) == 3


def test_a_file_name_that_is_no_workflow_name_is_a_problem():
    found = problems('[steps.a]\ncommand = "x"\n', name="a.b")
    assert len(found) == 1 and "not a workflow name" in found[0].message


def test_too_many_steps_is_a_problem():
    text = "".join(f'[steps.s{i}]\ncommand = "x"\n' for i in range(MAX_STEPS + 1))
    assert f"the most is {MAX_STEPS}" in one(text).message


def test_references_and_rendering():
    assert references("{{ A }}-{{B}}-{{  C_1 }}") == ["A", "B", "C_1"]
    assert render("{{ A }}/{{B}}", {"A": "x", "B": "{{ A }}"}) == "x/{{ A }}"  # once, not again
    with pytest.raises(KeyError):
        render("{{ MISSING }}", {})


def test_type_steps_are_checked_against_the_loaded_types():
    workflow = parse_workflow_text(GOOD, "etl", "etl.toml")
    fetch = TaskType(name="fetch", command="x", defaults={"URL": ""})
    found = type_problems(workflow, "etl.toml", GOOD, {"fetch": fetch}, {"publish"})
    assert [p.message.split(":")[0] for p in found] == ["steps.publish.type"]
    assert "'publish' is abstract" in found[0].message and found[0].line == 23
    narrow = TaskType(name="fetch", command="x")
    found = type_problems(workflow, "etl.toml", GOOD, {"fetch": narrow, "publish": narrow},
                          set())
    assert len(found) == 1 and "does not take this variable" in found[0].message
    assert found[0].line == 10


def test_results_default_to_results_json_and_may_be_named_or_turned_off():
    def step(extra: str):
        return parse_workflow_text(f'[steps.a]\ncommand = "x"\n{extra}', "w", "w").steps[0]
    assert (step("").results, step("").results_named) == ("results.json", False)
    assert (step('results = "o/r.json"\n').results,
            step('results = "o/r.json"\n').results_named) == ("o/r.json", True)
    assert step("results = false\n").results is None


LOGIN = TaskType(name="login", command="x", required=(
    RequiredVariable("PASS", secret=True), RequiredVariable("USER")))


def test_secrets_are_what_types_keep_secret_what_feeds_them_and_what_is_made_of_them():
    workflow = parse_workflow_text(
        'required = ["DB_PASS", "WHO"]\n'
        '[steps.a]\ntype = "login"\nenvironment = { PASS = "{{ DB_PASS }}", USER = "{{ WHO }}" }\n'
        '[steps.b]\ncommand = "x"\nenvironment = { URL = "https://u:{{ DB_PASS }}@h", '
        'PLAIN = "{{ WHO }}" }\n', "w", "w.toml")
    hidden = secret_names(workflow, lambda name: LOGIN.secrets if name == "login"
                          else frozenset())
    assert hidden == {"PASS", "DB_PASS", "URL"}


@pytest.mark.parametrize(("text", "words"), [
    ('[environment]\nPASS = "hunter2"\n[steps.a]\ntype = "login"\n',
     "environment.PASS: this variable holds a secret"),
    ('[steps.a]\ntype = "login"\nenvironment = { PASS = "hunter2" }\n',
     "keeps this variable secret: a workflow file may not hold its value"),
    ('required = ["PASS"]\n[steps.a]\ntype = "login"\nenvironment = { USER = "{{ PASS }}" }\n',
     "it would hold the secret {{ PASS }}, but type 'login' does not keep USER secret"),
])
def test_a_workflow_file_never_holds_or_shows_a_secret(text, words):
    workflow = parse_workflow_text(text, "w", "w.toml")
    found = type_problems(workflow, "w.toml", text, {"login": LOGIN}, set())
    assert len(found) == 1 and words in found[0].message, found
    assert found[0].line is not None
