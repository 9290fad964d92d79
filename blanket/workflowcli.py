"""`blanket workflow`: workflows and their runs over the API (list, run, runs, show, stop,
rerun). A run waited for exits 0 when it succeeded, 1 when it failed, 126 when it was stopped
and 125 when the wait ran out first."""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode

import click

from blanket import completion
from blanket.durations import format_duration
from blanket.taskwait import WaitOption, wait_limit
from blanket.terminal import GONE_EXIT, NOT_ENDED_EXIT, print_table, state_text

RUN_EXIT = {"succeeded": 0, "failed": 1, "stopped": GONE_EXIT}
POLL = 30.0  # seconds each long poll of a run waits at most


@click.group()
def workflow() -> None:
    """Workflows (conf.d/workflows/NAME.toml) and their runs."""


@workflow.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="print the workflows as JSON")
@click.pass_obj
def list_workflows(ctx: Any, as_json: bool) -> None:
    """The workflows, their steps and problems."""
    found = ctx.client().get("/workflow/")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[w["name"], str(len((w["definition"] or {}).get("steps", []))),
             (w["version"] or "-")[:12], f"{len(w['problems'])} problem(s)" if w["problems"]
             else "ok"] for w in found]
    print_table(["NAME", "STEPS", "VERSION", "PROBLEMS"], rows)


@workflow.command(name="run", cls=WaitOption)
@click.argument("name", shell_complete=completion.workflow_names)
@click.option("-e", "--env", "env", multiple=True, help="NAME=VALUE (repeatable)")
@click.option("--wait", metavar="[SECONDS]",
              help="wait until the run ends (at most SECONDS), showing its steps; exit 0 "
                   "when it succeeded, 1 failed, 126 stopped, 125 still running")
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON")
@click.pass_obj
def run_workflow(ctx: Any, name: str, env: tuple[str, ...], wait: str | None,
                 as_json: bool) -> None:
    """Start a run of workflow NAME; print its id."""
    environment: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="-e")
        environment[key] = value
    limit = wait_limit(wait)  # a wrong --wait is refused before the run starts
    client = ctx.client()
    run = client.post(f"/workflow/{quote(name, safe='')}/run", {"environment": environment})
    _show_and_wait(client, run, wait is not None, limit, as_json)


@workflow.command(name="runs")
@click.argument("name", required=False, shell_complete=completion.workflow_names)
@click.option("--state", type=click.Choice(["running", "succeeded", "failed", "stopped"]))
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print the runs as JSON")
@click.pass_obj
def list_runs(ctx: Any, name: str | None, state: str | None, limit: int,
              as_json: bool) -> None:
    """Runs, newest first (of workflow NAME)."""
    query = urlencode([(k, v) for k, v in (("workflow", name), ("state", state),
                                           ("limit", limit)) if v])
    runs = ctx.client().get(f"/run/?{query}")
    if as_json:
        click.echo(json.dumps(runs, indent=2))
        return
    rows = [[str(r["id"]), r["workflow"], r["state"], str(r["round"]), _age(r["added"]),
             r["reason"] or ""] for r in runs]
    print_table(["RUN", "WORKFLOW", "STATE", "ROUND", "STARTED", "REASON"], rows,
                flexible=(5,), state_column=2)


@workflow.command(name="show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON")
@click.pass_obj
def show_run(ctx: Any, run_id: int, as_json: bool) -> None:
    """A run's steps: their states, tasks and why one did not run."""
    run = ctx.client().get(f"/run/{run_id}")
    if as_json:
        click.echo(json.dumps(run, indent=2))
        return
    _print_run(run)


@workflow.command(name="stop")
@click.argument("run_ids", type=int, nargs=-1, required=True)
@click.pass_obj
def stop_run(ctx: Any, run_ids: tuple[int, ...]) -> None:
    """Stop runs: no more steps start, and their tasks not ended are stopped."""
    for run_id in run_ids:
        run = ctx.client().post(f"/run/{run_id}/stop")
        click.echo(f"{run_id}: {run['state']}")


@workflow.command(name="rerun", cls=WaitOption)
@click.argument("run_id", type=int)
@click.option("--wait", metavar="[SECONDS]", help="wait until the run ends, as `run --wait`")
@click.option("--json", "as_json", is_flag=True, help="print the run as JSON")
@click.pass_obj
def rerun(ctx: Any, run_id: int, wait: str | None, as_json: bool) -> None:
    """Run a failed or stopped run's steps that did not succeed again."""
    limit = wait_limit(wait)  # a wrong --wait is refused before the rerun starts
    client = ctx.client()
    _show_and_wait(client, client.post(f"/run/{run_id}/rerun"), wait is not None, limit,
                   as_json)


def _show_and_wait(client: Any, run: dict, wait: bool, limit: float | None,
                   as_json: bool) -> None:
    if not as_json:
        click.echo(run["id"])
        sys.stdout.flush()
    if not wait:
        if as_json:
            click.echo(json.dumps(run, indent=2))
        return
    end = None if limit is None else time.monotonic() + limit
    shown: dict[str, str] = {}
    while True:
        _changes(run, shown)
        if run["state"] != "running":
            break
        left = POLL if end is None else min(POLL, end - time.monotonic())
        if left <= 0:
            break
        run = client.get(f"/run/{run['id']}?wait={left:.1f}", timeout=left + 30)
    if as_json:
        click.echo(json.dumps(run, indent=2))
    elif run["state"] != "running":
        click.echo(f"run {run['id']}: {state_text(run['state'], sys.stderr)}"
                   + (f": {run['reason']}" if run["reason"] else ""), err=True)
    sys.exit(RUN_EXIT.get(run["state"], NOT_ENDED_EXIT))


def _changes(run: dict, shown: dict[str, str]) -> None:
    """Print each step whose state changed since the last look, on stderr."""
    for step in run["steps"]:
        if shown.get(step["name"]) != step["state"]:
            shown[step["name"]] = step["state"]
            click.echo(f"  {step['name']}: {state_text(step['state'], sys.stderr)}", err=True)


def _print_run(run: dict) -> None:
    click.echo(f"run {run['id']} of {run['workflow']} ({run['version'][:12]}): "
               f"{state_text(run['state'])}, round {run['round']}"
               + (f": {run['reason']}" if run["reason"] else ""))
    rows = []
    for step in run["steps"]:
        latest: dict[int, dict] = {}
        for task in step["tasks"]:
            latest[task["item"]] = task
        if step["item_count"] <= 3 and step["task_count"] == len(step["tasks"]):
            tasks = ", ".join(f"#{t['id']} {(t['state'] or 'removed').lower()}"
                              for t in latest.values())
        else:  # a fan-out: its items counted by the state of their latest task
            counts = sorted(step["item_states"].items(), key=lambda kv: (-kv[1], kv[0]))
            tasks = f"{step['item_count']} items: " + ", ".join(
                f"{n} {state.lower()}" for state, n in counts)
        rows.append([step["name"], step["state"], ",".join(step["after"]) or "-",
                     tasks, step["reason"] or ""])
    print_table(["STEP", "STATE", "AFTER", "TASKS", "REASON"], rows, flexible=(3, 4),
                state_column=1)


def _age(added: float) -> str:
    return format_duration(max(0.0, time.time() - added)) + " ago"
