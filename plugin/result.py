"""What one enrichment returns: the same fields as `cohortkv enrich --json`."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from plugin.request import AdRequest

Source = Literal["live", "cache", "none", "skipped"]

Reason = Literal[
    "live",
    "shared_call",
    "view_reuse",
    "play_rejected",
    "play_failed",
    "fresh_cache",
    "cache_first",
    "cache_fallback_timeout",
    "cache_fallback_error",
    "breaker_open",
    "shed",
    "no_identity",
    "invalid_identity",
    "no_content",
    "consent_denied",
    "not_recognised",
]
"""Why a signal's source is what it is (docs/signals.md has the table)."""

REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]


class SignalResult(msgspec.Struct, frozen=True):
    """`source` says where the cohorts came from: `live` (answered in time), `cache` (an
    earlier answer), `none` (nothing to use) or `skipped` (not asked); `reason` says why."""

    source: Source
    cohorts: list[str] = []
    reason: Reason = "live"


class ConsentDecision(msgspec.Struct, frozen=True):
    allowed: bool
    reason: str


class EnrichResult(msgspec.Struct, frozen=True):
    """What was done: `keyvalues` lists exactly what was written into the request (nothing
    when it went out unchanged), and each signal says where its cohorts came from and why."""

    url: str
    keyvalues: dict[str, list[str]]
    behavioral: SignalResult
    contextual: SignalResult
    consent: ConsentDecision
    elapsed_ms: float
    platform: str | None = None
    user_id: str | None = None
    request: AdRequest | None = None
    """The request as it goes out (`url` is its URL); its body for bid requests."""
    unrecognised: str | None = None
    """Why no platform recognised the request (`no_adapter`, `path`, `body`, ...): it went
    out unchanged. None when it was recognised."""

    @property
    def recognised(self) -> bool:
        return self.unrecognised is None


def result_doc(result: EnrichResult) -> dict[str, Any]:
    """As `cohortkv enrich --json` prints it: absent platform / user id left out, not null;
    a JSON bid request's body as JSON."""
    doc: dict[str, Any] = msgspec.to_builtins(result)
    doc.pop("request", None)
    for extra in ("platform", "user_id"):
        if doc.get(extra) is None:
            doc.pop(extra, None)
    req = result.request
    if req is not None and req.method != "GET":
        doc["method"] = req.method
        if req.body:
            try:
                doc["body"] = msgspec.json.decode(req.body)
            except msgspec.DecodeError:
                doc["body"] = req.body.decode("utf-8", "replace")
    return doc
