"""Schedules: parsing conf.d/schedules/NAME.toml and the rules of when they fire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given
from hypothesis import strategies as st

from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.schedule import (
    Schedule,
    due_runs,
    fire_times,
    next_fire,
    overlap_decision,
    parse_schedule_file,
    parse_schedule_text,
)

FILE = "conf.d/schedules/nightly.toml"
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> float:
    """Unix time of an ISO 8601 date-time with an offset."""
    return datetime.fromisoformat(text).timestamp()


def local(ts: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat()


def parse(text: str) -> Schedule:
    return parse_schedule_text(text, "nightly", FILE)


def problems(text: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigInvalid) as caught:
        parse(text)
    return caught.value.problems


def only_problem(text: str) -> ConfigProblem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def cron(expression: str, zone: str = "UTC", **fields) -> Schedule:
    return Schedule(name="s", type="report", cron=expression, timezone=zone, **fields)


def every(seconds: float, **fields) -> Schedule:
    return Schedule(name="s", type="report", every=seconds, **fields)


# ---------------------------------------------------------------- parsing


def test_parses_every_key():
    schedule = parse("""
        command = "make report"
        cron = "30 2 * * *"
        timezone = "Europe/Paris"
        missed = "all"
        max_missed = 5
        overlap = "queue"
        start = 2026-01-01T00:00:00Z
        end = "2027-01-01"
        enabled = false
        priority = 3
        tags = ["unix"]
        executor = "sh"
        description = "nightly numbers"
        [environment]
        TARGET = "weekly"
    """)
    assert schedule == Schedule(
        name="nightly", command="make report", cron="30 2 * * *", timezone="Europe/Paris",
        missed="all", max_missed=5, overlap="queue",
        start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2027, 1, 1, tzinfo=PARIS),
        enabled=False, priority=3, tags=("unix",), executor="sh",
        description="nightly numbers", environment={"TARGET": "weekly"},
    )


def test_defaults_for_a_minimal_type_schedule():
    schedule = parse('type = "report"\nevery = "15m"\n')
    assert schedule == Schedule(name="nightly", type="report", every=900.0)
    assert (schedule.timezone, schedule.missed, schedule.overlap) == ("UTC", "skip", "skip")
    assert schedule.executor is None


def test_command_schedule_runs_with_bash_by_default():
    assert parse('command = "date"\nevery = 60\n').executor == "bash"


def test_naive_start_is_read_in_the_schedule_time_zone():
    schedule = parse('type = "r"\nevery = "1h"\ntimezone = "Europe/Paris"\n'
                     'start = 2026-07-01T08:00:00\n')
    assert schedule.start == datetime(2026, 7, 1, 8, tzinfo=PARIS)
    assert schedule.start.timestamp() == at("2026-07-01T06:00:00+00:00")


def test_start_as_iso_string_with_offset_keeps_its_offset():
    schedule = parse('type = "r"\nevery = "1h"\ntimezone = "Europe/Paris"\n'
                     'start = "2026-07-01T08:00:00Z"\n')
    assert schedule.start.timestamp() == at("2026-07-01T08:00:00+00:00")


def test_environment_numbers_and_booleans_become_strings():
    schedule = parse('type = "r"\nevery = "1h"\n[environment]\nN = 3\nX = 1.5\nON = true\n')
    assert schedule.environment == {"N": "3", "X": "1.5", "ON": "true"}


def test_to_json_is_plain_json():
    schedule = parse('type = "r"\ncron = "0 * * * *"\nstart = 2026-01-01T00:00:00Z\n'
                     'tags = ["a"]\n[environment]\nA = "1"\n')
    data = json.loads(json.dumps(schedule.to_json()))
    assert data["start"] == "2026-01-01T00:00:00+00:00"
    assert data["end"] is None
    assert data["tags"] == ["a"]
    assert data["environment"] == {"A": "1"}
    assert data["name"] == "nightly"


def test_parse_schedule_file_names_the_file_in_problems(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_text('type = "r"\n')
    with pytest.raises(ConfigInvalid) as caught:
        parse_schedule_file(path, "nightly")
    assert caught.value.problems[0].file == str(path)


def test_parse_schedule_file_reads_a_valid_file(tmp_path):
    path = tmp_path / "nightly.toml"
    path.write_text('type = "r"\ncron = "@daily"\n')
    assert parse_schedule_file(path, "nightly").cron == "@daily"


def test_missing_file_is_a_problem_not_a_crash(tmp_path):
    with pytest.raises(ConfigInvalid, match="cannot read the file"):
        parse_schedule_file(tmp_path / "gone.toml", "gone")


# ---------------------------------------------------------------- validation messages


def test_toml_syntax_error_carries_its_line():
    problem = only_problem('type = "r"\ncron = "0 * * * *"\nevery = \n')
    assert problem.line == 3
    assert "not valid TOML" in problem.message


def test_unknown_key_lists_valid_keys_and_suggests_the_closest():
    problem = only_problem('type = "r"\nevery = "1h"\ntimezon = "UTC"\n')
    assert problem.line == 3
    assert "unknown key 'timezon'" in problem.message
    assert "did you mean 'timezone'" in problem.message
    assert "valid keys are: type, command, workflow, cron, every" in problem.message


def test_both_cron_and_every_is_an_error():
    problem = only_problem('type = "r"\ncron = "0 * * * *"\nevery = "1h"\n')
    assert "both 'cron' and 'every'" in problem.message
    assert problem.line == 3


def test_neither_cron_nor_every_is_an_error():
    assert "neither 'cron' nor 'every'" in only_problem('type = "r"\n').message


def test_both_type_and_command_is_an_error():
    problem = only_problem('type = "r"\ncommand = "date"\nevery = "1h"\n')
    assert "'type' and 'command' are all set; keep exactly one" in problem.message
    assert problem.line == 2


def test_a_workflow_is_a_third_thing_to_run_and_excludes_the_others():
    problem = only_problem('workflow = "w"\ntype = "r"\nevery = "1h"\n')
    assert "'type' and 'workflow' are all set" in problem.message
    parsed = parse_schedule_text('workflow = "w"\nevery = "1h"\n', "s", "s.toml")
    assert (parsed.workflow, parsed.type, parsed.command) == ("w", None, None)


def test_neither_type_nor_command_is_an_error():
    assert "none of 'type', 'command', 'workflow' is set" in \
        only_problem('every = "1h"\n').message


def test_invalid_cron_gives_croniter_reason_and_an_example():
    problem = only_problem('type = "r"\ncron = "61 * * * *"\n')
    assert problem.line == 2
    assert "cron: '61 * * * *' is not a cron expression" in problem.message
    assert "out of range" in problem.message
    assert "'30 2 * * *'" in problem.message


@pytest.mark.parametrize("expression, count", [("* * *", 3), ("0 0 0 * * * 2030", 7)])
def test_cron_with_wrong_field_count_says_how_many(expression, count):
    problem = only_problem(f'type = "r"\ncron = "{expression}"\n')
    assert f"it has {count} fields, expected 5 (or 6 with seconds first)" in problem.message


def test_cron_that_never_matches_is_an_error():
    assert "never matches" in only_problem('type = "r"\ncron = "0 0 30 2 *"\n').message


def test_unknown_cron_alias_lists_the_aliases():
    problem = only_problem('type = "r"\ncron = "@reboot"\n')
    assert "unknown alias '@reboot'" in problem.message
    assert "@daily" in problem.message


def test_unknown_time_zone_suggests_a_close_name():
    problem = only_problem('type = "r"\nevery = "1h"\n\ntimezone = "Europe/Pariss"\n')
    assert problem.line == 4
    assert "unknown time zone 'Europe/Pariss'" in problem.message
    assert "did you mean 'Europe/Paris'" in problem.message


@pytest.mark.parametrize("key, allowed", [("missed", "skip, once, all"),
                                          ("overlap", "skip, queue, allow")])
def test_bad_policy_lists_the_allowed_values(key, allowed):
    problem = only_problem(f'type = "r"\nevery = "1h"\n{key} = "sometimes"\n')
    assert problem.message == f"{key}: 'sometimes' is not allowed; use one of: {allowed}"
    assert problem.line == 3


def test_end_before_start_is_an_error():
    problem = only_problem('type = "r"\nevery = "1h"\nstart = 2026-06-01\nend = 2026-01-01\n')
    assert problem.line == 4
    assert "end: 2026-01-01T00:00:00+00:00 is not after start" in problem.message


def test_end_equal_to_start_is_an_error():
    assert "is not after start" in only_problem(
        'type = "r"\nevery = "1h"\nstart = 2026-06-01\nend = "2026-06-01T00:00:00Z"\n').message


def test_start_that_is_not_a_date_is_an_error():
    problem = only_problem('type = "r"\nevery = "1h"\nstart = "next monday"\n')
    assert "write a date or date-time such as 2026-01-01" in problem.message


def test_every_that_is_not_a_duration_is_an_error():
    problem = only_problem('type = "r"\nevery = "fortnightly"\n')
    assert problem.line == 2
    assert "not a duration" in problem.message


def test_every_below_one_second_is_an_error():
    assert "too short; the least is 1s" in only_problem('type = "r"\nevery = "500ms"\n').message


def test_executor_with_a_type_is_an_error():
    problem = only_problem('type = "r"\nevery = "1h"\nexecutor = "sh"\n')
    assert "executor: only applies with 'command'" in problem.message


@pytest.mark.parametrize("line, expected", [
    ("max_missed = 0", "max_missed: 0 is too small; the least is 1"),
    ("priority = \"high\"",
     "priority: expected a whole number from -10000 to 10000, got a string ('high')"),
    ("priority = 10001", "priority: 10001 is too large; the most is 10000"),
    ("enabled = \"yes\"", "enabled: expected true or false, got a string ('yes')"),
    ("tags = \"unix\"", "tags: expected a list of non-empty strings"),
    ("description = 3", "description: expected a non-empty string, got an integer (3)"),
])
def test_wrongly_typed_values_are_errors(line, expected):
    problem = only_problem(f'type = "r"\nevery = "1h"\n{line}\n')
    assert expected in problem.message
    assert problem.line == 3


def test_environment_value_must_be_a_string_or_number():
    problem = only_problem('type = "r"\nevery = "1h"\n[environment]\nLIST = [1, 2]\n')
    assert problem.line == 4
    assert problem.message == ("environment.LIST: expected a string, number or boolean, "
                               "got a list")  # not quoted: it may be a secret's


def test_environment_name_must_be_a_variable_name():
    problem = only_problem('type = "r"\nevery = "1h"\n[environment]\n"2BAD" = "x"\n')
    assert "'2BAD' is not a valid variable name" in problem.message


def test_every_problem_is_reported_at_once():
    found = problems('cron = "61 * * * *"\ntimezone = "Mars/Base"\nmissed = "x"\ncolour = 1\n')
    assert len(found) == 5
    assert all(p.file == FILE for p in found)


# ---------------------------------------------------------------- cron


def test_five_field_cron_fires_at_the_next_match():
    assert next_fire(cron("30 2 * * *"), at("2026-05-01T12:00:00+00:00")) == \
        at("2026-05-02T02:30:00+00:00")


def test_six_field_cron_has_seconds_first():
    assert next_fire(cron("15 30 2 * * *"), at("2026-05-01T12:00:00+00:00")) == \
        at("2026-05-02T02:30:15+00:00")


def test_cron_alias_fires():
    assert next_fire(cron("@hourly"), at("2026-05-01T12:00:01+00:00")) == \
        at("2026-05-01T13:00:00+00:00")


def test_next_fire_is_strictly_after_a_fire_time():
    assert next_fire(cron("0 * * * *"), at("2026-05-01T12:00:00+00:00")) == \
        at("2026-05-01T13:00:00+00:00")


def test_fire_times_excludes_after_and_includes_until():
    times = fire_times(cron("0 * * * *"), at("2026-05-01T10:00:00+00:00"),
                       at("2026-05-01T12:00:00+00:00"))
    assert times == [at("2026-05-01T11:00:00+00:00"), at("2026-05-01T12:00:00+00:00")]


def test_cron_fires_in_local_time():
    assert local(next_fire(cron("30 2 * * *", "Europe/Paris"), at("2026-07-01T12:00:00+00:00")),
                 PARIS) == "2026-07-02T02:30:00+02:00"


def test_paris_spring_forward_runs_a_missing_time_once_at_the_end_of_the_gap():
    times = fire_times(cron("30 2 * * *", "Europe/Paris"),
                       at("2026-03-28T00:00:00+01:00"), at("2026-03-31T00:00:00+02:00"))
    assert [local(t, PARIS) for t in times] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_paris_fall_back_runs_a_repeated_time_only_the_first_time():
    times = fire_times(cron("30 2 * * *", "Europe/Paris"),
                       at("2026-10-24T00:00:00+02:00"), at("2026-10-27T00:00:00+01:00"))
    assert [local(t, PARIS) for t in times] == [
        "2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_new_york_spring_forward_and_fall_back():
    schedule = cron("30 1,2 * * *", "America/New_York")
    spring = fire_times(schedule, at("2026-03-08T00:00:00-05:00"), at("2026-03-08T12:00:00-04:00"))
    fall = fire_times(schedule, at("2026-11-01T00:00:00-04:00"), at("2026-11-01T12:00:00-05:00"))
    assert [local(t, NEW_YORK) for t in spring] == [
        "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00"]
    assert [local(t, NEW_YORK) for t in fall] == [
        "2026-11-01T01:30:00-04:00", "2026-11-01T02:30:00-05:00"]


def test_daily_cron_fires_once_on_every_local_day_of_a_dst_year():
    times = fire_times(cron("30 2 * * *", "Europe/Paris"),
                       at("2026-01-01T00:00:00+01:00"), at("2027-01-01T00:00:00+01:00"))
    days = [datetime.fromtimestamp(t, PARIS).date() for t in times]
    assert len(days) == len(set(days)) == 365


def test_times_inside_the_gap_merge_into_one_fire_at_its_end():
    times = fire_times(cron("*/30 * * * *", "Europe/Paris"),
                       at("2026-03-29T01:15:00+01:00"), at("2026-03-29T03:45:00+02:00"))
    assert [local(t, PARIS) for t in times] == [
        "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]


def test_hourly_cron_does_not_repeat_wall_times_in_the_repeated_hour():
    times = fire_times(cron("0 * * * *", "Europe/Paris"),
                       at("2026-10-25T00:30:00+02:00"), at("2026-10-25T04:30:00+01:00"))
    assert [local(t, PARIS) for t in times] == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]


def test_next_fire_from_the_second_pass_of_the_repeated_hour_is_in_the_future():
    after = at("2026-10-25T02:10:00+01:00")
    assert local(next_fire(cron("30 2 * * *", "Europe/Paris"), after), PARIS) == \
        "2026-10-26T02:30:00+01:00"


# ---------------------------------------------------------------- intervals


def test_every_fifteen_minutes_is_anchored_at_the_epoch():
    times = fire_times(every(900), at("2026-05-01T12:07:00+00:00"),
                       at("2026-05-01T13:00:00+00:00"))
    assert [local(t, ZoneInfo("UTC"))[11:16] for t in times] == \
        ["12:15", "12:30", "12:45", "13:00"]


def test_every_is_anchored_at_start_when_given():
    schedule = every(3600, start=datetime(2026, 5, 1, 10, 7, tzinfo=UTC))
    assert fire_times(schedule, at("2026-05-01T00:00:00+00:00"),
                      at("2026-05-01T12:00:00+00:00")) == \
        [at("2026-05-01T10:07:00+00:00"), at("2026-05-01T11:07:00+00:00")]


def test_every_next_fire_is_strictly_after_a_fire_time():
    assert next_fire(every(60), 6000.0) == 6060.0


# ---------------------------------------------------------------- start, end, enabled


def test_cron_never_fires_before_start_and_fires_at_start_when_it_matches():
    schedule = cron("0 * * * *", start=datetime(2026, 5, 1, 10, tzinfo=UTC))
    assert next_fire(schedule, at("2026-01-01T00:00:00+00:00")) == at("2026-05-01T10:00:00+00:00")


def test_end_is_exclusive_and_nothing_fires_past_it():
    schedule = cron("0 * * * *", end=datetime(2026, 5, 1, 12, tzinfo=UTC))
    assert fire_times(schedule, at("2026-05-01T10:30:00+00:00"),
                      at("2026-05-01T14:00:00+00:00")) == [at("2026-05-01T11:00:00+00:00")]
    assert next_fire(schedule, at("2026-05-01T11:00:00+00:00")) is None


def test_disabled_schedule_never_fires():
    schedule = cron("* * * * *", enabled=False)
    now = at("2026-05-01T12:00:00+00:00")
    assert next_fire(schedule, now) is None
    assert fire_times(schedule, now, now + 3600) == []
    assert due_runs(schedule, now - 600, now) == ([], None)


# ---------------------------------------------------------------- due runs and restarts

HOURLY_STORED = at("2026-05-01T10:00:00+00:00")  # three fire times passed by NOW: 10, 11, 12
NOW = at("2026-05-01T12:30:00+00:00")
NEXT = at("2026-05-01T13:00:00+00:00")


def test_new_schedule_runs_nothing_and_is_never_backfilled():
    schedule = cron("0 * * * *", missed="all", start=datetime(2020, 1, 1, tzinfo=UTC))
    assert due_runs(schedule, None, NOW) == ([], NEXT)


def test_stored_next_fire_in_the_future_runs_nothing_and_is_kept():
    assert due_runs(cron("0 * * * *"), NEXT, NOW) == ([], NEXT)


@pytest.mark.parametrize("missed", ["skip", "once", "all"])
def test_an_on_time_fire_runs_under_every_policy(missed):
    now = HOURLY_STORED + 2
    assert due_runs(cron("0 * * * *", missed=missed), HOURLY_STORED, now) == \
        ([HOURLY_STORED], HOURLY_STORED + 3600)


def test_restart_three_periods_late_with_skip_runs_nothing():
    assert due_runs(cron("0 * * * *", missed="skip"), HOURLY_STORED, NOW) == ([], NEXT)


def test_restart_three_periods_late_with_once_runs_the_latest():
    assert due_runs(cron("0 * * * *", missed="once"), HOURLY_STORED, NOW) == \
        ([at("2026-05-01T12:00:00+00:00")], NEXT)


def test_restart_three_periods_late_with_all_runs_each_oldest_first():
    assert due_runs(cron("0 * * * *", missed="all"), HOURLY_STORED, NOW) == \
        ([HOURLY_STORED, HOURLY_STORED + 3600, HOURLY_STORED + 7200], NEXT)


def test_all_is_bounded_by_max_missed_keeping_the_most_recent():
    runs, _ = due_runs(cron("0 * * * *", missed="all", max_missed=2), HOURLY_STORED, NOW)
    assert runs == [HOURLY_STORED + 3600, HOURLY_STORED + 7200]


def test_max_missed_argument_overrides_the_schedule():
    runs, _ = due_runs(cron("0 * * * *", missed="all"), HOURLY_STORED, NOW, max_missed=1)
    assert runs == [HOURLY_STORED + 7200]


def test_all_after_a_long_outage_of_a_frequent_job_is_bounded_and_quick():
    stored = at("2025-05-01T00:00:00+00:00")
    runs, upcoming = due_runs(cron("* * * * * *", missed="all"), stored, NOW)
    assert runs == [NOW - 99 + i for i in range(100)]
    assert upcoming == NOW + 1


@pytest.mark.parametrize("late, runs", [(60, True), (61, False)])
def test_skip_runs_the_latest_only_within_the_lateness_window(late, runs):
    latest = at("2026-05-01T12:00:00+00:00")
    due, _ = due_runs(cron("0 * * * *", missed="skip"), HOURLY_STORED, latest + late)
    assert due == ([latest] if runs else [])


def test_missed_runs_stop_at_end():
    schedule = cron("0 * * * *", missed="all", end=datetime(2026, 5, 1, 11, 30, tzinfo=UTC))
    assert due_runs(schedule, HOURLY_STORED, NOW) == ([HOURLY_STORED, HOURLY_STORED + 3600], None)


def test_missed_interval_runs_with_all():
    schedule = every(600, missed="all")
    assert due_runs(schedule, 6000.0, 7250.0) == ([6000.0, 6600.0, 7200.0], 7800.0)


def test_missed_run_in_the_repeated_hour_is_found_from_its_second_pass():
    stored = at("2026-10-25T02:30:00+02:00")
    now = at("2026-10-25T02:10:00+01:00")  # later than stored, though the wall clock is earlier
    schedule = cron("30 2 * * *", "Europe/Paris", missed="once")
    assert due_runs(schedule, stored, now) == ([stored], at("2026-10-26T02:30:00+01:00"))


# ---------------------------------------------------------------- overlap


@pytest.mark.parametrize("overlap, running, decision", [
    ("skip", True, "skip"), ("queue", True, "queue"), ("allow", True, "run"),
    ("skip", False, "run"), ("queue", False, "run"), ("allow", False, "run"),
])
def test_overlap_decision(overlap, running, decision):
    assert overlap_decision(cron("0 * * * *", overlap=overlap), running) == decision


# ---------------------------------------------------------------- properties

FIELD = st.sampled_from(["*/7", "0", "5,35", "10-20", "*/15"])
HOURS = st.sampled_from(["*", "2", "*/5", "1-3", "0,12"])
DAYS = st.sampled_from(["*", "1", "15", "*/10"])
MONTHS = st.sampled_from(["*", "3", "10,11"])
WEEKDAYS = st.sampled_from(["*", "0", "1-5"])
EXPRESSIONS = st.builds(lambda *f: " ".join(f), FIELD, HOURS, DAYS, MONTHS, WEEKDAYS)
MOMENTS = st.floats(min_value=at("2000-01-01T00:00:00+00:00"),
                    max_value=at("2050-01-01T00:00:00+00:00"))
DST_CHANGES = st.sampled_from([
    at("2026-03-29T01:00:00+00:00"), at("2026-10-25T01:00:00+00:00"),  # Europe/Paris
    at("2026-03-08T07:00:00+00:00"), at("2026-11-01T06:00:00+00:00"),  # America/New_York
    at("2026-04-04T15:00:00+00:00"), at("2026-10-03T15:30:00+00:00"),  # Lord Howe (30 min)
])
NEAR_DST = st.builds(lambda change, shift: change + shift, DST_CHANGES,
                     st.floats(min_value=-86400, max_value=3600))
AFTERS = st.one_of(MOMENTS, NEAR_DST)
ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe"])


@given(EXPRESSIONS, MOMENTS)
def test_utc_next_fire_agrees_with_croniter(expression, after):
    expected = croniter(expression, datetime.fromtimestamp(after, UTC)).get_next(datetime)
    assert next_fire(cron(expression), after) == expected.timestamp()


@given(EXPRESSIONS, AFTERS, ZONES)
def test_fire_times_are_increasing_after_after_and_chain_next_fire(expression, after, zone):
    schedule = cron(expression, zone)
    until = after + timedelta(days=2).total_seconds()
    times = fire_times(schedule, after, until)
    assert all(a < b for a, b in zip([after, *times], times, strict=False))
    assert all(t <= until for t in times)
    chained, t = [], next_fire(schedule, after)
    while t is not None and t <= until:
        chained.append(t)
        t = next_fire(schedule, t)
    assert chained == times


@given(EXPRESSIONS, AFTERS, ZONES)
def test_fire_times_match_the_cron_on_local_wall_time_outside_gaps(expression, after, zone):
    schedule = cron(expression, zone)
    for t in fire_times(schedule, after, after + 86400 * 2):
        wall = datetime.fromtimestamp(t, ZoneInfo(zone))
        at_gap_end = wall.utcoffset() != datetime.fromtimestamp(t - 1, ZoneInfo(zone)).utcoffset()
        assert at_gap_end or croniter.match(expression, wall.replace(tzinfo=None))


@given(st.integers(min_value=1, max_value=86400 * 7), MOMENTS, MOMENTS)
def test_every_fires_on_its_grid_within_one_period(step, anchor, after):
    schedule = every(step, start=datetime.fromtimestamp(anchor, UTC))
    anchor = schedule.start.timestamp()  # datetimes keep microseconds only
    t = next_fire(schedule, after)
    assert t > after
    assert t >= anchor
    assert t - after <= step or t == anchor
    assert (t - anchor) / step == pytest.approx(round((t - anchor) / step), abs=1e-6)


@given(EXPRESSIONS, st.sampled_from(["skip", "once", "all"]), AFTERS,
       st.floats(min_value=0, max_value=86400 * 3))
def test_due_runs_are_past_and_the_stored_time_moves_into_the_future(expression, missed,
                                                                     stored, late):
    schedule = cron(expression, "Europe/Paris", missed=missed)
    now = stored + late
    runs, upcoming = due_runs(schedule, stored, now)
    assert all(stored <= t <= now for t in runs)
    assert runs == sorted(set(runs))
    assert upcoming is not None and upcoming > now
