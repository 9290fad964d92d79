"""Routes for workflows and their runs: list and show workflows, start a run, list and show
runs (a run with `?wait` until it ends), stop a run, rerun its failed steps."""

from __future__ import annotations

import time

import bottle

from blanket.auth import OPERATOR, SUBMITTER, VIEWER, Forbidden, Identity
from blanket.config.workflow import Workflow
from blanket.errors import InvalidInput, NotFound
from blanket.models import Run, TaskState
from blanket.server.api import schemas as S
from blanket.server.api.access import identity
from blanket.server.api.http import (
    json_response,
    parse_id,
    query_float,
    query_int,
    read_json_body,
)
from blanket.server.services import Services
from blanket.server.workflows import STEP_TASKS_SHOWN, WORKFLOWS, check_run_state

MAX_WAIT = 24 * 3600.0
MAX_RUNS = 1000  # runs in one listing at most
MAX_STEP_TASKS = 1000  # a step's tasks in one page at most
RUN_TASK_STATES = frozenset({*TaskState.__members__, "removed"})


def install(app: bottle.Bottle, services: Services) -> None:
    routes = WorkflowRoutes(services)
    app.route("/workflow/", "GET", routes.list_workflows, role=VIEWER)
    app.route("/workflow/<name>", "GET", routes.show_workflow, role=VIEWER)
    app.route("/workflow/<name>/run", "POST", routes.start, role=SUBMITTER,
              body=S.RUN_START, query=S.WAIT)
    app.route("/run/", "GET", routes.list_runs, role=VIEWER, query=S.RUN_LIST)
    app.route("/run/<run_id>", "GET", routes.show_run, role=VIEWER, query=S.WAIT)
    app.route("/run/<run_id>/tasks", "GET", routes.step_tasks, role=VIEWER,
              query=S.RUN_TASKS)
    app.route("/run/<run_id>/stop", "POST", routes.stop, role=SUBMITTER)
    app.route("/run/<run_id>/rerun", "POST", routes.rerun, role=SUBMITTER)


class WorkflowRoutes:
    def __init__(self, services: Services):
        self.s = services

    def list_workflows(self):
        """Every workflow file: its definition, version and problems."""
        return json_response([w.to_json() for w in self.s.catalog.workflows()])

    def show_workflow(self, name: str):
        """One workflow, with its latest runs."""
        loaded = self.s.catalog.workflow(name)
        if loaded is None:
            raise NotFound(f"no workflow {name!r}; see GET /workflow/ for the list")
        data = loaded.to_json()
        data["runs"] = [self.s.workflows.summary(r)
                        for r in self.s.workflows.list_runs(name, limit=20)]
        return json_response(data)

    def start(self, name: str):
        """Start a run: {"environment": {...}}; 201 with the run (with ?wait, once it
        ended). A submitter may start it only if its token may submit every step's type."""
        body = read_json_body(required=False) or {}
        wait = query_float("wait", None, MAX_WAIT)
        run = self.start_run(name, body.get("environment"))
        if wait is not None:
            run = self.wait_until_ended(run, wait)
        return json_response(self.s.workflows.view(run), 201)

    def start_run(self, name: str, environment: object) -> Run:
        """A run started by the caller, if its token may submit every step's type."""
        self.may_run(self.s.workflows.workflow(name))
        return self.s.workflows.start(name, environment, identity().name)

    @staticmethod
    def may_run(workflow: Workflow) -> None:
        """Refuse a caller whose token may not submit one of the workflow's step types."""
        caller = identity()
        refused = [workflow.step_type(s) for s in workflow.steps
                   if not caller.may_submit(workflow.step_type(s))]
        if refused:
            raise Forbidden(f"token {caller.name!r} may not submit tasks of type "
                            f"{refused[0]!r}, which workflow {workflow.name!r} runs")

    def list_runs(self):
        """Runs newest first (?workflow=NAME, ?state=running|succeeded|failed|stopped,
        ?before=ID for the next page, ?limit=N)."""
        query = bottle.request.query
        limit = query_float("limit", 100, MAX_RUNS)
        before = query.get("before")
        runs = self.s.workflows.list_runs(
            query.get("workflow") or None, check_run_state(query.get("state") or None),
            parse_id(before, "run") if before else None, int(limit or 100))
        return json_response([self.s.workflows.summary(r) for r in runs])

    def show_run(self, run_id: str):
        """One run: its steps, their states and tasks (?wait=S: once it ended)."""
        run = self.s.workflows.get(parse_id(run_id, "run"))
        wait = query_float("wait", None, MAX_WAIT)
        if wait is not None:
            run = self.wait_until_ended(run, wait)
        return json_response(self.s.workflows.view(run))

    def step_tasks(self, run_id: str):
        """One step's tasks, every round's, a page at a time: ?step=NAME (required),
        ?state=FAILED,removed,... (comma separated), ?offset=, ?limit= (100, at most 1000).
        GET /run/ID shows only each step's first ones."""
        run = self.s.workflows.get(parse_id(run_id, "run"))
        query = bottle.request.query
        step = query.getunicode("step")
        if not step:
            raise InvalidInput("?step=NAME: name the step whose tasks to list")
        words = (w.strip() for v in query.getall("state") for w in v.split(","))
        states = frozenset("removed" if w.lower() == "removed" else w.upper() for w in words if w)
        bad = sorted(states - RUN_TASK_STATES)
        if bad:
            raise InvalidInput(f"unknown state(s) {', '.join(bad)}; use "
                               f"{', '.join(sorted(RUN_TASK_STATES))}")
        return json_response(self.s.workflows.step_tasks(
            run, step, states, query_int("offset", 0, 10**12),
            query_int("limit", STEP_TASKS_SHOWN, MAX_STEP_TASKS)))

    def stop(self, run_id: str):
        """Stop a running run: no more steps start, and its tasks not ended are stopped."""
        run = self.s.workflows.get(parse_id(run_id, "run"))
        self.may_change(identity(), run)
        return json_response(self.s.workflows.view(
            self.s.workflows.stop(run.id, identity().name)))

    def rerun(self, run_id: str):
        """Run a failed or stopped run's steps that did not succeed again, and the steps
        after them."""
        run = self.s.workflows.get(parse_id(run_id, "run"))
        self.may_change(identity(), run)
        self.may_run(self.s.workflows.definition(run))  # its token's scopes may have narrowed
        return json_response(self.s.workflows.view(self.s.workflows.rerun(run.id)))

    @staticmethod
    def may_change(caller: Identity, run: Run) -> None:
        """Operators change any run; a submitter only the runs it started."""
        if caller.at_least(OPERATOR):
            return
        if caller.at_least(SUBMITTER) and not caller.anonymous \
                and run.submitted_by == caller.name:
            return
        raise Forbidden(f"workflow run {run.id} was started by {run.submitted_by or 'someone'}"
                        f"; {caller.name!r} may change only its own runs")

    def wait_until_ended(self, run: Run, wait: float) -> Run:
        if not 0 <= wait <= MAX_WAIT:
            raise InvalidInput(f"a wait is 0 to {MAX_WAIT:g} seconds, not {wait!r}")

        def ended() -> Run | None:
            current = self.s.workflows.get(run.id)
            return current if current.ended else None

        # Another server sharing the store ends runs too: look again every 2 s as well.
        found = self.s.wakeups.wait_for(ended, wait, topics=(WORKFLOWS,),
                                        next_deadline=lambda: time.time() + 2)
        return found or self.s.workflows.get(run.id)
