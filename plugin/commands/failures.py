"""What a person is told when a Permutive API failed a command: which API, why, and the fix.

`cohortkv enrich` and `cohortkv verify` both say it from the client's `UpstreamError` (the
failure kind, the HTTP status, Permutive's error code and message); the API key is never in
it: the text is built from the kind and the answer, never from the request URL.
"""

from __future__ import annotations

from collections.abc import Callable

from plugin.permutive.clients import UpstreamError
from plugin.result import EnrichResult, SignalResult

EXIT_API_FAILED = 4
"""`cohortkv enrich`: the ad request went out, but a Permutive API failed (see --help)."""

FAILED_REASONS = frozenset(
    {"cache_fallback_error", "cache_fallback_timeout", "breaker_open", "shed"}
)
"""A signal's reasons that say its API was asked and did not answer in time or at all."""


def upstream_text(api: str, url: str, e: UpstreamError, redact: Callable[[str], str] = str) -> str:
    """Why the call failed, in a person's words (`the CCS API answered HTTP 401 ...`)."""
    if e.kind == "connect":
        return f"cannot reach the {api} API at {url}: {e.detail}"
    if e.kind == "decode":
        return f"the {api} API's answer is not one it documents ({e.detail})"
    if e.kind == "timeout":
        return f"the {api} API did not answer within http.request_timeout_s"
    parts = [str(p) for p in (e.code, e.message) if p is not None and p != ""]
    said = (": " + " - ".join(redact(p) for p in parts)) if parts else ""
    return f"the {api} API answered {e.detail or e.kind}{said}"


def fix_for(kind: str, url_flag: str) -> str:
    """What to do about a failure of `kind`; `url_flag` is the API's URL flag."""
    if kind == "auth":
        return "fix: give the workspace's API key (--api-key, api_key or COHORTKV_API_KEY)"
    if kind in ("connect", "redirect", "decode", "too_large"):
        field = url_flag.lstrip("-").replace("-", "_")
        return f"fix: check {url_flag} ({field}) names the API's base URL, and the network"
    if kind in ("timeout", "late"):
        return "fix: raise --budget-ms (budget_ms), or check the network to the API"
    if kind == "http_429":
        return "fix: too many calls for the key's rate limit; try again later"
    if kind == "http_4xx":
        return "fix: the API refused the request; `cohortkv verify` shows what it says"
    return "fix: the API is failing; try again later (cached cohorts are used meanwhile)"


def failure_lines(
    result: EnrichResult,
    errors: dict[str, UpstreamError | None],
    urls: dict[str, str],
    budget_ms: int,
) -> list[str]:
    """One line per signal whose API failed in `result`: which API, why, and the fix.

    `errors` holds each API's last failure (`ccs`, `contextual`), `urls` their base URLs."""
    lines: list[str] = []
    for signal, api, label, flag in (
        (result.behavioral, "ccs", "CCS", "--ccs-url"),
        (result.contextual, "contextual", "Contextual", "--ctx-url"),
    ):
        if signal.reason not in FAILED_REASONS:
            continue
        error = errors.get(api)
        kind: str
        if error is not None:
            why, kind = upstream_text(label, urls[api], error), error.kind
        else:
            why, kind = _unanswered(label, signal, budget_ms)
        lines.append(f"{why}; {fix_for(kind, flag)}")
    return lines


def _unanswered(label: str, signal: SignalResult, budget_ms: int) -> tuple[str, str]:
    if signal.reason == "cache_fallback_timeout":
        return f"the {label} API did not answer within the budget ({budget_ms} ms)", "late"
    if signal.reason == "breaker_open":
        return f"the {label} API failed too often: its circuit breaker is open", "breaker_open"
    return f"the {label} API had too many calls in flight: this one was shed", "shed"
