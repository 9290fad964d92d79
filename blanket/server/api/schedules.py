"""Routes for schedules: list, show (next fires, last run), run now, pause, resume."""

from __future__ import annotations

import bottle

from blanket.auth import OPERATOR, VIEWER
from blanket.config.schedule import next_fire
from blanket.errors import NotFound
from blanket.models import SECRET_MASK, ScheduleState
from blanket.server.api.http import json_response
from blanket.server.catalog import LoadedSchedule
from blanket.server.currenttypes import task_type_of
from blanket.server.schedulebook import fire_time_text
from blanket.server.services import Services
from blanket.times import iso_utc

NEXT_FIRES = 5


def install(app: bottle.Bottle, services: Services) -> None:
    routes = ScheduleRoutes(services)
    app.route("/schedule/", "GET", routes.list_schedules, role=VIEWER)
    app.route("/schedule/<name>", "GET", routes.show, role=VIEWER)
    app.route("/schedule/<name>/run", "POST", routes.run, role=OPERATOR)
    app.route("/schedule/<name>/pause", "POST", routes.pause, role=OPERATOR)
    app.route("/schedule/<name>/resume", "POST", routes.resume, role=OPERATOR)


class ScheduleRoutes:
    def __init__(self, services: Services):
        self.s = services

    def list_schedules(self):
        """Every schedule: definition, state, next fire time, last run, load problems."""
        return json_response([self.describe(s, with_last=False) for s in
                              self.s.catalog.schedules()])

    def show(self, name: str):
        """One schedule, with its next few fire times and its last run."""
        return json_response(self.describe(self.loaded_or_404(name), with_last=True))

    def run(self, name: str):
        """Run the schedule now, whatever its timing and overlap policy; 201 with the task."""
        return json_response(self.s.schedules.run_now(name).to_json(), 201)

    def pause(self, name: str):
        """Stop firing until resumed."""
        self.s.schedules.set_paused(name, True)
        return json_response(self.describe(self.loaded_or_404(name), with_last=True))

    def resume(self, name: str):
        """Fire again from the next fire time; runs that fell while paused are not caught up."""
        self.s.schedules.set_paused(name, False)
        return json_response(self.describe(self.loaded_or_404(name), with_last=True))

    def loaded_or_404(self, name: str) -> LoadedSchedule:
        loaded = self.s.catalog.schedule(name)
        if loaded is None:
            raise NotFound(f"no schedule {name!r}; see GET /schedule/ for the list")
        return loaded

    def describe(self, loaded: LoadedSchedule, with_last: bool) -> dict:
        state = self.s.schedules.state(loaded.name)
        schedule = loaded.schedule
        data = loaded.to_json()
        if schedule is not None and data.get("definition"):
            # What the schedule passes to a variable its type calls secret is shown as ***.
            target = self.s.catalog.get(task_type_of(schedule))
            hidden = target.task_type.secrets if target and target.task_type else frozenset()
            data["definition"]["environment"] = {
                name: SECRET_MASK if name in hidden else value
                for name, value in schedule.environment.items()}
        data.update({
            "type": task_type_of(schedule) if schedule and not schedule.workflow else None,
            "state": _status(loaded, state),
            "paused": state.paused,
            "next_fire": iso_utc(state.next_fire),
            "next_fires": [fire_time_text(t) for t in self._upcoming(loaded, state)],
            "last_fire": iso_utc(state.last_fire),
            "pending_fire": iso_utc(state.pending_fire),  # overlap = "queue": the run that waits
            "last_task": state.last_task,
        })
        if with_last:
            task = self.s.tasks.find(state.last_task) if state.last_task else None
            data["last_run"] = task.to_json() if task else None
        return data

    def _upcoming(self, loaded: LoadedSchedule, state: ScheduleState) -> list[float]:
        if loaded.schedule is None or state.paused or state.next_fire is None:
            return []
        found: list[float] = []
        moment: float | None = state.next_fire - 1e-3
        while moment is not None and len(found) < NEXT_FIRES:
            moment = next_fire(loaded.schedule, moment)
            if moment is not None:
                found.append(moment)
        return found


def _status(loaded: LoadedSchedule, state: ScheduleState) -> str:
    if loaded.schedule is None:
        return "invalid"
    if state.paused:
        return "paused"
    if not loaded.schedule.enabled:
        return "disabled"
    return "active"
