"""`cohortkv demo`: the Direct API flow end to end, on the built-in sandbox, in a few seconds.

One process runs the sandbox of the Permutive APIs and an enricher against it, then walks a
scripted CTV scenario: a consented viewer watches two football videos (play events go out with
each view's first ad request, completion events through `Enricher.track`), an unconsented viewer
watches the news. Every ad break is requested from GAM, FreeWheel and AdsWizz at once, and the
demo prints one row per ad request (consent, where each signal came from and why, how long it
took), the cohorts written and the parameter that changed (`--verbose`: the full URLs), then a
summary read from the enricher's Prometheus registry and a legend. Everything fits 100 columns
(`plugin.commands.demo_report`). No API key, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry

from adapters.base import Adapter, Example
from adapters.registry import ADAPTERS, EXAMPLE_PLATFORMS, adapter_by_name, adapter_class
from plugin.commands.args import positive_int
from plugin.commands.demo_report import (
    DETAIL_INDENT,
    REASON_TEXT,
    SOURCE_TEXT,
    Break,
    Report,
    Request,
    signal_cell,
)
from plugin.commands.term import wants_color
from plugin.config import Config
from plugin.context import ConsentSignals, Content, Context
from plugin.errors import CohortkvError
from plugin.identity import Alias, Identity
from plugin.permutive.wire import Event
from plugin.request import AdRequest
from plugin.result import EnrichResult

if TYPE_CHECKING:
    from plugin.enricher import Enricher
    from plugin.sandbox import Sandbox

PLATFORMS: tuple[str, ...] = tuple(
    a.name for a in ADAPTERS if a.default_activation_platforms and a.name in EXAMPLE_PLATFORMS
)
"""The registry's platforms that activate cohorts out of the box: the demo shows each."""
PLATFORM_LABELS: dict[str, str] = {a.name: a.label or a.name for a in ADAPTERS}

# Real TC strings (tests/vectors/tcf_vectors.json): all purposes and vendor 361 consented; the
# same with Purpose 1 (store/access information on a device) not consented.
TC_GRANTED = "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAAAA.IAAA"
TC_PURPOSE1_DENIED = "CP60aCAP60aCAAKACBENAwEAAH_gAAAAAAYgC0wAQC0gAAAA.IAAA"

SLOW_CCS_MIN_S = 0.5
"""The sandbox delay for the slow-API ad break (at least; always beyond the budget)."""


class Video(msgspec.Struct, frozen=True):
    """A piece of content: its deterministic URL and the play event's properties."""

    video_id: str
    title: str
    categories: tuple[str, ...]
    duration_seconds: int
    url: str
    section: str

    def properties(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "title": self.title,
            "categories": list(self.categories),
            "duration_seconds": self.duration_seconds,
        }


class Viewer(msgspec.Struct, frozen=True):
    label: str
    device_tag: str
    device_id: str
    tc_string: str

    @property
    def identity(self) -> Identity:
        return Identity(alias=Alias(tag=self.device_tag, id=self.device_id))

    @property
    def consent(self) -> ConsentSignals:
        return ConsentSignals(gdpr=True, tc_string=self.tc_string)


class Slot(msgspec.Struct, frozen=True):
    name: str
    """`preroll` or `midroll`, as the ad servers spell it."""
    position_s: int


PREROLL = Slot("preroll", 0)
MIDROLL = Slot("midroll", 300)

VIEWER_CONSENTED = Viewer(
    "living-room TV, consented", "tifa", "a1b2c3d4-e5f6-7890-abcd-ef1234567890", TC_GRANTED
)
VIEWER_UNCONSENTED = Viewer(
    "bedroom TV, no consent", "rida", "9f3c6a52-1b7d-4e8a-b0c4-2d5e6f708192", TC_PURPOSE1_DENIED
)
FOOTBALL_1 = Video(
    "vid_456",
    "Highlights: Premier League Week 20",
    ("sports", "football"),
    600,
    "https://example.com/sport/football/pl-highlights-week-20",
    "sport",
)
FOOTBALL_2 = Video(
    "vid_457",
    "Match of the Day: Derby Day",
    ("sports", "football"),
    900,
    "https://example.com/sport/football/derby-day-extended",
    "sport",
)
NEWS = Video(
    "vid_901",
    "Election Night: Live Coverage",
    ("news", "politics"),
    1800,
    "https://example.com/news/election-night-live",
    "news",
)


