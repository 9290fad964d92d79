"""Shell completion for `blanket`: bash, zsh and fish scripts (`blanket completion SHELL`),
and the values completed from the server: type names, schedule names, task ids and worker
ids. A server that cannot be reached completes nothing, quietly and within a second."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

PROG = "blanket"
COMPLETE_VAR = "_BLANKET_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
TIMEOUT = 1.0  # seconds a completion may wait for the server
RECENT_TASKS = 50


def script(shell: str, cli: click.Command) -> str:
    """The completion script for `shell`, to be sourced by it."""
    completion = get_completion_class(shell)
    if completion is None:
        raise click.BadParameter(f"no completion for {shell!r}: use {', '.join(SHELLS)}")
    return completion(cli, {}, PROG, COMPLETE_VAR).source()


def _client(ctx: click.Context) -> Any:
    """A client built from the options given so far on the command line (--server,
    --token, ...): the group's callback has not run while completing."""
    from blanket.cli import Context

    root = ctx.find_root().params
    context = Context(root.get("settings_path"), root.get("server"), 0, root.get("token"),
                      root.get("ca"), root.get("fingerprint"))
    return context.client()


def _from_server(path: str, pick: Callable[[Any], list[tuple[str, str]]]
                 ) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        try:
            entries = _client(ctx).get(path, timeout=TIMEOUT)
        except Exception:  # completion must never print a traceback into the shell
            return []
        return [CompletionItem(value, help=help_text) for value, help_text in pick(entries)
                if value.startswith(incomplete)]
    return complete


type_names = _from_server("/task_type/", lambda types: [
    (t["name"], (t.get("definition") or {}).get("description") or "") for t in types])
schedule_names = _from_server("/schedule/", lambda schedules: [
    (s["name"], s.get("state", "")) for s in schedules])
workflow_names = _from_server("/workflow/", lambda workflows: [
    (w["name"], (w.get("definition") or {}).get("description") or "") for w in workflows])
task_ids = _from_server(f"/task/?limit={RECENT_TASKS}", lambda tasks: [
    (str(t["id"]), f"{t['type']} {t['state']}") for t in tasks])
worker_ids = _from_server("/worker/", lambda workers: [
    (w["id"], f"{w['state']} {','.join(w['tags'])}") for w in workers])
