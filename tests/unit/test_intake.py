"""Intake's rules: the file-name guard, request parsing, environments, and which queued task
a worker may claim (against a real SQLite store)."""

from __future__ import annotations

import io
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blanket.config.tasktype import RequiredVariable, TaskType
from blanket.durations import parse_duration
from blanket.errors import DuplicateTask, InvalidInput
from blanket.models import MAX_PRIORITY
from blanket.server.intake import (
    Intake,
    TaskRequest,
    Upload,
    check_file_name,
    clean_environment,
    parse_task_request,
)
from blanket.store.base import Claim, NewTask
from blanket.store.sqlite import SQLiteStore
from blanket.taskdir import RESERVED_NAMES

NOW = 1_800_000_000.0

# --- the file-name guard --------------------------------------------------------------------

CONTROL = [chr(c) for c in [*range(32), 127]]
# Hypothesis also tries strings it finds in the code under test, such as the runner's own
# file names, which an upload may not take.
plain_names = st.text(string.ascii_letters + string.digits + "_-. ", min_size=1, max_size=60
                      ).filter(lambda n: n not in (".", "..") and not n.startswith("..")
                               and n not in RESERVED_NAMES)


@given(st.text(max_size=20), st.sampled_from(["/", "\\", *CONTROL]), st.text(max_size=20))
def test_a_name_with_a_separator_or_control_character_is_refused(before, bad, after):
    with pytest.raises(InvalidInput):
        check_file_name(before + bad + after)


@pytest.mark.parametrize("name", [".", "..", "", "../x", "/etc/passwd", "a/../../b"])
def test_names_that_leave_the_directory_are_refused(name):
    with pytest.raises(InvalidInput):
        check_file_name(name)


@given(plain_names)
def test_plain_names_are_accepted_as_they_are(name):
    assert check_file_name(name) == name


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
               min_size=1, max_size=40).filter(
    lambda n: not n.startswith("..") and n != "." and n not in RESERVED_NAMES))
def test_unicode_names_without_separators_are_accepted(name):
    assert check_file_name(name) == name


def test_a_name_over_255_bytes_is_refused():
    with pytest.raises(InvalidInput, match="255"):
        check_file_name("é" * 128)


# --- request parsing and environments ------------------------------------------------------

def test_request_tags_may_be_a_comma_separated_string():
    assert parse_task_request({"type": "t", "tags": "a, b"}, NOW).tags == ("a", "b")


def test_relative_not_before_counts_from_now():
    assert parse_task_request({"type": "t", "not_before": "+2h"}, NOW).not_before == NOW + 7200


def test_not_before_without_an_offset_is_refused():
    with pytest.raises(InvalidInput, match="offset"):
        parse_task_request({"type": "t", "not_before": "2030-01-01T00:00:00"}, NOW)


@pytest.mark.parametrize("priority", [MAX_PRIORITY + 1, -MAX_PRIORITY - 1, True, 1.5, "1"])
def test_priority_out_of_range_or_not_an_integer_is_refused(priority):
    with pytest.raises(InvalidInput, match="priority"):
        parse_task_request({"type": "t", "priority": priority}, NOW)


NEEDS = TaskType(name="needs", command="true", defaults={"COLOR": "blue", "N": "1"},
                 required=(RequiredVariable("N", "how many", "integer"),
                           RequiredVariable("RATIO", "a ratio", "number"),
                           RequiredVariable("ON", "a switch", "boolean")))


def test_environment_is_defaults_then_submitted_values_as_strings():
    values = clean_environment(NEEDS, {"N": 5, "RATIO": 0.5, "ON": True, "COLOR": "red"})
    assert values == {"COLOR": "red", "N": "5", "RATIO": "0.5", "ON": "true"}


def test_a_default_satisfies_a_required_variable():
    assert clean_environment(NEEDS, {"RATIO": "1e3", "ON": "no"})["N"] == "1"


def test_missing_required_variables_are_named_with_their_descriptions():
    with pytest.raises(InvalidInput, match=r"RATIO \(a ratio\); ON \(a switch\)"):
        clean_environment(NEEDS, {})


@pytest.mark.parametrize(("name", "value"), [("N", "five"), ("RATIO", "half"), ("ON", "maybe")])
def test_a_required_value_of_the_wrong_type_is_refused(name, value):
    good = {"N": 1, "RATIO": 1, "ON": "yes"}
    with pytest.raises(InvalidInput, match=name):
        clean_environment(NEEDS, {**good, name: value})


def test_a_nul_in_a_value_is_refused():
    with pytest.raises(InvalidInput, match="NUL"):
        clean_environment(NEEDS, {"N": 1, "RATIO": 1, "ON": 1, "COLOR": "a\x00b"})


@pytest.mark.parametrize(("request_data", "field"), [
    ({"type": "a\ud800b"}, '"type"'),
    ({"type": "t", "environment": {"MSG": "a\ud800b"}}, '"environment" MSG'),
    ({"type": "t", "environment": {"M\udfffSG": "x"}}, 'a name in "environment"'),
    ({"type": "t", "tags": ["unix", "g\ud800pu"]}, '"tags"'),
    ({"type": "t", "tags": "unix,\ud800"}, '"tags"'),
])
def test_text_that_is_not_unicode_is_refused_naming_its_field(request_data, field):
    with pytest.raises(InvalidInput, match="lone surrogate") as refused:
        parse_task_request(request_data, NOW)
    assert refused.value.message.startswith(field)


def test_an_uploaded_file_name_that_is_not_unicode_is_refused():
    with pytest.raises(InvalidInput, match="the name of an uploaded file holds a lone surrogate"):
        check_file_name("scan\udcff.pdf")


