"""`cohortkv demo`: the Direct API flow end to end, on the built-in sandbox, in a few seconds.

One process runs the sandbox of the Permutive APIs and an enricher against it, then walks a
scripted CTV scenario: a consented viewer watches two football videos (play events go out with
each view's first ad request, completion events through `Enricher.track`), an unconsented viewer
watches the news. Every ad break is requested from GAM, FreeWheel and AdsWizz at once, and the
demo prints each original and enriched ad request, where each signal came from and how long it
took, then a summary read from the enricher's Prometheus registry. No API key, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from prometheus_client import CollectorRegistry

from plugin.cli_args import positive_int
from plugin.config import Config
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity
from plugin.result import EnrichResult, Source
from plugin.term import Color, Style, UrlChange, table, wants_color
from plugin.wire import Event

if TYPE_CHECKING:
    from plugin.enricher import Enricher
    from plugin.sandbox import Sandbox

PLATFORMS: tuple[str, ...] = ("gam", "freewheel", "adswizz")
PLATFORM_LABELS: dict[str, str] = {"gam": "GAM", "freewheel": "FreeWheel", "adswizz": "AdsWizz"}

# Real TC strings (tests/vectors/tcf_vectors.json): all purposes and vendor 361 consented; the
# same with Purpose 1 (store/access information on a device) not consented.
TC_GRANTED = "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAAAA.IAAA"
TC_PURPOSE1_DENIED = "CP60aCAP60aCAAKACBENAwEAAH_gAAAAAAYgC0wAQC0gAAAA.IAAA"

SLOW_CCS_MIN_S = 0.5
"""The sandbox delay for the slow-API ad break (at least; always beyond the budget)."""

_SOURCE_COLORS: dict[str, Color] = {
    "live": "green",
    "cache": "yellow",
    "skipped": "magenta",
    "none": "dim",
}


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


def ad_request(platform: str, viewer: Viewer, video: Video, slot: Slot, correlator: int) -> str:
    """A realistic ad request carrying the device id, the consent string and the content."""
    content_url = quote(video.url, safe="")
    tc = viewer.tc_string
    if platform == "gam":
        return (
            "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/ctv/"
            f"{video.section}&sz=1920x1080&gdfp_req=1&output=vast&env=vp&impl=s"
            f"&unviewed_position_start=1&vpos={slot.name}&vid={video.video_id}&cmsid=2553"
            f"&description_url={content_url}&rdid={viewer.device_id}&idtype={viewer.device_tag}"
            f"&is_lat=0&gdpr=1&gdpr_consent={tc}&cust_params=section%3D{video.section}"
            f"&correlator={correlator}"
        )
    if platform == "freewheel":
        return (
            "https://5fd74.v.fwmrm.net/ad/g/1?nw=381747&prof=381747%3Actv_live"
            f"&csid=ctv_{video.section}&caid={video.video_id}&vdur={video.duration_seconds}"
            f"&resp=vast4&flag=+scpv+emcr+slcb+aeti"
            f";_fw_did={viewer.device_tag}%3A{viewer.device_id}&_fw_is_lat=0&_fw_gdpr=1"
            f"&_fw_gdpr_consent={tc}&_fw_content_url={content_url}&section={video.section}"
            f";slid={slot.name}&tpos={slot.position_s}&ptgt=a&slau={slot.name}&mind=30&maxd=120;"
        )
    if platform == "adswizz":
        return (
            f"https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/ctv-{video.section}"
            f"?aw_0_1st.ifa={viewer.device_id}&aw_0_1st.ifaType={viewer.device_tag}"
            f"&aw_0_req.lmt=0&aw_0_req.gdpr=1&aw_0_req.userConsentV2={tc}"
            f"&aw_0_1st.contentUrl={content_url}&aw_0_1st.section={video.section}"
            f"&aw_0_1st.slot={slot.name}&cb={correlator}"
        )
    raise ValueError(f"platform: expected one of {', '.join(PLATFORMS)}, got {platform!r}")


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


class _Out:
    def __init__(self, stream: IO[str], style: Style) -> None:
        self.stream = stream
        self.s = style

    def __call__(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def heading(self, text: str) -> None:
        self()
        self(self.s(f"== {text} ", "bold") + self.s("=" * max(3, 76 - len(text)), "dim"))

    def rows(self, rows: Sequence[Sequence[str]], indent: str = "  ") -> None:
        for line in table(rows, indent=indent):
            self(line)


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
    ) -> None:
        self.out = _Out(stream, Style(color))
        self.s = self.out.s
        self.platforms = tuple(platforms)
        self.budget_ms = budget_ms
        self.registry = CollectorRegistry()
        self._correlator = 7_000_000
        self._seen: dict[str, set[str]] = {}
        self._codes: dict[str, None] = {}
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
        finally:
            await self.sandbox.close()
        return 0

    # -- scenario ---------------------------------------------------------------------------

    def _intro(self, config: Config) -> None:
        o, s = self.out, self.s
        o(s("cohortkv demo", "bold") + ": Permutive cohorts in CTV ad requests, end to end")
        o.rows(
            [
                [
                    "sandbox",
                    f"{self.sandbox.base_url}  CCS + Contextual APIs in this process "
                    "(shipped workspace; no API key, no network)",
                ],
                [
                    "budget",
                    f"{config.budget_ms} ms per ad request; behavioral and contextual cohorts "
                    f'merged under "{config.keys.behavioral}"',
                ],
                [
                    "ad servers",
                    ", ".join(PLATFORM_LABELS[p] for p in self.platforms)
                    + (
                        ": each ad break is requested from all of them at once"
                        if len(self.platforms) > 1
                        else ""
                    ),
                ],
                [
                    "sources",
                    f"{self._src('live')} answered in time, {self._src('cache')} last good "
                    f"answer or the view's answer, {self._src('skipped')} not asked (no "
                    f"consent), {self._src('none')} nothing to use",
                ],
            ]
        )

    async def _consented_viewer(self) -> None:
        viewer = VIEWER_CONSENTED
        session = str(uuid.uuid4())
        self._viewer_heading(1, viewer, session)

        view = str(uuid.uuid4())
        self._view_heading(1, FOOTBALL_1, view)
        shared = (
            "; the other ad servers' requests share its answer" if len(self.platforms) > 1 else ""
        )
        await self._ad_break(
            viewer, FOOTBALL_1, PREROLL, session, view,
            f"the view's play event (Videoview) goes out once, with the first ad request{shared}",
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
                f"the CCS API is slow now: it answers after {delay * 1000:.0f} ms, the budget "
                f"is {self.budget_ms} ms",
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
            "consent denied: no CCS call at all; contextual cohorts still flow",
        )  # fmt: skip
        await self._ad_break(viewer, NEWS, MIDROLL, session, view, "same view")
        await self._completion(viewer, NEWS, session, view, spent=1200, watched=0.66)
        ccs = self._unconsented_ccs_calls = self.sandbox.calls["ccs"] - ccs_before
        ctx = self.sandbox.calls["ctx"] - ctx_before
        self.out()
        self.out(
            f"  CCS calls for this viewer: {self.s(str(ccs), 'bold')} "
            f"(Contextual calls: {ctx}) - fail closed for the user's data, open for the ad"
        )

    # -- pieces -----------------------------------------------------------------------------

    def _viewer_heading(self, n: int, viewer: Viewer, session: str) -> None:
        from plugin.consent import decide

        decision = decide(viewer.consent, self.enricher.config.consent)
        verdict = "allowed" if decision.allowed else "denied"
        self.out.heading(f"Viewer {n}: {viewer.label}")
        self.out.rows(
            [
                [
                    "identity",
                    f"{viewer.device_tag}:{viewer.device_id}  (device id, read from each ad "
                    "request: rdid+idtype, _fw_did, aw_0_1st.ifa)",
                ],
                [
                    "consent",
                    f"TCF v2 string in gdpr_consent / _fw_gdpr_consent / aw_0_req.userConsentV2"
                    f" -> {self.s(verdict, 'green' if decision.allowed else 'magenta')} "
                    f"({decision.reason})",
                ],
                ["session", session],
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
        o(f"          {video.url}  (view {view})")

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
        o, s = self.out, self.s
        self._correlator += 1
        urls = {p: ad_request(p, viewer, video, slot, self._correlator) for p in self.platforms}
        calls_before = Counter(self.sandbox.calls)
        ctx = self._context(video, session, view)
        results: list[EnrichResult] = list(
            await asyncio.gather(
                *(self.enricher.enrich(urls[p], ctx, platform=p) for p in self.platforms)
            )
        )
        ccs = self.sandbox.calls["ccs"] - calls_before["ccs"]
        ctxc = self.sandbox.calls["ctx"] - calls_before["ctx"]

        label = "pre-roll" if slot is PREROLL else "mid-roll"
        o()
        o(f"    {s(label, 'bold', 'cyan')}  {note}")
        rows = [["platform", "consent", "behavioral", "contextual", "time", "key-values"]]
        rows[0] = [s(h, "dim") for h in rows[0]]
        for p, r in zip(self.platforms, results, strict=True):
            rows.append(
                [
                    PLATFORM_LABELS[p],
                    s("allowed", "green") if r.consent.allowed else s("denied", "magenta"),
                    self._src(r.behavioral.source),
                    self._src(r.contextual.source),
                    f"{r.elapsed_ms:.1f} ms",
                    _keyvalues(r.keyvalues) or s("(none)", "dim"),
                ]
            )
        o.rows(rows, indent="      ")
        slowest = max(r.elapsed_ms for r in results)
        self._slowest_ms = max(self._slowest_ms, slowest)
        o(
            f"      sandbox calls in this break: CCS +{ccs}, Contextual +{ctxc}; "
            f"slowest ad request {slowest:.1f} ms (budget {self.budget_ms} ms)"
        )
        gained = self._gained(viewer, results)
        if gained:
            o(f"      behavioral cohorts gained: {s(', '.join(gained), 'green')}")
        lines: list[list[str]] = []
        for p, r in zip(self.platforms, results, strict=True):
            lines.extend(self._urls(PLATFORM_LABELS[p], urls[p], r))
        o.rows(lines, indent="      ")

    def _urls(self, label: str, original: str, r: EnrichResult) -> list[list[str]]:
        """Rows `platform | what | URL`: the original, the enriched (changed part painted) and
        the changed parameter before and after."""
        s = self.s
        change = UrlChange(original, r.url)
        lines = [[label, s("original", "dim"), original]]
        if change.changed:
            lines.append(["", s("enriched", "dim"), change.highlighted(s, "green", "bold")])
            if change.param_before:
                lines.append(["", s("changed", "dim"), s("- " + change.param_before, "red")])
                lines.append(["", "", s("+ " + change.param_after, "green")])
            else:
                lines.append(["", s("changed", "dim"), s("+ " + change.param_after, "green")])
        else:
            note = s("(unchanged: no cohorts for this platform)", "dim")
            lines.append(["", s("enriched", "dim"), note])
        return lines

    def _gained(self, viewer: Viewer, results: Sequence[EnrichResult]) -> list[str]:
        now: set[str] = set()
        for r in results:
            now.update(r.behavioral.cohorts)
            self._codes.update(dict.fromkeys(r.behavioral.cohorts))
            self._codes.update(dict.fromkeys(r.contextual.cohorts))
        before = self._seen.get(viewer.device_id)
        self._seen[viewer.device_id] = (before or set()) | now
        if before is None:
            return []
        return [f"{c} {self._cohort_name(c)}".rstrip() for c in sorted(now - before)]

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
        why = "" if delivered else " - no consent: nothing sent"
        self.out()
        self.out(
            f"    {self.s('completion', 'bold', 'cyan')}  VideoCompletion time_spent_seconds="
            f"{spent} percentage_watched={watched} -> enricher.track: {delivered} event(s) "
            f"delivered (CCS +{ccs}){why}"
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
        self.out(
            "      ...the late CCS answer arrived after the ad requests had gone out and "
            f'refreshed the cache (cohortkv_late_answers_total{{api="ccs"}} = {late:.0f})'
        )

    # -- summary ----------------------------------------------------------------------------

    def _summary(self) -> None:
        o, s, reg = self.out, self.s, self.registry
        o.heading("Metrics (read from the enricher's Prometheus registry)")
        rows = [[s(h, "dim") for h in ("upstream", "calls", "ok", "failed", "p50", "late")]]
        for api in ("ccs", "contextual"):
            count = "cohortkv_upstream_seconds_count"
            calls = sample_sum(reg, count, api=api)
            ok = sample_sum(reg, count, api=api, outcome="ok")
            p50 = histogram_quantile(reg, "cohortkv_upstream_seconds", 0.5, api=api)
            rows.append(
                [
                    api,
                    f"{calls:.0f}",
                    f"{ok:.0f}",
                    f"{calls - ok:.0f}",
                    "-" if p50 is None else f"~{p50 * 1000:.1f} ms",
                    f"{sample_sum(reg, 'cohortkv_late_answers_total', api=api):.0f}",
                ]
            )
        o.rows(rows)
        o()
        enrich_n = sample_sum(reg, "cohortkv_enrich_seconds_count")
        p50 = histogram_quantile(reg, "cohortkv_enrich_seconds", 0.5)
        mix: dict[str, list[str]] = {}
        for labels, value in samples(reg, "cohortkv_signal_source_total"):
            if value:
                mix.setdefault(labels["signal"], []).append(
                    f"{self._src(labels['source'])} {value:.0f}"
                )
        consent = [
            f"{labels['decision']} ({labels['reason']}) {value:.0f}"
            for labels, value in samples(reg, "cohortkv_consent_decisions_total")
            if value
        ]
        sandbox_calls = self.sandbox.calls
        o.rows(
            [
                [
                    "ad requests",
                    f"{enrich_n:.0f} enriched, p50 ~{(p50 or 0) * 1000:.1f} ms, "
                    f"slowest {self._slowest_ms:.1f} ms (budget {self.budget_ms} ms)",
                ],
                ["behavioral", ", ".join(mix.get("behavioral", [])) or "-"],
                ["contextual", ", ".join(mix.get("contextual", [])) or "-"],
                ["consent", ", ".join(consent) or "-"],
                [
                    "sandbox",
                    f"CCS {sandbox_calls['ccs']} calls (the unconsented viewer's: "
                    f"{self._unconsented_ccs_calls}), Contextual {sandbox_calls['ctx']} calls",
                ],
            ]
        )

    def _legend(self) -> None:
        if not self._codes:
            return
        self.out.heading("Cohorts seen (sandbox workspace)")
        rows = [
            [code, kind, name]
            for code in sorted(self._codes)
            for kind, name in [self._cohort_info(code)]
        ]
        self.out.rows(rows)

    # -- helpers ----------------------------------------------------------------------------

    def _src(self, source: Source | str) -> str:
        return self.s(source, _SOURCE_COLORS.get(source, "dim"))

    def _cohort_info(self, code: str) -> tuple[str, str]:
        ws = self.sandbox.state.workspace
        for c in ws.cohorts:
            if c.code == code:
                return "behavioral", c.name
        for cc in ws.contextual:
            if cc.code == code:
                return "contextual", cc.name
        return "", ""

    def _cohort_name(self, code: str) -> str:
        return self._cohort_info(code)[1]


def _keyvalues(kv: Mapping[str, Sequence[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in kv.items())


# --- command line ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Walk a scripted CTV scenario on the built-in sandbox: consented and unconsented "
        "viewers, ad breaks enriched for GAM, FreeWheel and AdsWizz, a slow API, metrics."
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
    parser.add_argument("--no-color", action="store_true", help="plain output, no ANSI colour")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    platforms = PLATFORMS if args.platform == "all" else (args.platform,)
    demo = Demo(
        sys.stdout,
        platforms=platforms,
        budget_ms=args.budget_ms,
        color=wants_color(sys.stdout, args.no_color),
    )
    return await demo.run()
