"""What the enricher counts and logs about each ad request: consent decisions, where each
signal's cohorts came from and why, requests no platform recognised, adapter failures, time.

Labelled children are looked up once and kept: `labels()` costs more than the increment,
and the hot path's counters count in plain numbers between scrapes (`plugin.observe.tally`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter

from plugin.consent.gate import is_undecodable
from plugin.observe.decisions import DecisionLog
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.overrides import Mistake
from plugin.request import AdRequest
from plugin.result import ConsentDecision, EnrichResult, Reason, SignalResult, Source
from plugin.signals.pending import Outcome

log = logging.getLogger("cohortkv.enricher")

_NOT_RECOGNISED = SignalResult("none", [], "not_recognised")


class Accounting:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.warn = RateLimitedLog(log)
        self._decisions: dict[ConsentDecision, tuple[Callable[[], None], bool]] = {}
        self._sources: dict[tuple[str, Source, Reason], Callable[[], None]] = {}
        self._timers: dict[str, Callable[[float], None]] = {}
        self._not_recognised: dict[tuple[str, str, str], Counter] = {}
        self._skips: dict[tuple[str, str], Counter] = {}
        self.decisions: DecisionLog | None = None
        """This replica's last decisions, kept only while the explain page is on."""

    def decision(self, d: ConsentDecision) -> ConsentDecision:
        known = self._decisions.get(d)
        if known is None:
            count = self.metrics.consent_decisions.tally(
                "allowed" if d.allowed else "denied", d.reason
            )
            known = self._decisions[d] = (count, is_undecodable(d.reason))
        known[0]()
        if known[1]:
            self.metrics.bad_input.labels("consent", d.reason).inc()
            self.warn.warning(f"consent:{d.reason}", "consent signal undecodable: %s", d.reason)
        return d

    def signal(self, name: str, got: Outcome, cohorts: Sequence[str]) -> SignalResult:
        source, reason = got.source, got.reason
        count = self._sources.get((name, source, reason))
        if count is None:
            tally = self.metrics.signal_source.tally(name, source, reason)
            count = self._sources[(name, source, reason)] = tally
        count()
        if got.answer is None:
            return SignalResult(source, [], reason)
        return SignalResult(source, list(cohorts), reason)

    def enriched(self, platform: str, started: float) -> float:
        """Observes the time since `started`; returns it, in seconds."""
        elapsed = time.perf_counter() - started
        observe = self._timers.get(platform)
        if observe is None:
            observe = self._timers[platform] = self.metrics.enrich_seconds.tally(platform)
        observe(elapsed)
        return elapsed

    def unrecognised(
        self, req: AdRequest, started: float, origin: str, platform: str, why: str
    ) -> EnrichResult:
        """A request no adapter recognises goes out as it came: counted, logged, never called
        an enrichment."""
        counter = self._not_recognised.get((origin, platform, why))
        if counter is None:
            counter = self._not_recognised[(origin, platform, why)] = (
                self.metrics.not_recognised.labels(origin, platform, why)
            )
        counter.inc()
        self.warn.warning(
            f"unrecognised:{origin}:{platform}:{why}",
            "ad request from %s not recognised by platform %s (%s): sent on unchanged",
            origin,
            platform,
            why,
        )
        result = EnrichResult(
            url=req.url,
            keyvalues={},
            behavioral=_NOT_RECOGNISED,
            contextual=_NOT_RECOGNISED,
            consent=ConsentDecision(False, "not_evaluated"),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            request=req,
            unrecognised=why,
        )
        if self.decisions is not None:
            self.decisions.add(result, None, origin, platform)
        return result

    def adapter_failed(self, platform: str, stage: str, e: BaseException) -> None:
        self.metrics.adapter_errors.labels(platform, stage).inc()
        self.warn.warning(
            f"adapter:{platform}:{stage}",
            "adapter %s failed in %s (%s): the request goes out %s",
            platform,
            stage,
            type(e).__name__,
            "unchanged" if stage != "parse" else "without what it carries",
        )
        log.debug("adapter failure", exc_info=e)

    def bug(self, where: str, e: BaseException) -> None:
        """An unexpected exception in our own code: counted, and logged at a bounded rate with
        a count of what was held back, never once per request (the traceback at debug level)."""
        self.metrics.internal_errors.labels(where).inc()
        self.warn.warning(
            f"bug:{where}:{type(e).__name__}", "internal error in %s: %s", where, type(e).__name__
        )
        log.debug("internal error in %s", where, exc_info=e)

    def loop_error(self, loop: Any, context: dict[str, Any]) -> None:
        """The event loop's exception handler for `cohortkv serve`: what asyncio would log
        with a traceback each time (a task's exception nobody read, a failed callback)."""
        e = context.get("exception")
        if isinstance(e, BaseException):
            self.bug("event_loop", e)
            return
        self.metrics.internal_errors.labels("event_loop").inc()
        self.warn.warning("bug:event_loop", "event loop: %s", context.get("message", "error"))

    def adapter_skipped(self, platform: str, reason: str) -> None:
        """Something an ad request carries, or something to write, that its adapter left out
        (a device id of unknown type, a bidder it cannot write for): counted as bad input."""
        counter = self._skips.get((platform, reason))
        if counter is None:
            counter = self._skips[(platform, reason)] = self.metrics.bad_input.labels(
                platform, reason
            )
        counter.inc()
        self.warn.warning(
            f"skip:{platform}:{reason}", "platform %s left something out: %s", platform, reason
        )

    def bad_reserved(self, mistake: Mistake) -> None:
        """A reserved parameter (`cohortkv_*`) of the ad request's URL that does not parse."""
        self.metrics.bad_input.labels("reserved", mistake.kind).inc()

    def untyped_property(self, name: str) -> None:
        """A content property whose value does not parse as `[events.properties]` types it."""
        self.metrics.bad_input.labels("property", "untyped").inc()
        self.warn.warning(
            f"property:{name}", "property %r: value does not parse as its type; left out", name
        )

    def no_activation_platforms(self, platform: str) -> None:
        self.warn.warning(
            f"activation:{platform}",
            "platform %s has no activation_platforms: nothing can be written into its"
            " requests; set [adapters.%s] activation_platforms",
            platform,
            platform,
        )
