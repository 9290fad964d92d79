"""`blanket workflow show`'s table: a step's tasks listed while there are few and all of them
are in the run's answer, else its items counted by state."""

from __future__ import annotations

from blanket.workflowcli import _print_run


def _run(step: dict) -> dict:
    return {"id": 1, "workflow": "w", "version": "0" * 64, "state": "running", "round": 2,
            "reason": None, "steps": [{"name": "a", "state": "running", "after": [],
                                       "reason": None, **step}]}


def test_a_step_with_few_tasks_lists_them(capsys):
    _print_run(_run({"item_count": 1, "item_states": {"QUEUED": 1}, "task_count": 2,
                     "tasks": [{"id": 7, "item": 0, "round": 1, "state": "STOPPED"},
                               {"id": 9, "item": 0, "round": 2, "state": "QUEUED"}]}))
    # the task's id marked as one (not read as a count), its state spelt as in the counts
    assert "#9 queued" in capsys.readouterr().out


def test_a_step_whose_tasks_are_not_all_shown_counts_its_items(capsys):
    # 101 rounds of one item: the answer holds the first 100 tasks, all stopped
    tasks = [{"id": n, "item": 0, "round": n, "state": "STOPPED"} for n in range(1, 101)]
    _print_run(_run({"item_count": 1, "item_states": {"QUEUED": 1}, "task_count": 101,
                     "tasks": tasks}))
    out = capsys.readouterr().out
    assert "1 items: 1 queued" in out and "STOPPED" not in out
