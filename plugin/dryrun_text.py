"""The explain page's verdict in words: why a request gets the cohorts it gets, or none."""

from __future__ import annotations

from collections.abc import Mapping

from plugin.explanation import Explanation, SignalView

REASON_TEXT: dict[str, str] = {
    "live": "the API answered in time",
    "shared_call": "another request's call for the same content answered in time",
    "view_reuse": "a later ad break of a view whose play event already went out",
    "play_rejected": "the CCS API refused the view's play event (4xx): never sent again",
    "play_failed": "the view's play event failed twice, perhaps landed: not sent a third time",
    "fresh_cache": "a fresh cached answer for this content",
    "cache_first": "the user's cached answer, used at once ([behavioral] wait = if_uncached)",
    "cache_fallback_timeout": "the call missed budget_ms: the last good answer",
    "cache_fallback_error": "the call failed: the last good answer",
    "breaker_open": "the API's circuit breaker is open: no call, the last good answer",
    "shed": "too many calls in flight: no call, the last good answer",
    "no_identity": "the request carries no identity",
    "invalid_identity": "the identity would be refused by the CCS API",
    "no_content": "no content URL and no content id",
    "consent_denied": "consent denied: no CCS call",
    "not_recognised": "the request was not recognised",
}
"""One phrase per signal reason (`plugin.result.REASONS`; docs/signals.md has the table)."""


def summary_lines(x: Explanation, shapes: Mapping[str, str]) -> list[str]:
    """The verdict first (what is written, or that nothing is), then one line per cause."""
    if not x.recognised:
        who = x.platform or "any platform"
        lines = [f"not recognised by {who} ({x.unrecognised}): it goes out unchanged"]
        if x.unrecognised == "no_adapter":
            lines.append(
                "what each platform's requests look like: "
                + "; ".join(f"{name}: {shape}" for name, shape in shapes.items() if shape)
            )
        return lines
    written = sum(len(v) for v in x.keyvalues.values())
    if written:
        kvs = "; ".join(f"{k}={','.join(v)}" for k, v in x.keyvalues.items())
        lines = [f"{written} value(s) written: {kvs}"]
    else:
        lines = ["no cohorts written"]
    if not x.activation_platforms:
        lines.append(
            f"{x.platform} has no activation_platforms: nothing can be written into its"
            f" requests; set [adapters.{x.platform}] activation_platforms"
        )
    if x.consent is not None and not x.consent.allowed:
        lines.append(f"behavioral: consent denied ({x.consent.reason}): no CCS call")
    for name, signal in (("behavioral", x.behavioral), ("contextual", x.contextual)):
        if signal is not None and signal.reason != "consent_denied":
            lines.append(f"{name}: {_signal_line(signal, x.activation_platforms)}")
    if x.not_written:
        lines.append(
            f"{len(x.not_written)} value(s) the platform could not carry (a length budget such"
            " as GAM's max_url_length, or a value it cannot hold)"
        )
    return lines


def _signal_line(s: SignalView, platforms: list[str]) -> str:
    why = REASON_TEXT.get(s.reason, s.reason)
    got = len(s.cohorts)
    on = sum(1 for r in s.cohorts if r.activated)
    if s.source == "not_asked":
        if s.reason == "live":
            return "the API would be asked (dry run: press 'Run against the APIs')"
        return why
    if got == 0:
        return f"no cohorts ({s.source}: {why})"
    if on == 0:
        return f"{got} cohort(s), none activated for {', '.join(platforms) or 'this platform'}"
    return f"{on} of {got} cohort(s) activated for this platform ({s.source}: {why})"
