"""`cohortkv demo`: the Direct API flow end to end, on the built-in sandbox, in a few seconds.

One process runs the sandbox of the Permutive APIs and an enricher against it, then walks a
scripted CTV scenario: a consented viewer watches two football videos (play events go out with
each view's first ad request, completion events through `Enricher.track`), an unconsented viewer
watches the news. Every ad break is requested from GAM, FreeWheel and AdsWizz at once, and the
demo prints one row per ad request (consent, where each signal came from and why, how long it
took), the cohorts written and the parameter that changed (`--verbose`: the full URLs), then a
summary read from the enricher's Prometheus registry and a legend (`plugin.commands.demo_summary`).
Everything fits 100 columns (`plugin.commands.demo_report`). No API key, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry

from adapters.base import Example
from adapters.registry import ADAPTERS, EXAMPLE_PLATFORMS, adapter_class
from plugin.commands.args import positive_int
from plugin.commands.demo_report import DETAIL_INDENT, PLATFORM_LABELS, Break, Report, Request
from plugin.commands.demo_summary import DemoSummary, sample_sum
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


# --- the walk-through --------------------------------------------------------------------------


class Demo:
    """One scripted run; `run()` returns the exit status."""

    sandbox: Sandbox
    enricher: Enricher
    summary: DemoSummary

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
        self._since = ""
        """What refreshed the viewer's cached answer since the last ad break, if anything."""

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
                self.summary = DemoSummary(
                    self.out,
                    self.registry,
                    self.sandbox,
                    adapters=enricher.adapters,
                    platforms=self.platforms,
                    budget_ms=self.budget_ms,
                )
                self.out.intro(self.sandbox.base_url, config, self.platforms)
                await self._consented_viewer()
                await self._unconsented_viewer()
                self.summary.write()
        finally:
            await self.sandbox.close()
        return 0

    # -- scenario ---------------------------------------------------------------------------

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
        ccs = self.summary.unconsented_ccs_calls = self.sandbox.calls["ccs"] - ccs_before
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
        self.summary.record(results)
        since = f" ({self._since})" if self._since else ""
        for code, name in self.summary.gained(viewer.device_id, results):
            self.out(f"{DETAIL_INDENT}{self.s('gained', 'green')} {code} {name}{since}")
        self._since = ""

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


# --- command line ------------------------------------------------------------------------------


HELP = "walk a scripted scenario on the built-in sandbox"


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
