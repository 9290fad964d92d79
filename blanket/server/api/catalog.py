"""Routes for what the config directory defines, and for the server itself: types, health,
metrics."""

from __future__ import annotations

import time

import bottle

from blanket import __version__
from blanket.auth import PUBLIC, VIEWER
from blanket.errors import InvalidInput, NotFound
from blanket.models import TaskFilter
from blanket.server.api import schemas as S
from blanket.server.api.access import identity
from blanket.server.api.http import json_response
from blanket.server.dashboard import summary
from blanket.server.metrics import CONTENT_TYPE
from blanket.server.services import Services

MAX_TYPE_NAME = 200  # as a submission's type (schemas.SHORT_TEXT)


def install(app: bottle.Bottle, services: Services) -> None:
    routes = CatalogRoutes(services)
    app.route("/task_type/", "GET", routes.list_types, role=VIEWER)
    app.route("/task_type/<name>", "GET", routes.show_type, role=VIEWER)
    app.route("/task_type/<name>/versions", "GET", routes.type_versions, role=VIEWER)
    app.route("/health", "GET", routes.health, role=PUBLIC)
    app.route("/metrics", "GET", routes.metrics, role=VIEWER)
    app.route("/stats", "GET", routes.stats, role=VIEWER, query=S.STATS)


class CatalogRoutes:
    def __init__(self, services: Services):
        self.s = services

    def list_types(self):
        """Every task type: definition, current version, when loaded, and any load error."""
        return json_response([t.to_json() for t in self.s.catalog.types()])

    def show_type(self, name: str):
        """One task type (an abstract one too: its definition shows, though none runs)."""
        loaded = self.s.catalog.get(name) or self.s.catalog.base(name)
        if loaded is None:
            raise NotFound(f"no task type {name!r}; see GET /task_type/ for the list")
        return json_response(loaded.to_json())

    def type_versions(self, name: str):
        """The versions this type's tasks were submitted with, latest used first (with the
        first and last time each was used and how many tasks): a type removed since still
        shows what ran."""
        if len(name) > MAX_TYPE_NAME:
            raise InvalidInput(f"a type's name is at most {MAX_TYPE_NAME} characters")
        return json_response(self.s.tasks.versions_run(name))

    def health(self):
        """Whether the server and its store answer, with its version and config problems.
        Anyone may ask (a load balancer's probe has no token); the store's error and the
        problems, which name files and what is wrong in them, only a viewer sees: others
        get only how many there are (`config_problem_count`)."""
        shown = identity().at_least(VIEWER)
        try:
            self.s.tasks.count(TaskFilter(states=("RUNNING",)))
        except Exception as e:  # the store is down: say so rather than fail the probe
            return json_response({"status": "error", "store": str(e) if shown else
                                  "the store does not answer (a viewer sees why)"}, 503)
        problems = self.s.catalog.problems()
        answer = {"status": "ok", "version": __version__,
                  "uptime": round(time.time() - self.s.started, 3),
                  "types": len(self.s.catalog.types()), "config_problem_count": len(problems)}
        if shown:
            answer["config_problems"] = [p.to_json() for p in problems]
        return json_response(answer)

    def stats(self):
        """The dashboard's figures (?window=hour or day)."""
        window = bottle.request.query.get("window", "hour")  # hour or day: its query schema
        return json_response(summary(self.s.tasks, self.s.registry.listed, self.s.waiting,
                                     window))

    def metrics(self):
        """Prometheus text format: every series the server exports (README, Metrics)."""
        bottle.response.content_type = CONTENT_TYPE
        return self.s.metrics.exposition()
