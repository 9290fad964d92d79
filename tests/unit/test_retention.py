"""Which ended tasks go, given the settings, the type file and the schedule file."""

from __future__ import annotations

from pathlib import Path

import pytest

from blanket.config.problems import ConfigInvalid
from blanket.config.retention import Retention
from blanket.config.schedule import parse_schedule_text
from blanket.config.settings import load_settings
from blanket.config.typefile import parse_type_file
from blanket.models import TaskState
from blanket.server.retention import RetentionRules
from blanket.store.base import Ended

DAY = 86400.0
NOW = 1_000 * DAY


def ended(task_id: int = 1, days_ago: float = 0.0, state: TaskState = TaskState.SUCCESS,
          type: str = "echo", schedule: str | None = None) -> Ended:
    return Ended(task_id, type, schedule, state, NOW - days_ago * DAY)


def no_count(group: tuple[str, str], keep: int) -> int | None:
    raise AssertionError("no keep_last applies here")


def goes(rules: RetentionRules, task: Ended, cutoff=no_count) -> str | None:
    return rules.why_it_goes(task, NOW, cutoff)


def test_nothing_goes_unless_configured() -> None:
    rules = RetentionRules(Retention())
    assert not rules.configured()
    assert rules.until(NOW) is None
    assert goes(rules, ended(days_ago=10_000)) is None


def test_keep_finished_lets_tasks_go_once_they_ended_longer_ago() -> None:
    rules = RetentionRules(Retention(keep=30 * DAY))
    assert goes(rules, ended(days_ago=31)) == "keep"
    assert goes(rules, ended(days_ago=29)) is None
    assert goes(rules, ended(days_ago=31, state=TaskState.STOPPED)) == "keep"
    assert rules.until(NOW) == NOW - 30 * DAY


def test_failed_tasks_go_by_keep_failed_alone() -> None:
    rules = RetentionRules(Retention(keep=7 * DAY, keep_failed=90 * DAY, keep_last=1),
                           {"echo": Retention()})
    for state in (TaskState.FAILED, TaskState.TIMEDOUT):
        assert goes(rules, ended(days_ago=30, state=state)) is None
        assert goes(rules, ended(days_ago=91, state=state)) == "keep_failed"
    assert goes(rules, ended(days_ago=8)) == "keep"


def test_without_keep_failed_failures_go_like_the_rest() -> None:
    rules = RetentionRules(Retention(keep=7 * DAY))
    assert goes(rules, ended(days_ago=8, state=TaskState.FAILED)) == "keep"


def test_a_type_file_overrides_the_settings_key_by_key() -> None:
    rules = RetentionRules(Retention(keep=30 * DAY, keep_failed=90 * DAY),
                           {"echo": Retention(keep=7 * DAY)})
    assert goes(rules, ended(days_ago=8)) == "keep"
    assert goes(rules, ended(days_ago=8, type="other")) is None
    assert goes(rules, ended(days_ago=60, state=TaskState.FAILED)) is None  # settings' 90d


def test_a_schedule_file_overrides_its_type_for_the_tasks_it_made() -> None:
    rules = RetentionRules(Retention(), {"echo": Retention(keep=7 * DAY)},
                           {"nightly": Retention(keep=1 * DAY)})
    assert goes(rules, ended(days_ago=2, schedule="nightly")) == "keep"
    assert goes(rules, ended(days_ago=2)) is None
    assert goes(rules, ended(days_ago=2, schedule="other")) is None


def test_a_type_gone_from_the_config_falls_under_the_settings() -> None:
    rules = RetentionRules(Retention(keep=30 * DAY), {"echo": Retention(keep=400 * DAY)})
    assert goes(rules, ended(days_ago=31, type="removed")) == "keep"


def test_keep_last_lets_go_the_tasks_past_the_newest_n_of_their_group() -> None:
    asked = []

    def cutoff(group: tuple[str, str], keep: int) -> int | None:
        asked.append((group, keep))
        return 10  # the newest `keep` of the group all have ids above 10

    rules = RetentionRules(Retention(keep_last=1000), {"echo": Retention(keep_last=5)},
                           {"nightly": Retention(keep_last=2)})
    assert goes(rules, ended(task_id=10), cutoff) == "keep_last"
    assert goes(rules, ended(task_id=11), cutoff) is None
    assert goes(rules, ended(task_id=3, schedule="nightly"), cutoff) == "keep_last"
    assert goes(rules, ended(task_id=3, type="other"), cutoff) == "keep_last"
    assert asked == [(("type", "echo"), 5), (("type", "echo"), 5),
                     (("schedule", "nightly"), 2), (("type", "other"), 1000)]
    assert rules.counting_schedules() == ["nightly"]
    assert rules.until(NOW) == NOW  # any recent task may be past the count