# --- ad requests as each platform's player or stitcher would send them ----------------------


def ad_request(
    platform: str, viewer: Viewer, video: Video, slot: Slot, correlator: int
) -> AdRequest:
    """The platform's own example request (its adapter's `example`) for this viewer, content
    and ad break."""
    example = Example(
        device_tag=viewer.device_tag,
        device_id=viewer.device_id,
        tc_string=viewer.tc_string,
        content_url=video.url,
        section=video.section,
        video_id=video.video_id,
        duration_s=video.duration_seconds,
        slot=slot.name,
        position_s=slot.position_s,
        correlator=correlator,
    )
    request = adapter_class(platform).example(example)
    if request is None:
        raise CohortkvError("platform", f"one of {', '.join(EXAMPLE_PLATFORMS)}", platform)
    return request


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


# --- the walk-through --------------------------------------------------------------------------


class Demo:
    """One scripted run; `run()` returns the exit status."""

    sandbox: Sandbox
    enricher: Enricher

    def __init__(
        self,
        stream: IO[str],
        *,
        platforms: Sequence[str] = PLATFORMS,
        budget_ms: int = 300,
        color: bool = False,
        verbose: bool = False,
    ) -> None:
        self.out = Report(stream, color=color, verbose=verbose)
        self.s = self.out.s
        self.platforms = tuple(platforms)
        self.budget_ms = budget_ms
        self.verbose = verbose
        self.registry = CollectorRegistry()
        self._correlator = 7_000_000
        self._seen: dict[str, set[str]] = {}
        self._codes: dict[str, None] = {}
        self._reasons: dict[str, None] = {}
        self._since = ""
        """What refreshed the viewer's cached answer since the last ad break, if anything."""
        self._slowest_ms = 0.0
        self._unconsented_ccs_calls = 0

    async def run(self) -> int:
        from plugin.enricher import Enricher
        from plugin.sandbox import start_sandbox

        self.sandbox = await start_sandbox()
        try:
            config = Config(
                api_key=self.sandbox.api_key,
                ccs_url=self.sandbox.base_url,
                ctx_url=self.sandbox.base_url,
                budget_ms=self.budget_ms,
            )
            async with Enricher(config, registry=self.registry) as enricher:
                self.enricher = enricher
                self._intro(config)
                await self._consented_viewer()
                await self._unconsented_viewer()
                self._summary()
                self._legend()
                self._cohorts()
        finally:
            await self.sandbox.close()
        return 0

    # -- scenario ---------------------------------------------------------------------------

    def _intro(self, config: Config) -> None:
        o, s = self.out, self.s
        o(s("cohortkv demo", "bold") + ": Permutive cohorts in CTV ad requests, end to end")
        servers = ", ".join(PLATFORM_LABELS[p] for p in self.platforms)
        if len(self.platforms) > 1:
            servers += ": each ad break is requested from all of them at once"
        urls = "full URLs, before and after" if self.verbose else "--verbose: full URLs"
        o.wrapped(
            [
                (
                    "sandbox",
                    f"{self.sandbox.base_url}, the CCS and Contextual APIs in this process "
                    "(no API key, no network)",
                ),
                (
                    "budget",
                    f"{config.budget_ms} ms per ad request; behavioral and contextual cohorts "
                    f'merged under "{config.keys.behavioral}"',
                ),
                ("ad servers", servers),
                (
                    "each row",
                    "one ad request: consent, where each signal's cohorts came from and why "
                    f"(source reason), time; under it what was written ({urls}). Legend at "
                    "the end.",
                ),
            ]
        )

    async def _consented_viewer(self) -> None:
        viewer = VIEWER_CONSENTED
        session = str(uuid.uuid4())
        self._viewer_heading(1, viewer, session)

        view = str(uuid.uuid4())
        self._view_heading(1, FOOTBALL_1, view)
        first = PLATFORM_LABELS[self.platforms[0]]
        shared = "; the others share its answer" if len(self.platforms) > 1 else ""
        await self._ad_break(
            viewer, FOOTBALL_1, PREROLL, session, view,
            f"play event with {first}'s request{shared}",
        )  # fmt: skip
        await self._ad_break(
            viewer, FOOTBALL_1, MIDROLL, session, view,
            "same view: its answer is reused, no second play event",
        )  # fmt: skip
        await self._completion(viewer, FOOTBALL_1, session, view, spent=450, watched=0.75)

        view = str(uuid.uuid4())
        self._view_heading(2, FOOTBALL_2, view)
        delay = max(SLOW_CCS_MIN_S, self.budget_ms / 1000 + 0.2)
        self.sandbox.delays["ccs"] = delay
        try:
            await self._ad_break(
                viewer, FOOTBALL_2, PREROLL, session, view,
                f"the CCS API is slow now: {delay * 1000:.0f} ms, the budget is "
                f"{self.budget_ms} ms",
            )  # fmt: skip
        finally:
            self.sandbox.delays["ccs"] = 0.0
        await self._late_answer()
        await self._ad_break(
            viewer, FOOTBALL_2, MIDROLL, session, view,
            "same view: the late answer is in the cache now",
        )  # fmt: skip
        await self._completion(viewer, FOOTBALL_2, session, view, spent=880, watched=0.98)

    async def _unconsented_viewer(self) -> None:
        viewer = VIEWER_UNCONSENTED
        session = str(uuid.uuid4())
        self._viewer_heading(2, viewer, session)
        ccs_before = self.sandbox.calls["ccs"]
        ctx_before = self.sandbox.calls["ctx"]
        view = str(uuid.uuid4())
        self._view_heading(3, NEWS, view)
        await self._ad_break(
            viewer, NEWS, PREROLL, session, view,
            "no consent: no CCS call at all; contextual cohorts still flow",
        )  # fmt: skip
        await self._ad_break(
            viewer, NEWS, MIDROLL, session, view, "same view: still no CCS call"
        )  # fmt: skip
        await self._completion(viewer, NEWS, session, view, spent=1200, watched=0.66)
        ccs = self._unconsented_ccs_calls = self.sandbox.calls["ccs"] - ccs_before
        ctx = self.sandbox.calls["ctx"] - ctx_before
        self.out()
        self.out(
            f"  CCS calls for this viewer: {self.s(str(ccs), 'bold')} (Contextual: {ctx}): "
            "fail closed for the user's data, open for the ad"
        )

    # -- pieces -----------------------------------------------------------------------------

    def _viewer_heading(self, n: int, viewer: Viewer, session: str) -> None:
        from plugin.consent.gate import decide

        decision = decide(viewer.consent, self.enricher.config.consent)
        verdict = "allowed" if decision.allowed else "denied"
        self.out.heading(f"Viewer {n}: {viewer.label}")
        self.out.wrapped(
            [
                (
                    "identity",
                    f"{viewer.device_tag}:{viewer.device_id} (rdid+idtype, _fw_did, aw_0_1st.ifa)",
                ),
                (
                    "consent",
                    f"{verdict} ({decision.reason}), the TCF v2 string in gdpr_consent, "
                    "_fw_gdpr_consent, aw_0_req.userConsentV2",
                ),
                ("session", session),
            ]
        )

    def _view_heading(self, n: int, video: Video, view: str) -> None:
        o, s = self.out, self.s
        o()
        o(
            s(f"  View {n}", "bold")
            + f'  "{video.title}"  {video.video_id}, {video.duration_seconds} s, '
            + "/".join(video.categories)
        )
        ids = f"  view {view}" if self.verbose else ""
        o(f"          {video.url}{ids}", fit=not self.verbose)

    def _context(self, video: Video, session: str, view: str) -> Context:
        # What the player or stitcher knows beyond the URL: the view, the session and the
        # content's properties; identity and consent come from the ad request itself.
        return Context(
            content=Content(url=video.url, properties=video.properties(), title=video.title),
            session_id=session,
            view_id=view,
        )

    async def _ad_break(
        self, viewer: Viewer, video: Video, slot: Slot, session: str, view: str, note: str
    ) -> None:
        self._correlator += 1
        urls = {p: ad_request(p, viewer, video, slot, self._correlator) for p in self.platforms}
        before = Counter(self.sandbox.calls)
        ctx = self._context(video, session, view)
        results: list[EnrichResult] = list(
            await asyncio.gather(
                *(self.enricher.enrich(urls[p], ctx, platform=p) for p in self.platforms)
            )
        )
        calls = self.sandbox.calls
        requests = [
            Request(PLATFORM_LABELS[p], urls[p].url, r)
            for p, r in zip(self.platforms, results, strict=True)
        ]
        self.out()
        self.out.ad_break(
            Break(
                "pre-roll" if slot is PREROLL else "mid-roll",
                note,
                requests,
                f"CCS +{calls['ccs'] - before['ccs']}, Contextual +{calls['ctx'] - before['ctx']}",
            ),
            header=slot is PREROLL,
        )
        self._slowest_ms = max(self._slowest_ms, *(r.elapsed_ms for r in results))
        for r in results:
            self._reasons.update(dict.fromkeys((r.behavioral.reason, r.contextual.reason)))
        since = f" ({self._since})" if self._since else ""
        for code, name in self._gained(viewer, results):
            self.out(f"{DETAIL_INDENT}{self.s('gained', 'green')} {code} {name}{since}")
        self._since = ""

    def _gained(self, viewer: Viewer, results: Sequence[EnrichResult]) -> list[tuple[str, str]]:
        """Behavioral cohorts this viewer's requests carry now and did not before."""
        now: set[str] = set()
        for r in results:
            now.update(r.behavioral.cohorts)
            self._codes.update(dict.fromkeys(r.behavioral.cohorts))
            self._codes.update(dict.fromkeys(r.contextual.cohorts))
        before = self._seen.get(viewer.device_id)
        self._seen[viewer.device_id] = (before or set()) | now
        if before is None:
            return []
        return [(c, self._cohort_info(c)[1]) for c in sorted(now - before)]

    async def _completion(
        self, viewer: Viewer, video: Video, session: str, view: str, *, spent: int, watched: float
    ) -> None:
        event = Event(
            name="VideoCompletion",
            time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            properties={
                **video.properties(),
                "time_spent_seconds": spent,
                "percentage_watched": watched,
            },
            view_id=view,
            session_id=session,
        )
        before = self.sandbox.calls["ccs"]
        delivered = await self.enricher.track(
            [event], identity=viewer.identity, consent=viewer.consent
        )
        ccs = self.sandbox.calls["ccs"] - before
        if delivered:
            self._since = "the completion event's answer"
        sent = f"{delivered} sent" if delivered else "not sent, no consent"
        self.out()
        self.out(
            f"    {self.s('completion', 'bold', 'cyan')}  VideoCompletion ({watched:.0%} "
            f"watched) via enricher.track: {sent}  " + self.s(f"(CCS +{ccs})", "dim")
        )

    async def _late_answer(self) -> None:
        """Waits (briefly) for the slow call the budget cut short: it still fills the cache."""
        registry = self.registry
        loop = asyncio.get_running_loop()
        until = loop.time() + 3.0
        while sample_sum(registry, "cohortkv_late_answers_total", api="ccs") < 1:
            if loop.time() > until:
                return
            await asyncio.sleep(0.02)
        late = sample_sum(registry, "cohortkv_late_answers_total", api="ccs")
        self._since = "the play event's late answer"
        self.out(
            f"    {self.s('late answer', 'bold', 'cyan')}  CCS answered after the requests went "
            f"out; the answer is cached (late: {late:.0f})"
        )

    # -- summary and legend -----------------------------------------------------------------

    def _summary(self) -> None:
        o, s, reg = self.out, self.s, self.registry
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
                f"slowest {self._slowest_ms:.1f} ms (budget {self.budget_ms} ms)",
            ),
            ("behavioral", ", ".join(mix.get("behavioral", [])) or "-"),
            ("contextual", ", ".join(mix.get("contextual", [])) or "-"),
            ("consent", ", ".join(consent) or "-"),
            (
                "sandbox",
                f"CCS {calls['ccs']} calls (the unconsented viewer's: "
                f"{self._unconsented_ccs_calls}), Contextual {calls['ctx']} calls",
            ),
        ]

    def _legend(self) -> None:
        reads = "; ".join(
            f"{PLATFORM_LABELS[p]}: {', '.join(self._adapter(p).activation_platforms)}"
            for p in self.platforms
        )
        rows = [("source", "; ".join(f"{k}: {v}" for k, v in SOURCE_TEXT.items()))]
        rows += [(reason, REASON_TEXT.get(reason, "")) for reason in self._reasons]
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
        if not self._codes:
            return
        s = self.s
        self.out.heading("Cohorts seen (sandbox workspace)")
        rows = [[s(h, "dim") for h in ("code", "signal", "written for", "name")]]
        for code in sorted(self._codes):
            kind, name, activations = self._cohort_info(code)
            rows.append([code, kind, self._written_for(activations), name])
        self.out.rows(rows)

    # -- helpers ----------------------------------------------------------------------------

    def _adapter(self, platform: str) -> Adapter:
        return adapter_by_name(self.enricher.adapters, platform)

    def _written_for(self, activations: Sequence[str]) -> str:
        """The platforms shown whose adapters read one of these activation names."""
        return " ".join(
            PLATFORM_LABELS[p]
            for p in self.platforms
            if set(self._adapter(p).activation_platforms) & set(activations)
        )

    def _cohort_info(self, code: str) -> tuple[str, str, list[str]]:
        """The cohort's signal, name and activations in the sandbox's workspace."""
        ws = self.sandbox.state.workspace
        for c in ws.cohorts:
            if c.code == code:
                return "behavioral", c.name, c.activations
        for cc in ws.contextual:
            if cc.code == code:
                return "contextual", cc.name, cc.activations
        return "", "", []


# --- command line ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Walk a scripted CTV scenario on the built-in sandbox: consented and unconsented "
        "viewers, ad breaks enriched for GAM, FreeWheel and AdsWizz, a slow API, metrics. "
        "One row per ad request, within 100 columns."
    )
    parser.add_argument(
        "--platform",
        choices=("all", *PLATFORMS),
        default="all",
        help="show only this ad server's requests (default: all)",
    )
    parser.add_argument(
        "--budget-ms",
        type=positive_int("--budget-ms"),
        default=300,
        metavar="N",
        help="latency budget per ad request (default: 300)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        dest="full_urls",
        action="store_true",
        help="also print each ad request's full URL, before and after, and the view ids",
    )
    parser.add_argument("--no-color", action="store_true", help="plain output, no ANSI colour")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    platforms = PLATFORMS if args.platform == "all" else (args.platform,)
    demo = Demo(
        sys.stdout,
        platforms=platforms,
        budget_ms=args.budget_ms,
        color=wants_color(sys.stdout, args.no_color),
        verbose=args.full_urls,
    )
    return await demo.run()
