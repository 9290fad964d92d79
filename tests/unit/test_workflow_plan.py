"""The rules of a run (server/workflowplan.py): which steps run when, what they are given,
fan-out and fan-in, failures, skips and reruns; no server, no store."""

from __future__ import annotations

import pytest

from blanket.config.workflow import parse_workflow_text
from blanket.models import Run, RunTask, TaskState
from blanket.server.workflowplan import StepFailed, plan, split_list, task_environment

DIAMOND = parse_workflow_text(
    '[environment]\nWHO = "x"\n'
    '[steps.a]\ncommand = "a"\n'
    '[steps.b]\ncommand = "b"\nafter = ["a"]\nenvironment = { G = "{{ GREETING }}!" }\n'
    '[steps.c]\ncommand = "c"\nafter = ["a"]\n'
    '[steps.d]\ncommand = "d"\nafter = ["b", "c"]\n', "diamond", "d.toml")

S, F, Q = TaskState.SUCCESS, TaskState.FAILED, TaskState.QUEUED


def run(round_: int = 1, state: str = "running", **env: str) -> Run:
    return Run(id=7, workflow="diamond", version="v", definition="", environment={
        "WHO": "x", **env}, state=state, round=round_, added=0.0)


def task(step: str, state: TaskState | None, item: int = 0, round_: int = 1,
         task_id: int | None = None) -> RunTask:
    return RunTask(step=step, item=item, round=round_, task_id=task_id or hash(step) % 1000,
                   state=state, type="t")


def results_of(found: dict[tuple[str, int], dict]):
    def read(step, run_task):
        value = found.get((step.name, run_task.item), {})
        if isinstance(value, ValueError):
            raise value
        return value
    return read


def states(decided) -> dict[str, str]:
    return {name: view.state for name, view in decided.steps.items()}


def made(decided) -> dict[str, list]:
    return {step.name: items for step, items in decided.create}


def test_a_new_run_makes_its_first_step_only():
    decided = plan(DIAMOND, run(), [], results_of({}))
    assert states(decided) == {"a": "running", "b": "pending", "c": "pending", "d": "pending"}
    assert made(decided) == {"a": [(0, {"WHO": "x"})]}
    assert decided.outcome is None


def test_once_a_succeeded_b_and_c_are_made_with_its_results():
    decided = plan(DIAMOND, run(), [task("a", S)],
                   results_of({("a", 0): {"GREETING": "hi", "N": 2, "L": [1, "x"]}}))
    created = made(decided)
    assert set(created) == {"b", "c"}
    assert created["b"] == [(0, {"WHO": "x", "GREETING": "hi", "N": "2", "L": '[1, "x"]',
                                 "G": "hi!"})]
    assert states(decided)["d"] == "pending"


def test_d_waits_for_both_and_the_run_succeeds_when_every_step_did():
    ended = [task("a", S), task("b", S), task("c", Q)]
    assert made(plan(DIAMOND, run(), ended, results_of({}))) == {}
    done = [task("a", S), task("b", S), task("c", S), task("d", S)]
    decided = plan(DIAMOND, run(), done, results_of({}))
    assert decided.outcome == ("succeeded", None)


def test_a_failure_skips_what_follows_while_the_other_branch_finishes():
    going = plan(DIAMOND, run(), [task("a", S), task("b", F), task("c", Q)], results_of({}))
    assert states(going) == {"a": "succeeded", "b": "failed", "c": "running", "d": "skipped"}
    assert going.outcome is None  # c still runs
    ended = plan(DIAMOND, run(), [task("a", S), task("b", F), task("c", S)], results_of({}))
    assert ended.outcome is not None and ended.outcome[0] == "failed"
    assert "step b: task" in ended.outcome[1] and "ended FAILED" in ended.outcome[1]
    assert ended.steps["d"].reason == "step b did not succeed"


def test_a_rerun_makes_only_what_did_not_succeed_in_the_new_round():
    tasks = [task("a", S), task("b", F), task("c", S)]
    decided = plan(DIAMOND, run(round_=2), tasks, results_of({("a", 0): {"GREETING": "yo"}}))
    assert list(made(decided)) == ["b"]
    assert made(decided)["b"][0][1]["G"] == "yo!"
    # b failed again in round 2: not made a third time
    again = plan(DIAMOND, run(round_=2), [*tasks, task("b", F, round_=2)], results_of({}))
    assert made(again) == {} and again.outcome is not None and again.outcome[0] == "failed"
    fixed = plan(DIAMOND, run(round_=2), [*tasks, task("b", S, round_=2)], results_of({}))
    assert list(made(fixed)) == ["d"]


def test_a_stopped_run_makes_nothing_and_shows_its_steps():
    decided = plan(DIAMOND, run(state="stopped"), [task("a", TaskState.STOPPED)],
                   results_of({}))
    assert made(decided) == {} and decided.outcome is None
    assert states(decided)["a"] == "stopped" and states(decided)["b"] == "skipped"


FAN = parse_workflow_text(
    '[steps.list]\ncommand = "l"\n'
    '[steps.each]\ncommand = "e"\nafter = ["list"]\neach = "{{ ITEMS }}"\n'
    'environment = { WHAT = "item {{ ITEM }} at {{ ITEM_INDEX }}" }\n'
    '[steps.sum]\ncommand = "s"\nafter = ["each"]\n', "fan", "f.toml")