def test_a_group_with_fewer_tasks_than_keep_last_keeps_them_all() -> None:
    rules = RetentionRules(Retention(keep_last=3))
    assert goes(rules, ended(task_id=1), lambda group, keep: None) is None


def test_until_is_the_shortest_age_kept_anywhere() -> None:
    rules = RetentionRules(Retention(keep=30 * DAY), {"a": Retention(keep=DAY)},
                           {"s": Retention(keep_failed=2 * DAY)})
    assert rules.until(NOW) == NOW - DAY


def test_the_rules_are_read_from_settings_types_and_schedules(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_text('command = "true"\nkeep = "7d"\nkeep_failed = "90d"\nkeep_last = 100\n')
    task_type = parse_type_file(path)
    assert (task_type.keep, task_type.keep_failed, task_type.keep_last) == (7 * DAY, 90 * DAY,
                                                                            100)
    schedule = parse_schedule_text('type = "echo"\nevery = "1h"\nkeep = "1d"\n', "s", "s.toml")
    settings = load_settings(tmp_path / "none.toml", environ={
        "BLANKET_KEEP_FINISHED": "30d", "BLANKET_KEEP_PER_TYPE": "1000"})
    rules = RetentionRules.of(settings.keep_finished, settings.keep_failed,
                              settings.keep_per_type, [("echo", task_type)], [("s", schedule)])
    assert rules.policy("echo", "s").keep == DAY
    assert rules.policy("echo", None).keep_last == 100
    assert rules.policy("other", None).keep == 30 * DAY
    assert rules.policy("other", None).keep_last == 1000


def test_a_type_json_carries_its_keys_and_a_worker_reads_a_newer_servers_json() -> None:
    from blanket.config.tasktype import TaskType
    data = TaskType("t", "true", keep=60.0).to_json()
    assert data["keep"] == 60.0
    assert TaskType.from_json({**data, "from_a_newer_server": 1}).keep == 60.0


@pytest.mark.parametrize(("line", "message"), [
    ('keep = "soon"', "keep: 'soon' is not a duration"),
    ('keep = "30"', "keep: '30' is too short; the least is 60s"),
    ("keep_failed = -1", "keep_failed: -1 is negative"),
    ("keep_last = 0", "keep_last: 0 is too small; the least is 1"),
    ('keep_last = "many"', "keep_last: expected a whole number of 1 or more"),
    ('kept = "7d"', "unknown key 'kept'; did you mean 'keep'?"),
])
def test_bad_keep_values_in_a_type_file_say_where(tmp_path: Path, line: str,
                                                  message: str) -> None:
    path = tmp_path / "echo.toml"
    path.write_text(f'description = "x"\ncommand = "true"\n{line}\n')
    with pytest.raises(ConfigInvalid) as caught:
        parse_type_file(path)
    [problem] = caught.value.problems
    assert problem.line == 3 and message in problem.message, str(problem)
    assert str(problem).startswith(f"{path}:3"), str(problem)


def test_bad_keep_values_in_a_schedule_file_say_where() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        parse_schedule_text('type = "echo"\nevery = "1h"\nkeep_last = 1.5\n', "s", "s.toml")
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == ("s.toml", 3)
    assert "keep_last: expected a whole number" in problem.message


@pytest.mark.parametrize(("key", "value", "message"), [
    ("BLANKET_KEEP_FINISHED", "30", "too short; the least is 60s"),
    ("BLANKET_KEEP_FAILED", "later", "not a duration"),
    ("BLANKET_KEEP_PER_TYPE", "0", "a whole number of 1 or more"),
    ("BLANKET_KEEP_PER_TYPE", "1e3", "a whole number of 1 or more"),
    ("BLANKET_PRUNE_INTERVAL", "0", "too short; the least is 1s"),
])
def test_bad_retention_settings_name_the_setting(tmp_path: Path, key: str, value: str,
                                                 message: str) -> None:
    from blanket.errors import InvalidInput
    with pytest.raises(InvalidInput, match=message) as caught:
        load_settings(tmp_path / "none.toml", environ={key: value})
    assert key.removeprefix("BLANKET_").lower() in str(caught.value)


def test_a_bad_retention_setting_in_the_file_names_its_line(tmp_path: Path) -> None:
    from blanket.errors import InvalidInput
    settings = tmp_path / "blanket.toml"
    settings.write_text('port = 8773\nkeep_finished = "30"\n')
    with pytest.raises(InvalidInput, match=rf"^{settings}:2: setting keep_finished: '30' is "
                                           "too short"):
        load_settings(settings, environ={})
