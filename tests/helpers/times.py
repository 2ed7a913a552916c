"""Event times the product accepts: RFC 3339, inside its window (the last 30 days)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def recent(minute: int = 0, second: int = 0) -> str:
    """A fixed time of this test run (within the last three hours), `minute:second` after its
    hour began: times compare as their arguments do."""
    return (_BASE + timedelta(minutes=minute, seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
