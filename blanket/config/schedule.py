"""Schedules (recurring jobs) from conf.d/schedules/NAME.toml, and the rules of when they fire.

Times are Unix seconds (floats) everywhere in the rules; the caller passes `now`, so the
clock is injectable and a scheduler loop only stores one float per schedule (its next fire).

Cron expressions have five fields (minute hour day month weekday) or six with seconds FIRST
(second minute hour day month weekday, the Quartz/Spring convention). croniter puts a sixth
field last by default; we pass `second_at_beginning=True`. `@daily`-style aliases work too.

Daylight saving: cron fields match local wall-clock time in the schedule's zone, and each
matching wall time fires once. A wall time that does not exist (clocks go forward) fires at
the first instant after the gap (02:30 in Paris on 29 March 2026 fires at 03:00 CEST); a wall
time that happens twice (clocks go back) fires only the first time (fold=0). croniter 7 fires
twice on the repeated hour with aware datetimes, so we walk naive wall times ourselves.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from itertools import islice, takewhile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter

from blanket.config.checker import (
    Checker,
    header_line,
    key_line,
    parse_toml,
)
from blanket.config.notify import NotifyTarget, parse_notify_blocks
from blanket.config.problems import read_config_text
from blanket.config.retention import KEYS as RETENTION_KEYS
from blanket.config.retention import read_retention
from blanket.envnames import FIRE_TIME_VARIABLE, too_big, with_fire_time
from blanket.models import MAX_PRIORITY

MISSED = ("skip", "once", "all")
OVERLAP = ("skip", "queue", "allow")
LATENESS = 60.0  # seconds a fire time may be late and still count as on time under missed="skip"
MIN_EVERY = 1.0
KEYS = (
    "type", "command", "workflow", "cron", "every", "timezone", "missed", "max_missed", "overlap",
    "start", "end", "enabled", "priority", "tags", "executor", "description", "environment",
    "notify", *RETENTION_KEYS,
)
CRON_EXAMPLE = (
    "write five fields 'minute hour day month weekday' such as '30 2 * * *', "
    "or six with seconds first such as '0 30 2 * * *'"
)
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """A validated schedule. `every` is in seconds; `start`/`end` are aware datetimes."""

    name: str
    type: str | None = None
    command: str | None = None
    workflow: str | None = None  # a workflow run (conf.d/workflows/NAME.toml) each fire
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    missed: str = "skip"
    max_missed: int = 100
    overlap: str = "skip"
    start: datetime | None = None
    end: datetime | None = None
    enabled: bool = True
    priority: int = 0
    tags: tuple[str, ...] = ()
    executor: str | None = None
    description: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]] blocks (config/notify.py)
    # How long the tasks it made are kept once ended (config/retention.py); None: their type's.
    keep: float | None = None
    keep_failed: float | None = None
    keep_last: int | None = None
    # The file as it was parsed: a command schedule's version is a hash of it.
    text: str = field(default="", compare=False, repr=False)

    def to_json(self) -> dict:
        data = asdict(replace(self, notify=()))
        del data["text"]
        data["notify"] = [{"on": list(t.on), "target": t.label} for t in self.notify]
        data["tags"] = list(self.tags)
        data["start"] = self.start.isoformat() if self.start else None
        data["end"] = self.end.isoformat() if self.end else None
        return data


# ---------------------------------------------------------------- parsing


def parse_schedule_file(path: Path, name: str) -> Schedule:
    """Read and validate one schedule file; raise ConfigInvalid listing every problem."""
    return parse_schedule_text(read_config_text(path), name, str(path))


def parse_schedule_text(text: str, name: str, file: str) -> Schedule:
    """Validate schedule TOML `text` (from `file`, for messages); raise ConfigInvalid."""
    checker = _ScheduleChecker(file, text)
    return checker.finish(checker.build(parse_toml(text, file), name))


class _ScheduleChecker(Checker):
    """Converts a schedule file's TOML data into a Schedule, collecting problems."""

    def env_line(self, name: str) -> int | None:
        return key_line(self.text, name, header_line(self.text, "environment") or 0) \
            or self.top_line("environment")

    def build(self, data: dict, name: str) -> Schedule | None:
        self.unknown_keys(data, KEYS)
        self.check_one_of(data, ("type", "command", "workflow"), "what to run")
        self.check_exactly_one(data, "cron", "every", "when to run")
        zone = self.zone(data.get("timezone", "UTC"))
        fields = {
            "type": self.text_value(data, "type"),
            "command": self.text_value(data, "command"),
            "workflow": self.text_value(data, "workflow"),
            "cron": self.cron(data.get("cron")),
            "every": self.every(data.get("every")),
            "timezone": data.get("timezone", "UTC") if zone else "UTC",
            "missed": self.setting(data, "missed", self.choice, MISSED),
            "max_missed": self.setting(data, "max_missed", self.integer, 1),
            "overlap": self.setting(data, "overlap", self.choice, OVERLAP),
            "start": self.moment(data, "start", zone or ZoneInfo("UTC")),
            "end": self.moment(data, "end", zone or ZoneInfo("UTC")),
            "enabled": self.setting(data, "enabled", self.boolean),
            "priority": self.setting(data, "priority", self.integer, -MAX_PRIORITY,
                                     MAX_PRIORITY),
            "tags": self.setting(data, "tags", self.string_list),
            "executor": self.executor(data),
            "description": self.text_value(data, "description") or "",
            "environment": self.environment(data.get("environment", {})),
            "notify": parse_notify_blocks(self, data, allow_secret=False) or None,
        }
        fields.update(read_retention(self, data))
        self.check_window(fields["start"], fields["end"])
        fields = {key: value for key, value in fields.items() if value is not None}
        return None if self.problems else Schedule(name=name, text=self.text, **fields)

    def setting(self, data: dict, key: str, check: Callable[..., object], *rule: object) -> Any:
        """`check`ed value of an optional `key`, None when absent (the default applies)."""
        if key not in data:
            return None
        return check(key, data[key], self.top_line(key), *rule)

    def check_one_of(self, data: dict, keys: tuple[str, ...], what: str) -> None:
        found = [k for k in keys if k in data]
        listed = ", ".join(f"'{k}'" for k in keys)
        if len(found) > 1:
            self.problem(self.top_line(found[1]),
                         f"{' and '.join(repr(k) for k in found)} are all set; keep exactly "
                         f"one of {listed} to say {what}")
        elif not found:
            self.problem(None, f"none of {listed} is set; add exactly one to say {what}")

    def check_exactly_one(self, data: dict, a: str, b: str, what: str) -> None:
        if a in data and b in data:
            self.problem(self.top_line(b),
                         f"both '{a}' and '{b}' are set; keep exactly one to say {what}")
        elif a not in data and b not in data:
            self.problem(None, f"neither '{a}' nor '{b}' is set; add exactly one to say {what}")

    def text_value(self, data: dict, key: str) -> str | None:
        if key not in data:
            return None
        return self.string(key, data[key], self.top_line(key), nonempty=True)

    def zone(self, value: object) -> ZoneInfo | None:
        if isinstance(value, str):
            try:
                return ZoneInfo(value)
            except (KeyError, ValueError):
                pass
        close = difflib.get_close_matches(str(value), sorted(available_timezones()), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        self.problem(self.top_line("timezone"), f"timezone: unknown time zone {value!r}; {hint}"
                                               "use an IANA name such as 'Europe/Paris' or 'UTC'")
        return None

    def cron(self, value: object) -> str | None:
        if value is None:
            return None
        line = self.top_line("cron")
        if self.string("cron", value, line) is None:
            return None
        assert isinstance(value, str)
        reason = cron_problem(value)
        if reason:
            self.problem(line, f"cron: {value!r} is not a cron expression: {reason}; "
                               f"{CRON_EXAMPLE}")
            return None
        return value

    def every(self, value: object) -> float | None:
        if value is None:
            return None
        return self.duration("every", value, self.top_line("every"), least=MIN_EVERY)

    def moment(self, data: dict, key: str, zone: ZoneInfo) -> datetime | None:
        value = data.get(key)
        if value is None:
            return None
        moment = _as_datetime(value)
        if moment is None:
            self.problem(self.top_line(key),
                         f"{key}: {value!r} is not a date; write a date or date-time such as "
                         "2026-01-01 or 2026-01-01T00:00:00Z (without an offset: in 'timezone')")
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=zone)

    def check_window(self, start: datetime | None, end: datetime | None) -> None:
        if start and end and end <= start:
            self.problem(self.top_line("end"),
                         f"end: {end.isoformat()} is not after start ({start.isoformat()}); "
                         "move 'end' later or remove it")

    def executor(self, data: dict) -> str | None:
        value = self.text_value(data, "executor")
        if value is not None and "type" in data:
            self.problem(self.top_line("executor"),
                         "executor: only applies with 'command'; a type names its own "
                         "executor, so remove 'executor' or use 'command'")
            return None
        return value or ("bash" if "command" in data else None)

    def environment(self, value: object) -> dict[str, str] | None:
        if not isinstance(value, dict):
            self.wrong_type("environment", "a table: [environment] followed by NAME = \"value\" "
                                           "lines", value, self.top_line("environment"))
            return None
        env = {}
        for name, item in value.items():
            line = self.env_line(name)
            if self.environment_name("environment", name, line):
                text = self.environment_value(f"environment.{name}", item, line)
                if text is not None:
                    env[name] = text
        # Each fire adds its time, BLANKET_FIRE_TIME.
        if (problem := too_big(with_fire_time(env))) is not None:
            self.problem(self.top_line("environment"),
                         f"environment: with the {FIRE_TIME_VARIABLE} each fire adds, {problem}")
        return env


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron expression we accept, or None when it is fine."""
    fields = expression.split()
    if len(fields) == 1 and fields[0].startswith("@"):
        if fields[0].lower() not in ALIASES:
            return f"unknown alias {fields[0]!r}; the aliases are {', '.join(ALIASES)}"
    elif len(fields) not in (5, 6):
        return f"it has {len(fields)} fields, expected 5 (or 6 with seconds first)"
    try:
        croniter(expression, datetime(2000, 1, 1), second_at_beginning=True).get_next(datetime)
    except CroniterBadDateError:
        return "it never matches a real date"
    except (CroniterError, ValueError, KeyError, TypeError) as e:
        return str(e) or type(e).__name__
    return None


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- fire times


def next_fire(schedule: Schedule, after: float) -> float | None:
    """First fire time strictly after `after`, within [start, end); None if there is none."""
    return next(_upcoming(schedule, after), None)


def fire_times(schedule: Schedule, after: float, until: float) -> list[float]:
    """All fire times in (after, until], oldest first."""
    return list(takewhile(lambda t: t <= until, _upcoming(schedule, after)))


def due_runs(schedule: Schedule, next_fire: float | None, now: float,
             max_missed: int | None = None,
             lateness: float = LATENESS) -> tuple[list[float], float | None]:
    """Fire times to run at `now` (oldest first) and the next fire time to store.

    `next_fire` is the stored next fire time: None for a new (or re-enabled) schedule, which
    runs nothing now and is never backfilled. Otherwise every fire time in [next_fire, now] is
    due, and `missed` picks which run: "skip" runs only the latest, and only if it is at most
    `lateness` seconds late; "once" runs the latest however late; "all" runs the latest
    `max_missed` (default: the schedule's `max_missed`). A disabled schedule returns ([], None).
    """
    if not schedule.enabled:
        return [], None
    upcoming = _first_after(schedule, now)
    if next_fire is None:
        return [], upcoming
    if next_fire > now:
        return [], next_fire
    keep = (max_missed or schedule.max_missed) if schedule.missed == "all" else 1
    passed = list(islice(_passed(schedule, since=next_fire, until=now), keep))
    if schedule.missed == "skip":
        passed = [t for t in passed if now - t <= lateness]
    return sorted(passed), upcoming


def overlap_decision(schedule: Schedule, previous_running: bool) -> str:
    """'run', 'skip' or 'queue' for a new run when the previous one may still be running;
    'queue' means the run waits until the previous one ends (the scheduler keeps it)."""
    if not previous_running or schedule.overlap == "allow":
        return "run"
    return "skip" if schedule.overlap == "skip" else "queue"


def _first_after(schedule: Schedule, after: float) -> float | None:
    return next(_upcoming(schedule, after), None)


def _upcoming(schedule: Schedule, after: float) -> Iterator[float]:
    """Fire times > after inside [start, end), increasing."""
    if not schedule.enabled:
        return
    start, end = _window(schedule)
    inclusive = start is not None and start > after
    lower = start if inclusive else after
    for t in _instants_from(schedule, lower, inclusive):
        if end is not None and t >= end:
            return
        yield t


def _passed(schedule: Schedule, since: float, until: float) -> Iterator[float]:
    """Fire times in [since, until] inside [start, end), decreasing."""
    start, end = _window(schedule)
    inclusive = end is None or until < end
    upper = until if inclusive else end
    floor = max(since, start) if start is not None else since
    yield from takewhile(lambda t: t >= floor, _instants_to(schedule, upper, inclusive))


def _window(schedule: Schedule) -> tuple[float | None, float | None]:
    return (schedule.start.timestamp() if schedule.start else None,
            schedule.end.timestamp() if schedule.end else None)


def _instants_from(schedule: Schedule, lower: float, inclusive: bool) -> Iterator[float]:
    """Fire times (ignoring start/end) from `lower` upwards, strictly increasing."""
    if schedule.every is not None:
        yield from _every_from(schedule, lower, inclusive)
        return
    zone = ZoneInfo(schedule.timezone)
    wall = _wall(lower, zone)
    last = None
    for candidate in _walls(schedule, wall - _ONE_MICROSECOND if inclusive else wall, False):
        t = _instant(candidate, zone)
        if (t > lower or (inclusive and t == lower)) and t != last:
            last = t
            yield t


def _instants_to(schedule: Schedule, upper: float, inclusive: bool) -> Iterator[float]:
    """Fire times (ignoring start/end) from `upper` downwards, strictly decreasing."""
    if schedule.every is not None:
        yield from _every_to(schedule, upper, inclusive)
        return
    zone = ZoneInfo(schedule.timezone)
    local = datetime.fromtimestamp(upper, zone)
    # In the repeated hour's second pass, later wall times of that hour already fired (fold=0).
    wall = local.replace(tzinfo=None, fold=0) + _fold_length(local)
    last = None
    for candidate in _walls(schedule, wall + _ONE_MICROSECOND if inclusive else wall, True):
        t = _instant(candidate, zone)
        if (t < upper or (inclusive and t == upper)) and t != last:
            last = t
            yield t


def _every_from(schedule: Schedule, lower: float, inclusive: bool) -> Iterator[float]:
    anchor, step = _anchor(schedule), schedule.every
    assert step is not None
    k = max(0, math.floor((lower - anchor) / step))
    while anchor + k * step < lower or (not inclusive and anchor + k * step == lower):
        k += 1
    while True:
        yield anchor + k * step
        k += 1


def _every_to(schedule: Schedule, upper: float, inclusive: bool) -> Iterator[float]:
    anchor, step = _anchor(schedule), schedule.every
    assert step is not None
    k = math.ceil((upper - anchor) / step)
    while k >= 0 and (anchor + k * step > upper or (not inclusive and anchor + k * step == upper)):
        k -= 1
    while k >= 0:
        yield anchor + k * step
        k -= 1


def _anchor(schedule: Schedule) -> float:
    return schedule.start.timestamp() if schedule.start else 0.0


def _walls(schedule: Schedule, wall: datetime, backward: bool) -> Iterator[datetime]:
    """Naive local wall times matching the cron expression, moving away from `wall`."""
    assert schedule.cron is not None
    found = croniter(schedule.cron, wall, second_at_beginning=True)
    step = found.get_prev if backward else found.get_next
    while True:
        try:
            yield step(datetime)
        except CroniterBadDateError:
            return


def _wall(ts: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, zone).replace(tzinfo=None, fold=0)


def _fold_length(local: datetime) -> timedelta:
    """How far the wall clock was set back, when `local` is in a repeated hour's second pass."""
    if not local.fold:
        return timedelta(0)
    first, second = local.replace(fold=0).utcoffset(), local.utcoffset()
    assert first is not None and second is not None
    return first - second


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """Unix time of a naive wall time: its first occurrence, or the end of the gap it is in."""
    first = wall.replace(tzinfo=zone).timestamp()
    if _wall(first, zone) == wall:
        return first
    return _gap_end(wall, zone)


@lru_cache(maxsize=256)
def _gap_end(wall: datetime, zone: ZoneInfo) -> float:
    # Within a gap, fold=1 reads the wall time with the later offset and fold=0 with the
    # earlier one; the transition lies between, so search that span for the first second
    # whose wall time is past `wall`.
    low = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = math.ceil(wall.replace(tzinfo=zone, fold=0).timestamp())
    while low < high:
        middle = (low + high) // 2
        if _wall(middle, zone) > wall:
            high = middle
        else:
            low = middle + 1
    return float(high)
