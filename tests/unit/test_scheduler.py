"""The scheduler: Scheduler.tick with an injected clock, over a real SQLite store and a real
catalog on a temporary conf.d."""

from __future__ import annotations

from pathlib import Path

import pytest

from blanket.config.bundles import bundle_path
from blanket.config.settings import Settings
from blanket.errors import NotFound
from blanket.models import ScheduleState, TaskFilter, TaskState
from blanket.server.intake import TaskRequest
from blanket.server.schedulebook import FIRE_TIME_VARIABLE
from blanket.server.scheduler import Scheduler, dedupe_key
from blanket.server.services import Services, build_services
from blanket.store.base import Claim
from tests.conftest import wait_until

T0 = 1_800_000_000.0  # a multiple of 10, so `every = "10s"` fires at T0, T0 + 10, ...


class Setup:
    """A config dir, a data dir and services built on them, as a server would have."""

    def __init__(self, base: Path, **settings):
        self.base = base
        self.conf = base / "conf.d"
        (self.conf / "types").mkdir(parents=True)
        (self.conf / "schedules").mkdir()
        (self.conf / "types" / "report.toml").write_text('command = "echo report"\n')
        self.settings = Settings(config_dir=self.conf, data_dir=base / "var", **settings)
        self.services: Services = build_services(self.settings)

    def write(self, name: str, text: str) -> None:
        (self.conf / "schedules" / f"{name}.toml").write_text(text)
        self.services.catalog.scan()

    def delete(self, name: str) -> None:
        (self.conf / "schedules" / f"{name}.toml").unlink()
        self.services.catalog.scan()

    def scheduler(self) -> Scheduler:
        return Scheduler(self.services)

    def restart(self) -> Setup:
        """The same directories opened again, as after a server restart."""
        self.services.store.close()
        self.services = build_services(self.settings)
        return self

    def state(self, name: str) -> ScheduleState | None:
        return self.services.store.get_schedule_state(name)

    def tasks(self, name: str) -> list:
        return self.services.store.list_tasks(TaskFilter(schedule=name, oldest_first=True))

    def end(self, task_id: int) -> None:
        self.services.store.stop_queued(task_id, T0)


@pytest.fixture
def setup(tmp_path: Path):
    made = Setup(tmp_path)
    yield made
    made.services.store.close()


EVERY_10S = 'type = "report"\nevery = "10s"\n'


def started(setup: Setup, text: str = EVERY_10S, name: str = "tick") -> Scheduler:
    """A scheduler that has seen schedule `name` once, at T0 - 5 (next fire: T0)."""
    setup.write(name, text)
    scheduler = setup.scheduler()
    assert scheduler.tick(T0 - 5) == []
    return scheduler


def test_a_new_schedule_runs_nothing_at_once_and_stores_its_next_fire(setup):
    started(setup)
    assert setup.state("tick").next_fire == T0
    assert setup.tasks("tick") == []


def test_a_due_run_becomes_a_task_carrying_the_schedule_name_and_fire_time(setup):
    scheduler = started(setup, EVERY_10S + '[environment]\nTARGET = "weekly"\n')
    [task] = scheduler.tick(T0)
    assert (task.type, task.schedule, task.state) == ("report", "tick", TaskState.QUEUED)
    assert task.environment["TARGET"] == "weekly"
    assert task.environment[FIRE_TIME_VARIABLE] == "2027-01-15T08:00:00.000Z"
    assert setup.state("tick") == ScheduleState("tick", T0 + 10, T0, task.id, False)


def test_tags_and_priority_come_from_the_schedule(setup):
    scheduler = started(setup, EVERY_10S + 'tags = ["unix"]\npriority = 5\n')
    [task] = scheduler.tick(T0)
    assert (task.tags, task.priority) == (("unix",), 5)


def test_ticking_again_at_the_same_time_does_not_repeat_a_run(setup):
    scheduler = started(setup, EVERY_10S + 'overlap = "allow"\n')
    scheduler.tick(T0)
    assert scheduler.tick(T0 + 1) == []
    assert len(setup.tasks("tick")) == 1


def test_next_wake_is_the_earliest_next_fire_of_all_schedules(setup):
    setup.write("slow", 'type = "report"\nevery = "1h"\n')
    scheduler = started(setup)
    assert scheduler.next_wake == T0


