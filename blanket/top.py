"""`blanket top`: a live view of the queue, drawn with rich: tasks by state and how many end
a second, the workers with their current task and heartbeat age, the tasks running with
their progress, and the oldest queued tasks with why they wait. Read from the server
over HTTP every `interval` seconds; Ctrl-C leaves it."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from blanket.client import Client
from blanket.durations import format_duration
from blanket.terminal import STATE_COLOURS, printable

STATES = ("WAITING", "QUEUED", "CLAIMED", "RUNNING", "SUCCESS", "FAILED", "TIMEDOUT", "STOPPED",
          "SKIPPED", "LOST")
ENDED = ("SUCCESS", "FAILED", "TIMEDOUT", "STOPPED", "SKIPPED", "LOST")
RATE_WINDOW = 10.0  # seconds the ended-per-second figure is measured over
SHOWN = 15  # rows of each table
WARNED = ("no_worker", "type_broken")  # waiting reasons shown in yellow: someone must act


@dataclass
class Snapshot:
    """What one refresh read from the server."""

    at: float
    counts: dict[str, int]
    workers: list[dict]
    running: list[dict]
    queued: list[dict]


@dataclass
class Rates:
    """Tasks ended a second, over the last RATE_WINDOW seconds of snapshots."""

    seen: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, at: float, ended: int) -> float | None:
        self.seen.append((at, ended))
        while len(self.seen) > 2 and at - self.seen[1][0] >= RATE_WINDOW:
            self.seen.popleft()
        first_at, first = self.seen[0]
        if at - first_at <= 0:
            return None
        return max(0, ended - first) / (at - first_at)


def read(client: Client) -> Snapshot:
    counts = {state: client.get(f"/task/?count&state={state}")["count"] for state in STATES}
    return Snapshot(
        at=time.monotonic(), counts=counts, workers=client.get("/worker/"),
        running=client.get(f"/task/?state=CLAIMED,RUNNING&limit={SHOWN}"),
        queued=client.get(f"/task/?state=QUEUED&limit={SHOWN}&order=oldest"))


def render(snapshot: Snapshot, rate: float | None, server: str) -> Group:
    header = Text()
    header.append(f"blanket top  {server}  {time.strftime('%H:%M:%S')}\n", style="bold")
    for state in STATES:
        header.append(f"{state.lower()} ", style="dim")
        header.append(f"{snapshot.counts[state]}  ", style=STATE_COLOURS.get(state, ""))
    header.append("\nended/s ", style="dim")
    header.append("-" if rate is None else f"{rate:.1f}")
    codes = Counter((t.get("waiting") or {}).get("code") for t in snapshot.queued)
    if codes["no_worker"]:
        header.append(f"  {codes['no_worker']} queued task(s) no worker can take",
                      style="bold yellow")
    if codes["type_broken"]:
        header.append(f"  {codes['type_broken']} queued task(s) held: their type's file has "
                      "problems", style="bold yellow")

    workers = Table(title="workers", box=box.SIMPLE, title_justify="left", expand=True)
    for name in ("ID", "STATE", "TAGS", "HOST", "TASK", "HEARTBEAT"):
        workers.add_column(name, overflow="ellipsis", no_wrap=True)
    now = time.time()
    for w in snapshot.workers[:SHOWN]:
        age = f"{_ago(now, w['heartbeat'])} ago" if w.get("heartbeat") else "-"
        workers.add_row(_said(w["id"]), Text(w["state"], style=STATE_COLOURS.get(w["state"], "")),
                        _said(",".join(w.get("tags") or [])), _said(w.get("host") or ""),
                        str(w.get("task") or ""), age)

    running = Table(title="running", box=box.SIMPLE, title_justify="left", expand=True)
    for name in ("ID", "TYPE", "STATE", "WORKER", "FOR", "PROGRESS"):
        running.add_column(name, overflow="ellipsis", no_wrap=True)
    for t in snapshot.running:
        since = t.get("started") or t.get("claimed")
        took = _ago(now, since) if since else "-"
        progress = ""
        if t.get("progress") is not None:
            progress = f"{t['progress']}% {t.get('progress_message') or ''}".strip()
        state = Text(t["state"], style=STATE_COLOURS.get(t["state"], ""))
        running.add_row(str(t["id"]), _said(t["type"]), state, _said(t.get("worker") or ""),
                        took, _said(progress))

    queued = Table(title="queued, oldest first", box=box.SIMPLE, title_justify="left", expand=True)
    for name in ("ID", "TYPE", "PRIORITY", "WAITS FOR", "WHY"):
        queued.add_column(name, overflow="ellipsis", no_wrap=True)
    for t in snapshot.queued:
        why = t.get("waiting") or {}
        queued.add_row(str(t["id"]), _said(t["type"]), str(t.get("priority", 0)),
                       _ago(now, t["added"]),
                       Text(why.get("message", ""),
                            style="yellow" if why.get("code") in WARNED else ""))
    footer = Text("Ctrl-C to quit", style="dim")
    return Group(header, workers, running, queued, footer)


def _said(text: str) -> Text:
    """What a worker, a task or a submitter said, shown as it is: not read as Rich markup
    (`[red]`), its control characters as escapes (see terminal.printable)."""
    return Text(printable(text))


def run(client: Client, server: str, interval: float, once: bool,
        console: Console | None = None) -> None:
    console = console or Console()
    rates = Rates()

    def frame() -> Group:
        snapshot = read(client)
        ended = sum(snapshot.counts[state] for state in ENDED)
        return render(snapshot, rates.add(snapshot.at, ended), server)

    if once or not console.is_terminal:
        console.print(frame())
        return
    with Live(frame(), console=console, screen=True, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
        except KeyboardInterrupt:
            pass


def _ago(now: float, then: float) -> str:
    """How long ago `then` was, to the second (1h2m3s)."""
    return format_duration(round(max(0.0, now - then)))
