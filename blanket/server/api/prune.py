"""The retention sweep on demand: `POST /prune` (what `blanket prune` calls)."""

from __future__ import annotations

import bottle

from blanket.auth import OPERATOR
from blanket.durations import parse_duration
from blanket.errors import InvalidInput
from blanket.models import TaskFilter
from blanket.server.api import schemas as S
from blanket.server.api.access import identity
from blanket.server.api.http import flag, json_response
from blanket.server.services import Services


def install(app: bottle.Bottle, services: Services) -> None:
    routes = PruneRoutes(services)
    app.route("/prune", "POST", routes.prune, role=OPERATOR, query=S.PRUNE)


class PruneRoutes:
    def __init__(self, services: Services):
        self.s = services

    def prune(self):
        """Remove the ended tasks the retention rules let go (or, with ?older_than, every
        ended task that ended longer ago; with ?type, of that type only), their folders and
        the versions no kept task uses. ?dry_run says what would go, and removes nothing."""
        older_than = None
        raw = bottle.request.query.get("older_than")
        if raw is not None:
            try:
                older_than = parse_duration(raw)
            except ValueError as e:
                raise InvalidInput(f"?older_than: {e}") from None
        type_name = bottle.request.query.get("type") or None
        if type_name is not None and self.s.catalog.get(type_name) is None and \
                not self.s.tasks.count(TaskFilter(types=(type_name,), limit=1)):
            known = ", ".join(t.name for t in self.s.catalog.types()) or "none yet"
            raise InvalidInput(f"?type={type_name!r}: no such type, and no task of it; "
                               f"known types: {known}")
        report = self.s.retention.prune(flag("dry_run"), older_than, type_name,
                                        by=identity().name)
        return json_response(report.to_json())
