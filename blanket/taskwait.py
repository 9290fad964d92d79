"""Waiting for tasks from the CLI: `submit --wait`, `rerun --wait` and `wait`. The task's
state, progress and message are shown while it runs (one line rewritten in place on a
terminal, a line per change otherwise, on stderr: stdout keeps the id or the JSON a script
reads), the tail of its log when it did not succeed, and the shell gets the task's own exit
code (terminal.exit_code_of)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import TextIO

import click

from blanket.client import Client, ClientError
from blanket.durations import parse_duration
from blanket.terminal import is_terminal, state_text

ENDED = frozenset({"SUCCESS", "FAILED", "TIMEDOUT", "STOPPED", "LOST"})
POLL = 1.0  # seconds each long poll waits, so progress is shown while the task runs
TAIL_LINES = 20
LOG_STREAMS = ("output", "stderr", "stdout")  # the combined log first, for types that keep it
FOREVER = "forever"  # what a bare --wait means


class WaitOption(click.Command):
    """A command whose `--wait` takes an optional number of seconds: `--wait`, `--wait=30`,
    `--wait 30`, `--wait 5m`. A bare `--wait` never swallows the argument after it (the
    type name in `blanket submit --wait echo`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--":
                rewritten += [arg, *rest]
                break
            if arg == "--wait":
                if rest and _is_duration(rest[0]):
                    arg = f"--wait={rest.pop(0)}"
                else:
                    arg = f"--wait={FOREVER}"
            rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


def _is_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def wait_limit(value: str | None) -> float | None:
    """Seconds to wait for a --wait value: None for ever, else the duration given."""
    if value is None or value == FOREVER:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--wait") from None


class Progress:
    """Shows a task's state, progress and message as it changes, on `stream`."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.live = is_terminal(self.stream)
        self.quiet = quiet
        self.began = time.monotonic()
        self._last: tuple | None = None
        self._drawn = False

    def show(self, task: dict) -> None:
        if self.quiet:
            return
        state = task.get("state", "?")
        progress = task.get("progress")
        message = task.get("progress_message") or ""
        seen = (state, progress, message)
        if not self.live:
            if seen != self._last:
                parts = [f"task {task['id']}: {state}"]
                if progress is not None:
                    parts.append(f"{progress}%")
                if message:
                    parts.append(message)
                click.echo(" ".join(parts), file=self.stream)
            self._last = seen
            return
        self._last = seen
        elapsed = _clock(time.monotonic() - self.began)
        bar = _bar(progress) if progress is not None else ""
        line = f"task {task['id']} {state_text(state, self.stream)} {bar} {message}"
        line = " ".join(line.split()) + f"  {elapsed}"
        click.echo("\r\x1b[2K" + line, nl=False, file=self.stream)
        self._drawn = True

    def done(self, task: dict) -> None:
        """Replace the live line by the task's end."""
        if self._drawn:
            click.echo("\r\x1b[2K", nl=False, file=self.stream)
        if self.quiet:
            return
        code = task.get("exit_code")
        took = _clock(time.monotonic() - self.began)
        ending = f" (exit code {code})" if code is not None else ""
        if task.get("error"):
            ending += f": {task['error']}"
        click.echo(f"task {task['id']} {state_text(task.get('state', '?'), self.stream)}"
                   f"{ending}, after {took}", file=self.stream)


def _clock(seconds: float) -> str:
    """Elapsed time as M:SS (H:MM:SS past an hour)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
            else f"{rest // 60}:{rest % 60:02d}")


def _bar(percent: float, size: int = 20) -> str:
    filled = max(0, min(size, round(size * float(percent) / 100)))
    return "[" + "#" * filled + "." * (size - filled) + f"] {percent:g}%"


def wait_for(client: Client, task: dict, limit: float | None, progress: Progress) -> dict:
    """The task once it ended, or as it is when `limit` seconds ran out (None: no limit),
    long polling a second at a time to show its progress meanwhile."""
    deadline = None if limit is None else time.monotonic() + limit
    while task.get("state") not in ENDED:
        progress.show(task)
        left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
        if left <= 0:
            break
        task = client.get(f"/task/{task['id']}?wait={left:.3f}")
    return task


def log_tail(client: Client, task_id: int, lines: int = TAIL_LINES,
             streams: Iterable[str] = LOG_STREAMS) -> tuple[str, str] | None:
    """The last `lines` lines of the task's first log that has something: (stream, text)."""
    for stream in streams:
        try:
            text = client.get(f"/task/{task_id}/log/{stream}")
        except ClientError as e:
            if e.status == 404:
                continue
            raise
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if text and str(text).strip():
            return stream, "\n".join(str(text).rstrip("\n").split("\n")[-lines:])
    return None


def show_failure(client: Client, task: dict) -> None:
    """The tail of the log of a task that did not succeed, on stderr."""
    if task.get("state") in ("SUCCESS", None) or task.get("state") not in ENDED:
        return
    tail = log_tail(client, task["id"])
    if tail is not None:
        stream, text = tail
        click.echo(f"--- last lines of task {task['id']}'s {stream} log ---", err=True)
        click.echo(text, err=True)