def test_overlap_skip_drops_the_run_while_the_previous_one_is_queued(setup):
    scheduler = started(setup)
    scheduler.tick(T0)
    assert scheduler.tick(T0 + 10) == []
    assert setup.state("tick").next_fire == T0 + 20


def test_overlap_skip_runs_again_once_the_previous_run_ended(setup):
    scheduler = started(setup)
    [first] = scheduler.tick(T0)
    setup.end(first.id)
    assert len(scheduler.tick(T0 + 10)) == 1


def test_overlap_allow_submits_while_the_previous_run_is_queued(setup):
    scheduler = started(setup, EVERY_10S + 'overlap = "allow"\n')
    scheduler.tick(T0)
    assert len(scheduler.tick(T0 + 10)) == 1
    assert len(setup.tasks("tick")) == 2


QUEUE = EVERY_10S + 'overlap = "queue"\n'


def running(setup: Setup, task_id: int) -> None:
    """Let a worker take task `task_id` and start it."""
    store = setup.services.store
    taken = store.claim_task(Claim(worker="w1", tags=frozenset(), now=T0))
    assert taken is not None and taken.id == task_id
    store.mark_started(task_id, taken.token, pid=None, now=T0)


def fire_of(task) -> str:
    return task.environment[FIRE_TIME_VARIABLE]


