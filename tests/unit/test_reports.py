"""A worker slot's report thread: what it is handed goes in order, and one call failing in a
way nobody expected (a bug) does not end the thread, or every report queued behind it would
never go and the slot would wait for them for good (its flush after each task)."""

from __future__ import annotations

from blanket.worker.reports import ReportQueue


def test_a_call_failing_unexpectedly_leaves_the_thread_to_send_the_next():
    reports = ReportQueue(None)  # type: ignore[arg-type]
    reports.start()
    done: list[int] = []

    def failing() -> None:
        raise RuntimeError("a bug")

    reports.call(lambda: done.append(1))
    reports.call(failing)
    reports.call(lambda: done.append(3))
    reports.flush()
    assert done == [1, 3] and reports.is_alive()
