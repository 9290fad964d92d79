"""The queue's order as properties of the score: lower runs first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from blanket.server.pricing import FRONT, estimate_from_history, task_score

TEN_YEARS = 10 * 365 * 86400.0
NOW = 1_800_000_000.0

moments = st.floats(NOW - TEN_YEARS / 2, NOW + TEN_YEARS / 2)
estimates = st.none() | st.floats(0, 365 * 86400.0)
weights = st.integers(1, 100)
priorities = st.integers(-10_000, 10_000)


@given(moments, estimates, estimates, weights, priorities)
def test_a_shorter_estimate_never_scores_later(at, a, b, weight, priority):
    short, long = sorted((a or 0.0, b or 0.0))
    assert task_score(at, short, weight, priority) <= task_score(at, long, weight, priority)


@given(moments, estimates, weights, weights, priorities)
def test_a_higher_weight_never_scores_later(at, estimate, a, b, priority):
    light, heavy = sorted((a, b))
    assert task_score(at, estimate, heavy, priority) <= task_score(at, estimate, light, priority)


@given(moments, estimates, weights, priorities, priorities)
def test_a_higher_priority_never_scores_later(at, estimate, weight, a, b):
    low, high = sorted((a, b))
    assert task_score(at, estimate, weight, high) <= task_score(at, estimate, weight, low)


@given(moments, moments, estimates, weights, priorities)
def test_an_earlier_minute_never_scores_later(a, b, estimate, weight, priority):
    early, late = sorted((a, b))
    assert task_score(early, estimate, weight, priority) <= task_score(late, estimate, weight,
                                                                       priority)


@given(moments, estimates, weights, priorities, moments, estimates, weights, priorities)
def test_front_beats_every_normal_task(at, estimate, weight, priority, at2, estimate2, weight2,
                                       priority2):
    front = task_score(at, estimate, weight, priority, front=True)
    assert front < task_score(at2, estimate2, weight2, priority2)


def test_every_task_costs_at_least_one_minute():
    assert task_score(NOW, None) == NOW // 60 + 1
    assert task_score(NOW, 30.0) == NOW // 60 + 1


def test_seed_formula_minute_plus_estimate_minutes_over_weight():
    assert task_score(NOW, 600.0, weight=2) == NOW // 60 + 5
    assert task_score(NOW, 600.0, weight=2, priority=3) == NOW // 60 + 2
    assert task_score(NOW, 600.0, front=True) == NOW // 60 + 10 - FRONT


def test_estimate_is_the_median_of_recent_runs():
    assert estimate_from_history([10.0, 300.0, 20.0]) == 20.0
    assert estimate_from_history([]) is None
