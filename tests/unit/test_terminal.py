"""Rules of the CLI's printing and waiting: columns fit the width given, cut with an ellipsis;
a waited-for task's end becomes the shell's exit code; --wait takes an optional duration
without swallowing the argument after it."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from blanket.taskwait import FOREVER, WaitOption, wait_limit
from blanket.terminal import GAP, MIN_CUT, cut, exit_code_of, fit_widths, print_table, printable


def test_cut_marks_what_it_cuts():
    assert cut("abcdef", 6) == "abcdef"
    assert cut("abcdefg", 6) == "abcde…"
    assert len(cut("x" * 100, 10)) == 10


@pytest.mark.parametrize("total", [40, 60, 80, 120])
def test_flexible_columns_give_way_widest_first_and_the_table_fits(total: int):
    natural = [5, 30, 50, 10]
    widths = fit_widths(natural, total, flexible=[1, 2])
    assert sum(widths) + len(GAP) * 3 <= max(total, 5 + 10 + 2 * MIN_CUT + 6)
    assert widths[0] == 5 and widths[3] == 10  # fixed columns keep their width
    assert widths[1] >= MIN_CUT and widths[2] >= MIN_CUT


def test_nothing_is_cut_when_it_fits_or_output_is_not_a_terminal():
    assert fit_widths([5, 30], 200, [1]) == [5, 30]
    assert fit_widths([5, 300], None, [1]) == [5, 300]


@pytest.mark.parametrize(("task", "code"), [
    ({"state": "SUCCESS", "exit_code": 0}, 0),
    ({"state": "FAILED", "exit_code": 7}, 7),
    ({"state": "FAILED", "exit_code": None}, 1),  # failed before its command ran
    ({"state": "FAILED", "exit_code": -9}, 137),  # killed by SIGKILL, as a shell says
    ({"state": "TIMEDOUT", "exit_code": -15}, 124),
    ({"state": "STOPPED", "exit_code": None}, 126),
    ({"state": "LOST", "exit_code": None}, 126),
    ({"state": "RUNNING"}, 125),
    ({"state": "QUEUED"}, 125),
])
def test_a_tasks_end_is_the_shells_exit_code(task: dict, code: int):
    assert exit_code_of(task) == code


@click.command(cls=WaitOption)
@click.argument("name", required=False)
@click.option("--wait")
def probe(name: str | None, wait: str | None) -> None:
    click.echo(f"{name}|{wait}")


@pytest.mark.parametrize(("args", "seen"), [
    (["echo", "--wait"], f"echo|{FOREVER}"),
    (["--wait", "echo"], f"echo|{FOREVER}"),
    (["--wait", "30", "echo"], "echo|30"),
    (["--wait", "5m", "echo"], "echo|5m"),
    (["--wait=2", "echo"], "echo|2"),
    (["echo"], "echo|None"),
    (["--", "--wait"], "--wait|None"),
])
def test_wait_takes_an_optional_duration(args: list[str], seen: str):
    result = CliRunner().invoke(probe, args)
    assert result.output.strip() == seen


def test_wait_limits_in_seconds():
    assert wait_limit(None) is None and wait_limit(FOREVER) is None
    assert wait_limit("90") == 90 and wait_limit("2m") == 120
    with pytest.raises(click.BadParameter, match="duration"):
        wait_limit("soon")


def test_control_and_format_characters_are_shown_as_escapes():
    assert printable("plain text, é 中 ✓") == "plain text, é 中 ✓"
    assert printable("a\x1b]0;owned\x07b\tc\u202ed\x9b") == \
        "a\\x1b]0;owned\\x07b\\x09c\\u202ed\\x9b"


def test_a_table_cell_cannot_drive_the_terminal(capsys):
    print_table(["ID", "PROGRESS"], [["1", "50% \x1b[2J\x1b]52;c;aGk=\x07done"]])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "50% \\x1b[2J\\x1b]52;c;aGk=\\x07done" in out


def test_top_shows_what_workers_and_tasks_say_as_text_not_markup_or_escapes():
    from rich.console import Console

    from blanket.top import Snapshot, render
    said = "[bold red]fake[/bold red] \x1b]0;owned\x07"
    snapshot = Snapshot(
        at=0.0, counts={}, workers=[{"id": "w1", "state": "busy", "tags": [said],
                                     "host": said, "task": 1, "heartbeat": None}],
        running=[{"id": 1, "type": "t", "state": "RUNNING", "worker": said,
                  "progress": 5, "progress_message": said}],
        queued=[])
    snapshot.counts = dict.fromkeys(("WAITING", "QUEUED", "CLAIMED", "RUNNING", "SUCCESS",
                                     "FAILED", "TIMEDOUT", "STOPPED", "SKIPPED", "LOST"), 0)
    console = Console(width=400, record=True, color_system=None)
    console.print(render(snapshot, None, "http://x"))
    out = console.export_text()
    assert "[bold red]fake[/bold red]" in out and "\x1b" not in out
    assert "\\x1b]0;owned\\x07" in out
