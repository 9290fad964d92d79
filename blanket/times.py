"""Times as the API shows them: ISO 8601 in UTC, to the millisecond, with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(moment: float | None) -> str | None:
    """`moment` (Unix seconds) as 2026-11-28T02:30:00.000Z, or None."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
