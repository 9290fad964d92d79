"""How long ended tasks are kept, as a type file or a schedule file says it: `keep` (how long
after it ended), `keep_failed` (the same for FAILED and TIMEDOUT tasks, whatever `keep` and
`keep_last` say) and `keep_last` (at most this many, the newest). blanket.toml gives the
defaults (`keep_finished`, `keep_failed`, `keep_per_type`); server/retention.py applies them."""

from __future__ import annotations

from dataclasses import dataclass

from blanket.config.checker import MAX_KEEP, Checker

KEYS = ("keep", "keep_failed", "keep_last")
MIN_KEEP = 60.0  # seconds: a shorter keep is a typo ("30" meant 30 days?)


@dataclass(frozen=True)
class Retention:
    """One file's retention keys; None where the file does not say (the next level applies)."""

    keep: float | None = None
    keep_failed: float | None = None
    keep_last: int | None = None


def read_retention(checker: Checker, data: dict) -> dict[str, float | int]:
    """The retention keys present in a file's top-level `data`, checked (problems with
    their line go to `checker`)."""
    found: dict[str, float | int] = {}
    for key in ("keep", "keep_failed"):
        if key in data:
            seconds = checker.duration(key, data[key], checker.top_line(key), least=MIN_KEEP,
                                       most=MAX_KEEP)
            if seconds is not None:
                found[key] = seconds
    if "keep_last" in data:
        count = checker.integer("keep_last", data["keep_last"], checker.top_line("keep_last"),
                                low=1)
        if count is not None:
            found["keep_last"] = count
    return found