def test_a_fanned_step_makes_one_task_per_item_and_the_next_gets_lists():
    listed = results_of({("list", 0): {"ITEMS": ["a", 2, {"k": 1}]}})
    decided = plan(FAN, run(), [task("list", S)], listed)
    items = made(decided)["each"]
    assert [(i, e["ITEM"], e["ITEM_INDEX"]) for i, e in items] == [
        (0, "a", "0"), (1, "2", "1"), (2, '{"k": 1}', "2")]
    assert items[0][1]["WHAT"] == "item a at 0"
    each = [task("each", S, item=i, task_id=100 + i) for i in range(3)]
    found = {("list", 0): {"ITEMS": ["a", 2, {"k": 1}]}, ("each", 0): {"V": 1},
             ("each", 2): {"V": 3, "W": True}}
    gathered = plan(FAN, run(), [task("list", S), *each], results_of(found))
    sum_env = made(gathered)["sum"][0][1]
    assert (sum_env["V"], sum_env["W"]) == ("[1, null, 3]", "[null, null, true]")
    assert "ITEM" not in sum_env


def test_one_failed_item_fails_the_step_once_the_others_ended_and_a_rerun_redoes_it_alone():
    each = [task("each", S, item=0, task_id=100), task("each", F, item=1, task_id=101),
            task("each", Q, item=2, task_id=102)]
    listed = results_of({("list", 0): {"ITEMS": ["a", "b", "c"]}})
    assert states(plan(FAN, run(), [task("list", S), *each], listed))["each"] == "running"
    each[2] = task("each", S, item=2, task_id=102)
    ended = plan(FAN, run(), [task("list", S), *each], listed)
    assert states(ended)["each"] == "failed" and "task 101" in ended.steps["each"].reason
    again = plan(FAN, run(round_=2), [task("list", S), *each], listed)
    assert [i for i, _ in made(again)["each"]] == [1]


def test_an_empty_list_succeeds_without_tasks_and_the_run_goes_on():
    decided = plan(FAN, run(), [task("list", S)], results_of({("list", 0): {"ITEMS": []}}))
    assert states(decided)["each"] == "succeeded" and list(made(decided)) == ["sum"]


def test_a_missing_variable_or_bad_results_fail_the_step_with_the_reason():
    missing = plan(FAN, run(), [task("list", S)], results_of({}))
    assert states(missing)["each"] == "failed"
    assert "{{ ITEMS }} is not set" in missing.steps["each"].reason
    assert missing.outcome is not None and missing.outcome[0] == "failed"
    bad = plan(FAN, run(), [task("list", S)],
               results_of({("list", 0): ValueError("results of task 1: not JSON")}))
    assert states(bad)["list"] == "failed" and "not JSON" in bad.steps["list"].reason
    assert states(bad)["each"] == "skipped"


def test_a_removed_task_fails_its_step():
    decided = plan(DIAMOND, run(), [task("a", None)], results_of({}))
    assert "was removed" in decided.steps["a"].reason


@pytest.mark.parametrize(("text", "items"), [
    ('["a", "b"]', ["a", "b"]),
    ("[1, 2.5, null]", ["1", "2.5", "null"]),
    ("x\n\n y \nz", ["x", "y", "z"]),
    ("", []),
    ("one", ["one"]),
])
def test_a_list_is_json_or_one_item_a_line(text, items):
    assert split_list(text, "L") == items


def test_a_list_that_is_not_json_or_too_long_is_refused():
    with pytest.raises(StepFailed, match="not a JSON list"):
        split_list("[1, 2", "L")
    with pytest.raises(StepFailed, match="10000 at most"):
        split_list("\n".join(map(str, range(10_001))), "L")


def test_a_type_step_is_given_its_own_environment_and_the_run_variables_its_type_takes():
    workflow = parse_workflow_text('[steps.a]\ntype = "t"\nenvironment = { OWN = "1" }\n',
                                   "w", "w.toml")
    step = workflow.steps[0]
    # TAKEN and OTHER are the run's; RESULT a result the type also takes: not by name alone,
    # and a result named as a run variable (TAKEN, overwritten in `values`) does not replace it
    given = task_environment(workflow, step, {"OWN": "1", "TAKEN": "injected", "OTHER": "3",
                                              "RESULT": "4"},
                             lambda _type, name: name in ("TAKEN", "RESULT"),
                             run(TAKEN="2", OTHER="3"))
    assert given == {"OWN": "1", "TAKEN": "2"}


def test_a_fanned_item_gets_its_item_not_the_whole_list_and_sizes_are_bounded():
    listed = results_of({("list", 0): {"ITEMS": ["a", "b"], "BIG": "x" * 200_000}})
    decided = plan(FAN, run(), [task("list", S)], listed)
    assert states(decided)["each"] == "failed"
    assert "variable BIG is 200004 bytes" in decided.steps["each"].reason
    fine = plan(FAN, run(), [task("list", S)], results_of({("list", 0): {"ITEMS": ["a"]}}))
    assert "ITEMS" not in made(fine)["each"][0][1]


def test_a_rerun_whose_list_changed_fails_the_step_instead_of_guessing():
    each = [task("each", F, item=0, task_id=100), task("each", S, item=1, task_id=101)]
    longer = results_of({("list", 0): {"ITEMS": ["a", "b", "c"]}})
    decided = plan(FAN, run(round_=2), [task("list", S), *each], longer)
    assert made(decided) == {} and "has 3 items now, 2 when it first ran" in \
        decided.steps["each"].reason


def test_an_item_that_is_no_unicode_text_fails_the_step():
    with pytest.raises(StepFailed, match="lone surrogate"):
        split_list('["\\ud800"]', "L")
