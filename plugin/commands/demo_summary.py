"""The end of a `cohortkv demo` run: what the enricher's Prometheus registry says about it, the
legend of the reasons shown, and the cohorts seen, by name and by the platforms each was
written for.

`DemoSummary` tallies each ad break as the scenario walks (the reasons shown, the cohorts seen,
the slowest request) and prints the report when it ends; `cohort_info` looks a cohort up in the
sandbox's workspace, for the report and for the demo's `gained` lines. The registry readers
(`samples`, `sample_sum`, `histogram_quantile`) read the enricher's metrics without a scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from adapters.base import Adapter
from adapters.registry import adapter_by_name
from plugin.commands.demo_report import (
    PLATFORM_LABELS,
    REASON_TEXT,
    SOURCE_TEXT,
    Report,
    signal_cell,
)
from plugin.result import EnrichResult

if TYPE_CHECKING:
    from plugin.sandbox import Sandbox
    from plugin.sandbox.workspace import Workspace


# --- reading the enricher's metrics ------------------------------------------------------------


def samples(registry: CollectorRegistry, name: str) -> Iterator[tuple[dict[str, str], float]]:
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name:
                yield s.labels, s.value


def sample_sum(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(
        v for got, v in samples(registry, name) if all(got.get(k) == w for k, w in labels.items())
    )


def histogram_quantile(
    registry: CollectorRegistry, name: str, q: float, **labels: str
) -> float | None:
    """Prometheus-style estimate from the buckets (linear within a bucket); None if empty."""
    buckets: dict[float, float] = {}
    for got, value in samples(registry, name + "_bucket"):
        if all(got.get(k) == w for k, w in labels.items()):
            le = float(got["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    prev_le = prev_count = 0.0
    for le in sorted(buckets):
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 1.0
            return prev_le + (le - prev_le) * share
        prev_le, prev_count = le, count
    return prev_le


def cohort_info(workspace: Workspace, code: str) -> tuple[str, str, list[str]]:
    """The cohort's signal, name and activations in the sandbox's workspace."""
    for c in workspace.cohorts:
        if c.code == code:
            return "behavioral", c.name, c.activations
    for cc in workspace.contextual:
        if cc.code == code:
            return "contextual", cc.name, cc.activations
    return "", "", []


# --- the report ----------------------------------------------------------------------------


class DemoSummary:
    """Tallies the demo's ad breaks (`record`) and prints the end-of-run report (`write`).

    `adapters` are the enricher's (they say which activation names each platform reads),
    `platforms` the ones shown, `budget_ms` the budget the demo ran with."""

    def __init__(
        self,
        out: Report,
        registry: CollectorRegistry,
        sandbox: Sandbox,
        *,
        adapters: Sequence[Adapter],
        platforms: Sequence[str],
        budget_ms: int,
    ) -> None:
        self.out = out
        self.registry = registry
        self.sandbox = sandbox
        self.adapters = tuple(adapters)
        self.platforms = tuple(platforms)
        self.budget_ms = budget_ms
        self.codes: dict[str, None] = {}
        """Every cohort code an ad request was given, behavioral or contextual."""
        self.reasons: dict[str, None] = {}
        """Every reason shown, in the order first shown: the legend explains each."""
        self.seen: dict[str, set[str]] = {}
        """Each viewer's behavioral cohorts so far, by device id."""
        self.slowest_ms = 0.0
        self.unconsented_ccs_calls = 0
        """The CCS calls the unconsented viewer caused (the demo counts them on the sandbox)."""

    def record(self, results: Sequence[EnrichResult]) -> None:
        """One ad break's results: their time, reasons and cohorts."""
        self.slowest_ms = max(self.slowest_ms, *(r.elapsed_ms for r in results))
        for r in results:
            self.reasons.update(dict.fromkeys((r.behavioral.reason, r.contextual.reason)))
            self.codes.update(dict.fromkeys(r.behavioral.cohorts))
            self.codes.update(dict.fromkeys(r.contextual.cohorts))

    def gained(self, device_id: str, results: Sequence[EnrichResult]) -> list[tuple[str, str]]:
        """Behavioral cohorts this viewer's requests carry now and did not before, with their
        names (none on the viewer's first ad break)."""
        now: set[str] = set()
        for r in results:
            now.update(r.behavioral.cohorts)
        before = self.seen.get(device_id)
        self.seen[device_id] = (before or set()) | now
        if before is None:
            return []
        workspace = self.sandbox.state.workspace
        return [(c, cohort_info(workspace, c)[1]) for c in sorted(now - before)]

    def write(self) -> None:
        """The metrics, the totals, the legend and the cohorts seen."""
        self._metrics()
        self._legend()
        self._cohorts()

    def _metrics(self) -> None:
        o, s, reg = self.out, self.out.s, self.registry
        o.heading("Metrics (read from the enricher's Prometheus registry)")
        rows = [[s(h, "dim") for h in ("upstream", "calls", "ok", "failed", "p50", "late")]]
        for api in ("ccs", "contextual"):
            count = "cohortkv_upstream_seconds_count"
            n = sample_sum(reg, count, api=api)
            ok = sample_sum(reg, count, api=api, outcome="ok")
            p50 = histogram_quantile(reg, "cohortkv_upstream_seconds", 0.5, api=api)
            rows.append(
                [
                    api,
                    f"{n:.0f}",
                    f"{ok:.0f}",
                    f"{n - ok:.0f}",
                    "-" if p50 is None else f"~{p50 * 1000:.1f} ms",
                    f"{sample_sum(reg, 'cohortkv_late_answers_total', api=api):.0f}",
                ]
            )
        o.rows(rows)
        o()
        o.wrapped(self._totals())

    def _totals(self) -> list[tuple[str, str]]:
        """Ad requests, where their signals came from and why, consent, the sandbox's calls."""
        reg = self.registry
        enrich_n = sample_sum(reg, "cohortkv_enrich_seconds_count")
        p50 = histogram_quantile(reg, "cohortkv_enrich_seconds", 0.5)
        mix: dict[str, list[str]] = {}
        for labels, value in samples(reg, "cohortkv_signal_source_total"):
            if value:
                cell = signal_cell(labels["source"], labels["reason"])
                mix.setdefault(labels["signal"], []).append(f"{cell} {value:.0f}")
        consent = [
            f"{labels['decision']} ({labels['reason']}) {value:.0f}"
            for labels, value in samples(reg, "cohortkv_consent_decisions_total")
            if value
        ]
        calls = self.sandbox.calls
        return [
            (
                "ad requests",
                f"{enrich_n:.0f} enriched, p50 ~{(p50 or 0) * 1000:.1f} ms, "
                f"slowest {self.slowest_ms:.1f} ms (budget {self.budget_ms} ms)",
            ),
            ("behavioral", ", ".join(mix.get("behavioral", [])) or "-"),
            ("contextual", ", ".join(mix.get("contextual", [])) or "-"),
            ("consent", ", ".join(consent) or "-"),
            (
                "sandbox",
                f"CCS {calls['ccs']} calls (the unconsented viewer's: "
                f"{self.unconsented_ccs_calls}), Contextual {calls['ctx']} calls",
            ),
        ]

    def _legend(self) -> None:
        reads = "; ".join(
            f"{PLATFORM_LABELS[p]}: {', '.join(self._adapter(p).activation_platforms)}"
            for p in self.platforms
        )
        rows = [("source", "; ".join(f"{k}: {v}" for k, v in SOURCE_TEXT.items()))]
        rows += [(reason, REASON_TEXT.get(reason, "")) for reason in self.reasons]
        rows += [
            (
                "platforms",
                "why one answer gives each platform different cohorts: the workspace "
                "activates each cohort for some platforms (the answer's activations), and a "
                f"request gets only those of its own ({reads}): 'written for' below",
            ),
            (
                "gained",
                "why a cached answer can gain cohorts: a completion event (enricher.track) "
                "is a CCS call too, and its answer, with the cohorts the completion earns, "
                "replaces the cached one, as a late answer does; the next break has them",
            ),
        ]
        self.out.heading("Legend")
        self.out.wrapped(rows)

    def _cohorts(self) -> None:
        if not self.codes:
            return
        s = self.out.s
        self.out.heading("Cohorts seen (sandbox workspace)")
        rows = [[s(h, "dim") for h in ("code", "signal", "written for", "name")]]
        for code in sorted(self.codes):
            kind, name, activations = cohort_info(self.sandbox.state.workspace, code)
            rows.append([code, kind, self._written_for(activations), name])
        self.out.rows(rows)

    def _adapter(self, platform: str) -> Adapter:
        return adapter_by_name(self.adapters, platform)

    def _written_for(self, activations: Sequence[str]) -> str:
        """The platforms shown whose adapters read one of these activation names."""
        return " ".join(
            PLATFORM_LABELS[p]
            for p in self.platforms
            if set(self._adapter(p).activation_platforms) & set(activations)
        )
