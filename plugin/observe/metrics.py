"""Prometheus metrics on an injectable registry, so hosts and tests each see their own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cachetools import TTLCache
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from plugin.observe.tally import DeferredCounter, DeferredHistogram

# 1 ms to 2.5 s, with a bound at the default 300 ms budget so `le="0.3"` reads it exactly.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5)
HOST_PLAY_OUTCOMES = ("opened", "duplicate", "no_view")
"""What became of a play event the host sent (`plugin.signals.tracker`)."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.upstream_seconds = Histogram(
            "cohortkv_upstream_seconds",
            "Permutive API call latency by API and outcome.",
            ["api", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.enrich_seconds = DeferredHistogram(
            "cohortkv_enrich_seconds",
            "Time spent enriching one ad request, by platform.",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signal_source = DeferredCounter(
            "cohortkv_signal_source_total",
            "Where each signal of an enriched ad request came from, and why.",
            ["signal", "source", "reason"],
            registry=r,
        )
        self.not_recognised = Counter(
            "cohortkv_not_recognised_total",
            "Ad requests sent on unchanged because their platform did not recognise them.",
            ["origin", "platform", "reason"],
            registry=r,
        )
        self.adapter_errors = Counter(
            "cohortkv_adapter_errors_total",
            "Exceptions inside an adapter; the ad request still went out.",
            ["platform", "stage"],
            registry=r,
        )
        self.consent_decisions = DeferredCounter(
            "cohortkv_consent_decisions_total",
            "Consent gate decisions by outcome and reason.",
            ["decision", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "cohortkv_upstream_errors_total",
            "Failed Permutive API calls by API and kind of failure.",
            ["api", "kind"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "cohortkv_cache_entries",
            "Entries held in each in-process cache.",
            ["cache"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.bad_input = Counter(
            "cohortkv_bad_input_total",
            "Machine-made input that was skipped (unparseable URLs, consent strings, ...).",
            ["source", "kind"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "cohortkv_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open (several workers: the"
            " highest of them).",
            ["api"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.inflight = Gauge(
            "cohortkv_upstream_inflight",
            "Calls in flight per upstream (bounded; beyond the bound calls are shed).",
            ["api"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shared_cache_ops = Counter(
            "cohortkv_shared_cache_ops_total",
            "Shared (Redis) cache operations by result.",
            ["op", "result"],
            registry=r,
        )
        self.shared_cache_errors = Counter(
            "cohortkv_shared_cache_errors_total",
            "Shared (Redis) cache failures; the local cache is used instead.",
            ["op", "kind"],
            registry=r,
        )
        self.sandbox_mode = Gauge(
            "cohortkv_sandbox_mode",
            "1 while cohorts come from the built-in sandbox (sandbox = true), not Permutive.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.content_url_redactions = Counter(
            "cohortkv_content_url_redactions_total",
            "URLs that lost something before they left, by reason: an e-mail address (query or"
            " fragment field, path segment) or userinfo (user:password@).",
            ["reason"],
            registry=r,
        )
        self.shared_store_invalid = Counter(
            "cohortkv_shared_store_invalid_total",
            "Values read from the shared store (Redis) that failed validation and were ignored.",
            ["value", "reason"],
            registry=r,
        )
        self.internal_errors = Counter(
            "cohortkv_internal_errors_total",
            "Unexpected errors in cohortkv's own code (bugs), by where; each kind is logged at a"
            " bounded rate and the ad request went on.",
            ["where"],
            registry=r,
        )
        self.late_answers = Counter(
            "cohortkv_late_answers_total",
            "Answers that arrived after the deadline and only refreshed the cache.",
            ["api"],
            registry=r,
        )
        self.host_play_events = Counter(
            "cohortkv_host_play_events_total",
            "Play events the host sent (track(), /v1/events) by outcome: opened (a view, sent),"
            " duplicate (its view's play event had gone out: not sent), no_view (no view id"
            " and no content to open one: sent with its session only).",
            ["outcome"],
            registry=r,
        )
        for outcome in HOST_PLAY_OUTCOMES:
            self.host_play_events.labels(outcome)


_OVERFLOW = "\x00overflow"


class _Held(TTLCache[str, list[int]]):
    """Kinds logged this interval, each with a count of the lines held back; the counts of
    intervals that end are kept for the kind's next line."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self.ended: dict[str, int] = {}

    def expire(self, time: float | None = None) -> list[tuple[str, list[int]]]:
        expired = list(super().expire(time))
        for kind, (count,) in expired:
            if count and len(self.ended) < self.maxsize:
                self.ended[kind] = count
        return expired


class RateLimitedLog:
    """Logs a given kind of problem at most once per interval: garbage is counted, not echoed.

    Kinds can carry names from outside (a property name, an upstream), so the memory of which
    kinds were logged is a bounded TTL cache: a flood of distinct kinds costs at most
    `max_kinds` entries. The next line of a kind says how many were held back before it."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 60.0,
        *,
        max_kinds: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._held = _Held(max_kinds, interval_s, clock)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        held = self._held.get(kind)
        if held is not None:
            held[0] += 1  # in place: the interval runs from the line that was logged
            return
        self._held.expire()
        if len(self._held) >= self._held.maxsize - 1:
            # More kinds in one interval than it keeps: the rest share one line per interval.
            kind = _OVERFLOW
            held = self._held.get(kind)
            if held is not None:
                held[0] += 1
                return
        suppressed = self._held.ended.pop(kind, 0)
        if suppressed:
            msg += " (%d more like it were not logged)"
            args = (*args, suppressed)
        self._logger.warning(msg, *args)
        self._held[kind] = [0]
