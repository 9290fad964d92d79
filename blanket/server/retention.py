"""Which ended tasks go: the retention rules of the settings (`keep_finished`, `keep_failed`,
`keep_per_type`), of each type file and of each schedule file (`keep`, `keep_failed`,
`keep_last`). Each key is taken from the most specific place that sets it: a task a schedule
made, from its schedule, else its type, else the settings; a type no longer in conf.d falls
under the settings. Nothing is removed unless a rule says so.

- `keep`: an ended task goes once it ended longer ago than this.
- `keep_last`: at most this many ended tasks of the type (or of the schedule, if the schedule
  sets it) are kept, the newest by id; older ones go whatever their age.
- `keep_failed`: when set, FAILED and TIMEDOUT tasks go once they ended longer ago than
  this, and by nothing else (neither `keep` nor `keep_last` applies to them), so failures
  can outlive the successes around them.
Only ended tasks (SUCCESS, FAILED, TIMEDOUT, STOPPED, SKIPPED) are ever weighed; queued, claimed and
running ones never are."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from blanket.config.retention import Retention
from blanket.models import TaskState
from blanket.store.base import Ended

FAILED_STATES = frozenset({TaskState.FAILED, TaskState.TIMEDOUT})


@dataclass(frozen=True)
class Policy:
    """The retention a task falls under, each key resolved (None: no such limit)."""

    keep: float | None = None
    keep_failed: float | None = None
    keep_last: int | None = None
    # Whose keep_last counts it: ("schedule", NAME) when its schedule sets one, else
    # ("type", NAME).
    group: tuple[str, str] = ("type", "")


# The id of the newest task of a group that keep_last no longer keeps (None: it keeps all).
Cutoff = Callable[[tuple[str, str], int], int | None]


class RetentionRules:
    """The rules in force: the settings' defaults, and what each type and schedule file
    says (`types` and `schedules` by name)."""

    def __init__(self, defaults: Retention, types: Mapping[str, Retention] | None = None,
                 schedules: Mapping[str, Retention] | None = None):
        self.defaults = defaults
        self.types = dict(types or {})
        self.schedules = dict(schedules or {})

    @classmethod
    def of(cls, keep_finished: float | None, keep_failed: float | None,
           keep_per_type: int | None, types: Iterable[tuple[str, object]],
           schedules: Iterable[tuple[str, object]]) -> RetentionRules:
        """From the settings' three keys and (name, definition) pairs of types and schedules
        (anything with keep, keep_failed and keep_last attributes)."""
        return cls(Retention(keep_finished, keep_failed, keep_per_type),
                   {name: _retention(d) for name, d in types},
                   {name: _retention(d) for name, d in schedules})

    def configured(self) -> bool:
        """Whether any rule removes anything at all."""
        return any(r != Retention() for r in
                   (self.defaults, *self.types.values(), *self.schedules.values()))

    def counting_schedules(self) -> list[str]:
        """Schedules that set their own keep_last: their tasks are counted apart."""
        return sorted(n for n, r in self.schedules.items() if r.keep_last is not None)

    def policy(self, type_name: str, schedule: str | None) -> Policy:
        levels = [self.schedules.get(schedule) if schedule else None,
                  self.types.get(type_name), self.defaults]
        found = [level for level in levels if level is not None]

        def first(key: str) -> float | int | None:
            return next((getattr(r, key) for r in found if getattr(r, key) is not None), None)

        own_count = schedule is not None and schedule in self.schedules and \
            self.schedules[schedule].keep_last is not None
        group = ("schedule", schedule) if own_count and schedule else ("type", type_name)
        return Policy(first("keep"), first("keep_failed"), first("keep_last"),  # type: ignore[arg-type]
                      group)

    def until(self, now: float) -> float | None:
        """Tasks that ended at or after this may not go yet (None: no task ever goes): a
        bound for the sweep's look over ended tasks."""
        if not self.configured():
            return None
        levels = (self.defaults, *self.types.values(), *self.schedules.values())
        if any(r.keep_last is not None for r in levels):
            return now
        ages = [age for r in levels for age in (r.keep, r.keep_failed) if age is not None]
        return now - min(ages) if ages else None

    def why_it_goes(self, task: Ended, now: float, cutoff: Cutoff) -> str | None:
        """Why `task` goes now (the rule's name), or None when it stays. `cutoff(group, n)`
        gives the id of the newest task of a group that keeping the newest n leaves out."""
        policy = self.policy(task.type, task.schedule)
        if task.state in FAILED_STATES and policy.keep_failed is not None:
            return "keep_failed" if task.finished < now - policy.keep_failed else None
        if policy.keep is not None and task.finished < now - policy.keep:
            return "keep"
        if policy.keep_last is not None:
            last = cutoff(policy.group, policy.keep_last)
            if last is not None and task.id <= last:
                return "keep_last"
        return None


def _retention(definition: object) -> Retention:
    return Retention(getattr(definition, "keep", None), getattr(definition, "keep_failed", None),
                     getattr(definition, "keep_last", None))
