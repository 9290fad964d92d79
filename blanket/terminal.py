"""How the CLI prints: tables that fit the terminal (long cells cut with an ellipsis, only on
a terminal: a pipe gets whole values), task states in colour on a terminal unless NO_COLOR
is set, and the exit code a waited-for task gives the shell."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

import click

ELLIPSIS = "…"
GAP = "  "
MIN_CUT = 8  # a cut column keeps at least this many characters

STATE_COLOURS = {
    "WAITING": "cyan", "QUEUED": "cyan", "CLAIMED": "cyan", "RUNNING": "blue",
    "SUCCESS": "green", "FAILED": "red", "TIMEDOUT": "red", "LOST": "magenta",
    "STOPPED": "yellow", "SKIPPED": "yellow",
    "online": "green", "busy": "blue", "idle": "green", "paused": "yellow", "lost": "magenta",
    "stopping": "yellow", "active": "green", "error": "red",
    # workflow runs and their steps
    "running": "blue", "succeeded": "green", "failed": "red", "stopped": "yellow",
    "pending": "cyan", "skipped": "yellow",
}

# The shell's exit codes for a task's end: its own exit code when it ran to the end.
TIMEDOUT_EXIT = 124  # as timeout(1)
NOT_ENDED_EXIT = 125  # a wait ran out before the task ended
GONE_EXIT = 126  # stopped, skipped, lost or removed, with no exit code of its own


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def colour_on(stream: TextIO | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org) or
    the terminal is dumb."""
    return (is_terminal(stream) and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb")


def width() -> int | None:
    """Columns of the terminal printed to; None when output goes elsewhere (no cutting)."""
    if not is_terminal():
        return None
    return shutil.get_terminal_size((100, 24)).columns


def printable(text: str) -> str:
    """`text` with control and format characters shown as escapes (`\\x1b`, `\\u202e`):
    a table cell may hold what a task or a worker said (a progress message, an error, a
    host name), and escape sequences in it would drive the terminal of whoever lists it
    (retitle it, hide lines, write the clipboard), or reorder what is shown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)


def cut(text: str, most: int) -> str:
    """`text` in at most `most` characters, an ellipsis marking a cut."""
    if len(text) <= most:
        return text
    return text[:max(most - 1, 0)] + ELLIPSIS


def fit_widths(natural: Sequence[int], total: int | None,
               flexible: Sequence[int]) -> list[int]:
    """Column widths within `total` characters (with GAP between columns): the `flexible`
    columns give up room, widest first, down to MIN_CUT each; the others keep theirs."""
    widths = list(natural)
    if total is None:
        return widths
    over = sum(widths) + len(GAP) * (len(widths) - 1) - total
    while over > 0:
        candidates = [i for i in flexible if widths[i] > MIN_CUT]
        if not candidates:
            break
        widest = max(candidates, key=widths.__getitem__)
        second = max((widths[i] for i in candidates if i != widest), default=MIN_CUT)
        step = min(over, widths[widest] - max(second, MIN_CUT)) or 1
        widths[widest] -= step
        over -= step
    return widths


def print_table(headers: list[str], rows: list[list[str]], flexible: Sequence[int] = (),
                state_column: int | None = None, droppable: Sequence[int] = ()) -> None:
    """Rows under headers, aligned. On a terminal, fit to its width: the `flexible` columns
    give way (cut with an ellipsis), then the `droppable` ones are left out, in that order,
    while the table is still too wide; the `state_column` is coloured."""
    total = width()
    rows = [[printable(cell) for cell in row] for row in rows]
    keep = list(range(len(headers)))
    while True:
        natural = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in keep]
        flex = [n for n, i in enumerate(keep) if i in flexible]
        widths = fit_widths(natural, total, flex)
        wide = sum(widths) + len(GAP) * (len(widths) - 1)
        dropping = [i for i in droppable if i in keep]
        if total is None or wide <= total or not dropping:
            break
        keep.remove(dropping[0])
    colour = colour_on()
    for n, row in enumerate([headers, *rows]):
        cells = []
        for i, size in zip(keep, widths, strict=True):
            cell = row[i]
            text = cut(cell, size).ljust(size)
            if colour and n > 0 and i == state_column and cell in STATE_COLOURS:
                text = click.style(text, fg=STATE_COLOURS[cell])
            elif colour and n == 0:
                text = click.style(text, bold=True)
            cells.append(text)
        click.echo(GAP.join(cells).rstrip())


def state_text(state: str, stream: TextIO | None = None) -> str:
    """A state, coloured on a terminal."""
    if colour_on(stream) and state in STATE_COLOURS:
        return click.style(state, fg=STATE_COLOURS[state])
    return state


def exit_code_of(task: dict) -> int:
    """What the shell gets for a task waited for: its own exit code when it ran (0 for
    SUCCESS), 124 when it timed out, 125 when it had not ended yet, 126 when it was
    stopped, skipped, lost or failed before its command ran."""
    state = task.get("state")
    if state == "SUCCESS":
        return 0
    if state == "TIMEDOUT":
        return TIMEDOUT_EXIT
    if state == "SKIPPED":
        return GONE_EXIT
    if state not in ("FAILED", "STOPPED", "LOST"):
        return NOT_ENDED_EXIT
    code = task.get("exit_code")
    if isinstance(code, int) and 0 < code < 256:
        return code
    if isinstance(code, int) and code < 0:  # killed by a signal, as a shell reports it
        return min(128 - code, 255)
    return GONE_EXIT if state in ("STOPPED", "LOST") else 1