# --- eligibility: which task a claim takes --------------------------------------------------

TAGS = ["a", "b", "c"]
LIMITS = {"capped": 1}
queued = st.fixed_dictionaries({
    "type": st.sampled_from(["free", "capped"]),
    "tags": st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    "not_before": st.sampled_from([None, NOW - 60, NOW + 60]),
    "score": st.integers(0, 20).map(float),
})


def add(store: SQLiteStore, type_name: str, tags=(), score: float = 0.0,
        not_before: float | None = None) -> int:
    return store.add_task(NewTask(type=type_name, environment={}, tags=tuple(sorted(tags)),
                                  score=score, added=NOW, not_before=not_before)).id


def eligible(task: dict, worker_tags: set[str], running: dict[str, int]) -> bool:
    under_cap = running.get(task["type"], 0) < LIMITS.get(task["type"], 10**9)
    started = task["not_before"] is None or task["not_before"] <= NOW
    return set(task["tags"]) <= worker_tags and started and under_cap


@settings(max_examples=150, deadline=None)
@given(st.lists(queued, max_size=12), st.sets(st.sampled_from(TAGS)), st.integers(0, 1))
def test_a_claim_takes_the_lowest_scored_eligible_task(tasks, worker_tags, capped_running):
    store = SQLiteStore(":memory:")
    for _ in range(capped_running):  # an attempt of "capped" already holds its only slot
        add(store, "capped", score=-1.0)
        store.claim_task(Claim("busy", frozenset(TAGS), {}, NOW))
    ids = [add(store, t["type"], t["tags"], t["score"], t["not_before"]) for t in tasks]
    running = {"capped": capped_running}
    candidates = [(t["score"], i) for t, i in zip(tasks, ids, strict=True)
                  if eligible(t, worker_tags, running)]
    claimed = store.claim_task(Claim("w", frozenset(worker_tags), LIMITS, NOW))
    assert (claimed.id if claimed else None) == (min(candidates)[1] if candidates else None)
    store.close()


def test_a_claimed_task_is_not_claimed_again():
    store = SQLiteStore(":memory:")
    task_id = add(store, "free")
    assert store.claim_task(Claim("w1", frozenset(), {}, NOW)).id == task_id
    assert store.claim_task(Claim("w2", frozenset(), {}, NOW)) is None


class OneType:
    """The intake's view of a catalog holding one type, demo."""

    def current_type(self, name: str) -> TaskType | None:
        return TaskType(name="demo", command="true") if name == "demo" else None

    def type_names(self) -> list[str]:
        return ["demo"]

    def base_names(self) -> list[str]:
        return []


def test_a_task_s_uploads_are_in_its_folder_before_a_worker_can_claim_it(tmp_path):
    store = SQLiteStore(tmp_path / "b.db")
    intake = Intake(store, OneType(), tmp_path)
    found: list[bool] = []

    def woken(*topics: str) -> None:  # what a waiting worker does the moment it is woken
        claimed = store.claim_task(Claim("w", frozenset(), {}, time.time() + 1))
        found.append((intake.task_dir("demo", claimed.id) / "in.txt").read_bytes() == b"hi")

    store.on_change = woken
    intake.submit(TaskRequest(type="demo", environment={},
                              uploads=(Upload("in.txt", io.BytesIO(b"hi")),)))
    assert found == [True]
    store.close()


def test_uploads_whose_task_is_refused_leave_nothing_behind(tmp_path):
    store = SQLiteStore(tmp_path / "b.db")
    intake = Intake(store, OneType(), tmp_path)
    request = TaskRequest(type="demo", environment={}, dedupe_key="k",
                          uploads=(Upload("in.txt", io.BytesIO(b"hi")),))
    first = intake.submit(request)
    again = TaskRequest(type="demo", environment={}, dedupe_key="k",
                        uploads=(Upload("in.txt", io.BytesIO(b"other")),))
    with pytest.raises(DuplicateTask):
        intake.submit(again)
    assert not any(intake.staging_dir.iterdir())
    assert (intake.task_dir("demo", first.id) / "in.txt").read_bytes() == b"hi"
    store.close()


@pytest.mark.parametrize("value, expected", [
    (None, ()), ("", ()), ([3, 1, 3], (3, 1)), ("12, 13", (12, 13)),
])
def test_after_is_a_list_of_ids_or_text(value, expected):
    from blanket.server.intake import after_field
    assert after_field(value) == expected


@pytest.mark.parametrize("value, expected", [
    (["x"], "must be a list of task ids"), ([True], "must be a list of task ids"),
    ([0], "must be a list of task ids"), ("1,x", "is not a list of task ids"),
    (list(range(1, 1002)), "at most 1000"), ({"a": 1}, "must be a list of task ids"),
])
def test_a_wrong_after_says_what_to_write(value, expected):
    from blanket.errors import InvalidInput
    from blanket.server.intake import after_field
    with pytest.raises(InvalidInput, match=expected):
        after_field(value)


@pytest.mark.parametrize(("key", "most"), [("timeout", "366d"), ("retry_delay", "7d")])
def test_a_submission_s_own_durations_are_bounded_as_in_a_type_file(key, most):
    """A task's own timeout and retry delay: at most what a type file may say (a year, a
    week), also for a type with no timeout of its own to bound it."""
    asked = parse_task_request({"type": "t", key: most}, NOW)
    assert getattr(asked, key) == parse_duration(most)
    with pytest.raises(InvalidInput, match=f"\"{key}\" '{most}1s' is too long; the most "
                                           f"is {most}"):
        parse_task_request({"type": "t", key: most + "1s"}, NOW)
