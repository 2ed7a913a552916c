"""What one enrichment returns: the same fields as `cohortkv enrich --json`."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Source = Literal["live", "cache", "none", "skipped"]


class SignalResult(msgspec.Struct, frozen=True):
    """`live`: answered in time; `cache`: last good answer; `none`: nothing to use;
    `skipped`: not asked (behavioral without consent)."""

    source: Source
    cohorts: list[str] = []


class ConsentDecision(msgspec.Struct, frozen=True):
    allowed: bool
    reason: str


class EnrichResult(msgspec.Struct, frozen=True):
    url: str
    keyvalues: dict[str, list[str]]
    behavioral: SignalResult
    contextual: SignalResult
    consent: ConsentDecision
    elapsed_ms: float
    platform: str | None = None
    user_id: str | None = None


def result_doc(result: EnrichResult) -> dict[str, Any]:
    """As `cohortkv enrich --json` prints it: absent platform / user id left out, not null."""
    doc: dict[str, Any] = msgspec.to_builtins(result)
    for extra in ("platform", "user_id"):
        if doc.get(extra) is None:
            doc.pop(extra, None)
    return doc
