"""A submission's own timeout, retries and retry delay: within its type's max_timeout and
max_retries, or, without them, only lower than the type's own; refused saying what to do."""

from __future__ import annotations

import pytest

from blanket.config.tasktype import TaskType
from blanket.errors import InvalidInput
from blanket.server.intake import TaskRequest, own_limits, parse_task_request

TYPE = TaskType(name="t", command="true", timeout=60.0, retries=2, retry_delay=5.0)


def limits(task_type: TaskType = TYPE, **asked: object):
    return own_limits(task_type, TaskRequest(type="t", environment={}, **asked))


def test_nothing_asked_is_the_types():
    assert limits() == (60.0, 2, 5.0)


def test_without_bounds_a_task_may_only_lower_its_types_values():
    assert limits(timeout=10.0, retries=0, retry_delay=1.0) == (10.0, 0, 1.0)
    with pytest.raises(InvalidInput, match=r"more than type 't' allows \(60s, its timeout\)"):
        limits(timeout=61.0)
    with pytest.raises(InvalidInput, match=r"\(2, its retries\).*raise max_retries"):
        limits(retries=3)


def test_the_types_max_bounds_what_a_task_may_ask():
    bounded = TaskType(name="t", command="true", timeout=60.0, retries=0, max_timeout=3600.0,
                       max_retries=5)
    assert limits(bounded, timeout=1800.0, retries=5) == (1800.0, 5, 0.0)
    with pytest.raises(InvalidInput, match="its max_timeout"):
        limits(bounded, timeout=3601.0)
    with pytest.raises(InvalidInput, match="its max_retries"):
        limits(bounded, retries=6)


def test_a_type_without_a_timeout_lets_a_task_set_any():
    free = TaskType(name="t", command="true")
    assert limits(free, timeout=7200.0)[0] == 7200.0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("timeout", "soon", "not a duration"),
    ("timeout", 0, "more than 0"),
    ("retries", -1, "whole number from 0 to 1000"),
    ("retries", 1.5, "whole number"),
    ("retries", True, "whole number"),
    ("retry_delay", "30d", "too long; the most is 7d"),
])
def test_wrong_values_are_refused_naming_the_field(field: str, value: object, message: str):
    with pytest.raises(InvalidInput, match=message):
        parse_task_request({"type": "t", field: value}, now=0.0)


def test_durations_are_read_as_people_write_them():
    request = parse_task_request({"type": "t", "timeout": "5m", "retry_delay": 30}, now=0.0)
    assert (request.timeout, request.retry_delay, request.retries) == (300.0, 30.0, None)