def test_overlap_queue_keeps_a_fire_waiting_while_the_previous_run_is_running(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    running(setup, first.id)
    assert scheduler.tick(T0 + 10) == []
    assert len(setup.tasks("tick")) == 1
    assert setup.state("tick") == ScheduleState("tick", T0 + 20, T0, first.id, False,
                                                pending_fire=T0 + 10)


def test_overlap_queue_submits_the_waiting_run_on_the_tick_after_the_previous_run_ends(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    scheduler.tick(T0 + 10)
    assert scheduler.tick(T0 + 11) == []
    setup.end(first.id)
    [waited] = scheduler.tick(T0 + 12)
    assert fire_of(waited) == "2027-01-15T08:00:10.000Z"
    assert setup.services.store.task_for_key(dedupe_key("tick", T0 + 10)) == waited.id
    assert setup.state("tick") == ScheduleState("tick", T0 + 20, T0 + 10, waited.id, False)


def test_overlap_queue_coalesces_further_fires_into_one_waiting_run_for_the_latest(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    for later in (10, 20, 30):
        assert scheduler.tick(T0 + later) == []
    assert setup.state("tick").pending_fire == T0 + 30
    setup.end(first.id)
    [waited] = scheduler.tick(T0 + 31)
    assert fire_of(waited) == "2027-01-15T08:00:30.000Z"
    assert len(setup.tasks("tick")) == 2


def test_overlap_queue_keeps_a_fire_due_as_the_waiting_run_is_submitted_waiting(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    scheduler.tick(T0 + 10)
    setup.end(first.id)
    [waited] = scheduler.tick(T0 + 20)
    assert fire_of(waited) == "2027-01-15T08:00:10.000Z"
    assert setup.state("tick").pending_fire == T0 + 20


def test_overlap_queue_runs_at_once_when_the_previous_run_has_ended(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    setup.end(first.id)
    [second] = scheduler.tick(T0 + 10)
    assert fire_of(second) == "2027-01-15T08:00:10.000Z"
    assert setup.state("tick").pending_fire is None


def test_overlap_queue_runs_missed_fires_one_after_another_not_together(setup):
    scheduler = started(setup, 'type = "report"\nevery = "10s"\nmissed = "all"\n'
                               'overlap = "queue"\n')
    [first] = scheduler.tick(T0 + 30)
    assert fire_of(first) == "2027-01-15T08:00:00.000Z"
    assert setup.state("tick").pending_fire == T0 + 30


def test_pausing_drops_the_waiting_run(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    scheduler.tick(T0 + 10)
    setup.services.schedules.set_paused("tick", True)
    setup.end(first.id)
    assert scheduler.tick(T0 + 11) == []
    assert setup.state("tick").pending_fire is None
    setup.services.schedules.set_paused("tick", False)
    assert scheduler.tick(T0 + 12) == []


def test_deleting_the_schedule_drops_the_waiting_run(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    scheduler.tick(T0 + 10)
    setup.delete("tick")
    setup.end(first.id)
    assert scheduler.tick(T0 + 11) == []
    assert setup.state("tick").pending_fire is None


def test_a_running_scheduler_submits_the_waiting_run_as_soon_as_the_previous_run_ends(setup):
    scheduler = started(setup, QUEUE)
    [first] = scheduler.tick(T0)
    scheduler.tick(T0 + 10)
    # The clock stands still 9 s before the next fire: only the end of the first run can
    # wake the loop sooner.
    looping = Scheduler(setup.services, clock=lambda: T0 + 11)
    looping.start()
    try:
        wait_until(lambda: looping.next_wake == T0 + 20)  # its first tick is over
        setup.end(first.id)
        waited = wait_until(lambda: setup.tasks("tick")[1:], timeout=3)
        assert fire_of(waited[0]) == "2027-01-15T08:00:10.000Z"
    finally:
        looping.stop()


def outage(setup: Setup, missed: str, down_for: float, every: str = "10s", **extra: str) -> list:
    """Fire once at T0, restart, and tick `down_for` seconds later; the tasks created."""
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    scheduler = started(setup, f'type = "report"\nevery = "{every}"\nmissed = "{missed}"\n'
                               f'overlap = "allow"\n' + lines)
    scheduler.tick(T0)
    setup.restart()
    return setup.scheduler().tick(T0 + down_for)


def test_missed_all_runs_every_fire_that_fell_while_the_server_was_down(setup):
    tasks = outage(setup, "all", 45)
    assert [t.environment[FIRE_TIME_VARIABLE][-10:] for t in tasks] == \
        ["00:10.000Z", "00:20.000Z", "00:30.000Z", "00:40.000Z"]


def test_missed_all_is_bounded_by_the_schedule_max_missed(setup):
    assert len(outage(setup, "all", 45, max_missed="2")) == 2


def test_missed_all_is_bounded_by_the_server_max_missed_setting(tmp_path):
    setup = Setup(tmp_path, max_missed=3)
    assert len(outage(setup, "all", 95)) == 3
    setup.services.store.close()


def test_missed_once_runs_only_the_latest_missed_fire(setup):
    [task] = outage(setup, "once", 3600)
    assert task.environment[FIRE_TIME_VARIABLE].endswith("09:00:00.000Z")


def test_missed_skip_drops_a_run_more_than_a_minute_late(setup):
    assert outage(setup, "skip", 1800 + 120, every="10m") == []
    assert setup.state("tick").next_fire == T0 + 2400


def test_missed_skip_still_runs_a_fire_that_is_only_a_little_late(setup):
    assert len(outage(setup, "skip", 1800 + 30, every="10m")) == 1


def test_a_run_submitted_before_a_crash_is_not_submitted_twice(setup):
    started(setup)
    # The crash: the task was stored but the schedule's state was not saved.
    before = setup.services.intake.submit(TaskRequest(
        type="report", environment={}, schedule="tick", dedupe_key=dedupe_key("tick", T0)))
    setup.restart()
    [task] = setup.scheduler().tick(T0)
    assert task.id == before.id
    assert len(setup.tasks("tick")) == 1
    assert setup.state("tick").last_task == before.id


def test_editing_the_cadence_recomputes_the_next_fire(setup):
    scheduler = started(setup)
    setup.write("tick", 'type = "report"\ncron = "30 * * * *"\n')
    assert scheduler.tick(T0 - 4) == []
    assert setup.state("tick").next_fire == T0 + 1800  # T0 is 08:00 UTC; next is 08:30


def test_editing_to_a_faster_cadence_fires_at_its_next_time(setup):
    scheduler = started(setup, 'type = "report"\ncron = "0 0 1 1 *"\n')
    setup.write("tick", EVERY_10S)
    assert scheduler.tick(T0 - 4) == []
    assert setup.state("tick").next_fire == T0


def test_an_edit_that_keeps_the_stored_fire_time_keeps_it(setup):
    scheduler = started(setup)
    setup.write("tick", EVERY_10S + '[environment]\nTARGET = "new"\n')
    [task] = scheduler.tick(T0)
    assert task.environment["TARGET"] == "new"


def test_an_edit_made_while_the_server_was_down_is_noticed_after_the_restart(setup):
    started(setup)
    setup.restart()
    setup.write("tick", 'type = "report"\nevery = "7s"\n')
    assert setup.scheduler().tick(T0 + 1) == []
    assert setup.state("tick").next_fire == 1_800_000_006.0  # the next multiple of 7


def test_a_deleted_schedule_stops(setup):
    scheduler = started(setup)
    setup.delete("tick")
    assert scheduler.tick(T0 + 100) == []
    assert setup.state("tick").next_fire is None


def test_a_schedule_put_back_after_deletion_starts_afresh(setup):
    scheduler = started(setup, EVERY_10S + 'missed = "all"\n')
    setup.delete("tick")
    scheduler.tick(T0 + 1)
    setup.write("tick", EVERY_10S + 'missed = "all"\n')
    assert scheduler.tick(T0 + 100) == []
    assert setup.state("tick").next_fire == T0 + 110


def test_a_schedule_deleted_while_the_server_was_down_starts_afresh_when_put_back(setup):
    started(setup, EVERY_10S + 'missed = "all"\n')
    setup.restart()
    setup.delete("tick")  # while the server is down
    assert setup.scheduler().tick(T0 + 100) == []
    assert setup.state("tick").next_fire is None
    setup.write("tick", EVERY_10S + 'missed = "all"\n')
    scheduler = setup.scheduler()
    assert scheduler.tick(T0 + 200) == []  # no catching up on the runs since T0
    assert setup.state("tick").next_fire == T0 + 210


def test_a_schedule_broken_while_the_server_was_down_keeps_its_plan(setup):
    started(setup, EVERY_10S + 'missed = "all"\n')
    setup.write("tick", "type = \n")  # broken, not deleted
    setup.restart()  # and read broken at start: there is no good version of it
    assert setup.scheduler().tick(T0 + 100) == []
    assert setup.state("tick").next_fire == T0  # fixed, it catches up as `missed` says
    setup.write("tick", EVERY_10S + 'missed = "all"\n')
    assert len(setup.scheduler().tick(T0 + 100)) == 11


def test_a_disabled_schedule_does_not_fire(setup):
    scheduler = started(setup, EVERY_10S + "enabled = false\n")
    assert scheduler.tick(T0 + 10) == []
    assert scheduler.next_wake is None


def test_a_paused_schedule_does_not_fire(setup):
    scheduler = started(setup)
    setup.services.schedules.set_paused("tick", True)
    assert scheduler.tick(T0 + 10) == []
    assert setup.state("tick").paused


def test_a_resumed_schedule_does_not_catch_up_on_runs_missed_while_paused(setup):
    scheduler = started(setup, EVERY_10S + 'missed = "all"\n')
    setup.services.schedules.set_paused("tick", True)
    scheduler.tick(T0 + 50)
    setup.services.schedules.set_paused("tick", False)
    assert scheduler.tick(T0 + 55) == []
    assert len(scheduler.tick(T0 + 60)) == 1


def test_a_broken_edit_keeps_the_last_good_definition_firing(setup):
    scheduler = started(setup)
    setup.write("tick", 'type = "report"\nevery = "soon"\n')
    assert len(scheduler.tick(T0)) == 1


def test_a_run_the_intake_refuses_is_skipped_and_the_schedule_moves_on(setup):
    (setup.conf / "types" / "needy.toml").write_text(
        'command = "echo {{ X }}"\n[environment.required]\nX = { description = "x" }\n')
    scheduler = started(setup, 'type = "needy"\nevery = "10s"\n')
    assert scheduler.tick(T0) == []
    assert setup.state("tick").next_fire == T0 + 10


def test_a_command_schedule_runs_as_its_own_versioned_type(setup):
    scheduler = started(setup, 'command = "echo hi"\nevery = "10s"\ntags = ["unix"]\n')
    [task] = scheduler.tick(T0)
    task_type, version = setup.services.queue.current(task.type)
    assert (task.type, task_type.command, task_type.tags) == ("schedule.tick", "echo hi",
                                                              ("unix",))
    assert bundle_path(setup.services.versions_dir, version).is_file()
    assert setup.services.store.record_version(version, task.type, T0) is False  # recorded


def test_editing_a_command_schedule_gives_its_type_a_new_version(setup):
    scheduler = started(setup, 'command = "echo hi"\nevery = "10s"\n')
    [task] = scheduler.tick(T0)
    _, before = setup.services.queue.current(task.type)
    setup.write("tick", 'command = "echo bye"\nevery = "10s"\n')
    task_type, after = setup.services.queue.current(task.type)
    assert (task_type.command, after != before) == ("echo bye", True)


def test_run_now_submits_a_run_and_records_it_as_the_last_task(setup):
    started(setup)
    task = setup.services.schedules.run_now("tick")
    assert (task.schedule, FIRE_TIME_VARIABLE in task.environment) == ("tick", False)
    assert setup.state("tick").last_task == task.id


def test_run_now_of_an_unknown_schedule_is_not_found(setup):
    with pytest.raises(NotFound, match="no schedule 'nope'"):
        setup.services.schedules.run_now("nope")


def test_a_server_without_the_scheduler_lock_fires_nothing(setup):
    scheduler = started(setup)
    setup.services.store.try_scheduler_lock = lambda: False
    assert scheduler.tick(T0) == []


def test_runs_worked_out_ahead_of_time_are_submitted_at_their_time(setup):
    scheduler = started(setup)
    scheduler.prepare(T0)
    assert scheduler.tick(T0 - 1) == []
    [task] = scheduler.tick(T0)
    assert task.environment[FIRE_TIME_VARIABLE].endswith("08:00:00.000Z")
    assert setup.state("tick").next_fire == T0 + 10


def test_runs_worked_out_ahead_of_time_are_dropped_when_the_file_changes(setup):
    scheduler = started(setup)
    scheduler.prepare(T0)
    setup.write("tick", 'type = "report"\ncron = "30 * * * *"\n')
    assert scheduler.tick(T0) == []


def test_runs_worked_out_ahead_of_time_are_dropped_when_the_schedule_is_paused(setup):
    scheduler = started(setup)
    scheduler.prepare(T0)
    setup.services.schedules.set_paused("tick", True)
    assert scheduler.tick(T0) == []


# ---------------------------------------------------------------- one schedule's failure

class Boom(Exception):
    """A bug in handling one schedule."""


def test_a_schedule_the_tick_fails_for_does_not_stop_the_others_and_is_retried(
        setup, monkeypatch):
    from blanket.server import scheduler as scheduler_module

    setup.write("bad", EVERY_10S)
    scheduler = started(setup, name="good")
    assert setup.state("bad").next_fire == T0
    real = scheduler_module.scheduled_request

    def breaks_for_bad(schedule, fire, key):
        if schedule.name == "bad":
            raise Boom("a bug")
        return real(schedule, fire, key)

    monkeypatch.setattr(scheduler_module, "scheduled_request", breaks_for_bad)
    [task] = scheduler.tick(T0)
    assert task.schedule == "good" and setup.state("good").next_fire == T0 + 10
    # bad's fire is not lost: its state stays, and it is tried again a second later
    assert setup.tasks("bad") == [] and setup.state("bad").next_fire == T0
    assert scheduler.next_wake == T0 + 1
    assert scheduler.tick(T0 + 1) == []
    assert scheduler.next_wake == T0 + 1 + 2  # then two seconds later, and so on
    monkeypatch.undo()
    [late] = scheduler.tick(T0 + 3)
    assert (late.schedule, late.environment[FIRE_TIME_VARIABLE]) == (
        "bad", task.environment[FIRE_TIME_VARIABLE])
    assert setup.state("bad").next_fire == T0 + 10 and scheduler.next_wake == T0 + 10
    assert len(setup.tasks("good")) == 1


def test_a_workflow_run_the_tick_fails_for_does_not_stop_the_plain_runs(setup, monkeypatch):
    (setup.conf / "workflows").mkdir()
    (setup.conf / "workflows" / "flow.toml").write_text('[steps.a]\ntype = "report"\n')
    setup.write("flows", 'workflow = "flow"\nevery = "10s"\n')
    scheduler = started(setup, name="good")
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise Boom("a bug")

    monkeypatch.setattr(setup.services.workflows, "start_scheduled", broken)
    [task] = scheduler.tick(T0)
    assert task.schedule == "good" and len(calls) == 1
    assert setup.state("flows").next_fire == T0 and scheduler.next_wake == T0 + 1
    monkeypatch.undo()
    scheduler.tick(T0 + 1)
    assert setup.state("flows").next_fire == T0 + 10
    assert [run.schedule for run in setup.services.workflows.list_runs()] == ["flows"]


def test_a_tick_that_fails_as_a_whole_is_retried_with_growing_delays(setup, monkeypatch):
    scheduler = started(setup)

    def down() -> bool:
        raise Boom("the database went away")

    monkeypatch.setattr(setup.services.store, "try_scheduler_lock", down)
    now = [T0]
    scheduler.clock = lambda: now[0]
    # The failed tick's wake time is past: the loop must not spin on it.
    assert [scheduler.run_once() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    monkeypatch.undo()
    assert scheduler.run_once() == 10.0  # its next fire, T0 + 10
    assert len(setup.tasks("tick")) == 1


def test_a_request_that_stops_the_batch_fails_only_its_schedule(setup, monkeypatch):
    setup.write("bad", EVERY_10S)
    scheduler = started(setup, name="good")
    intake = setup.services.intake
    alone = intake.submit

    def batch(requests, now=None):
        raise Boom("a row refused")

    def one(request, now=None):
        if request.schedule == "bad":
            raise Boom("its row refused")
        return alone(request, now)

    monkeypatch.setattr(intake, "submit_many", batch)
    monkeypatch.setattr(intake, "submit", one)
    [task] = scheduler.tick(T0)
    assert task.schedule == "good" and setup.state("good").next_fire == T0 + 10
    assert setup.tasks("bad") == [] and setup.state("bad").next_fire == T0


def test_a_failed_schedule_is_left_alone_until_its_retry_however_often_others_tick(
        setup, monkeypatch):
    setup.write("bad", EVERY_10S)
    scheduler = started(setup, 'type = "report"\nevery = "1s"\n', name="fast")
    tries = []
    submit_runs = scheduler._submit_runs

    def breaks_for_bad(plan):
        if plan.schedule.name == "bad":
            tries.append(plan.at)
            raise Boom("a bug")
        return submit_runs(plan)

    monkeypatch.setattr(scheduler, "_submit_runs", breaks_for_bad)
    at = T0
    while at < T0 + 30:  # the fast schedule ticks every second
        scheduler.tick(at)
        at = scheduler.next_wake
    # tried at T0, then 1, 2, 4 s later, then every 5 s (the most), never at every tick
    assert [t - T0 for t in tries] == [0, 1, 3, 7, 12, 17, 22, 27]
    assert setup.state("bad").next_fire == T0  # its fire kept, to run once it can
    monkeypatch.undo()
    [late] = [t for t in scheduler.tick(T0 + 32) if t.schedule == "bad"]
    # the fires missed meanwhile are one run, of the latest (missed = "skip", the default)
    assert late.environment[FIRE_TIME_VARIABLE] == "2027-01-15T08:00:30.000Z"


def test_a_schedule_edited_then_failed_is_checked_against_its_new_definition_at_the_retry(
        setup, monkeypatch):
    scheduler = started(setup)  # every 10s: its stored next fire is T0
    setup.write("tick", 'type = "report"\nevery = "7s"\n')  # T0 is no 7 s fire time
    compute = scheduler._compute
    calls = []

    def fails_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise Boom("a bug")
        return compute(*args)

    monkeypatch.setattr(scheduler, "_compute", fails_once)
    assert scheduler.tick(T0 + 1) == []
    # Checked again, the stored T0 is not taken up: the edit starts afresh, running nothing
    # for the fire at T0 + 6 that a T0 kept unchecked would have caught up.
    assert scheduler.tick(T0 + 7) == []
    assert setup.state("tick").next_fire == T0 + 13


def test_an_edit_seen_by_a_tick_that_failed_as_a_whole_is_checked_again(setup, monkeypatch):
    from blanket.errors import StorageFull

    scheduler = started(setup)  # every 10s: its stored next fire is T0
    setup.write("tick", 'type = "report"\nevery = "7s"\n')  # T0 is no 7 s fire time
    store = setup.services.store
    save = store.save_schedule_state
    failures = [StorageFull("the disk is full")]

    def full_once(state):
        if failures:
            raise failures.pop()
        return save(state)

    monkeypatch.setattr(store, "save_schedule_state", full_once)
    now = [T0 + 1]
    scheduler.clock = lambda: now[0]
    assert scheduler.run_once() == 1.0  # failed as a whole: tried again in a second
    now[0] = T0 + 7
    scheduler.run_once()
    # the stored T0 is not taken up unchecked: no catch-up run for T0 + 6
    assert setup.tasks("tick") == [] and setup.state("tick").next_fire == T0 + 13
