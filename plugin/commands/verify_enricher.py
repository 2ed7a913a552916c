"""`cohortkv verify`'s steps 5 and 6, which go through the enricher as production traffic
does: both signals land in an ad request; no CCS call for an unconsented user while contextual
cohorts still flow."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from plugin.commands.demo import PREROLL, TC_GRANTED, TC_PURPOSE1_DENIED, Video, Viewer, ad_request
from plugin.commands.demo_summary import sample_sum
from plugin.commands.term import UrlChange
from plugin.commands.verify_target import Fail, Target, codes, decision, keyvalues
from plugin.context import Content, Context
from plugin.identity import Alias
from plugin.request import AdRequest
from plugin.result import EnrichResult

MIN_ENRICH_BUDGET_MS = 2000
"""Steps 5-6 check wiring, not latency: a slow API must not turn them into cache answers."""


class EnricherSteps:
    """Steps 5-6, each with an enricher of its own on `target`'s config."""

    def __init__(self, target: Target) -> None:
        self.t = target

    async def merging(self, alias: Alias | None) -> list[str]:
        """`alias`: a user with history (step 2's), else a fresh one."""
        alias = alias or self.t.fresh_alias()
        viewer = Viewer("verify", alias.tag, alias.id, TC_GRANTED)
        registry = CollectorRegistry()
        r, ad = await self._enrich(viewer, registry)
        b, c = r.behavioral, r.contextual
        got = (
            f"{self.t.platform} ad request (consent {decision(r)}): behavioral {b.source} "
            f"{codes(b.cohorts)}, contextual {c.source} {codes(c.cohorts)} -> "
            f"{keyvalues(r.keyvalues) or '(none)'}"
        )
        sent = {v for values in r.keyvalues.values() for v in values}
        missing = [x for x in (*b.cohorts, *c.cohorts) if x not in sent]
        unchanged = r.request is None or r.request == ad
        if not b.cohorts or not c.cohorts or missing or unchanged:
            why = []
            if not b.cohorts:
                why.append(f"no behavioral cohorts for {self.t.platform} ({b.source})")
            if not c.cohorts:
                why.append(f"no contextual cohorts for {self.t.platform} ({c.source})")
            if missing:
                why.append(f"not in the key-values: {', '.join(missing)}")
            if unchanged:
                why.append("the ad request was not changed" + self.t.no_names())
            raise Fail(got, "; ".join(why))
        if ad.method != "GET":
            return [got, f"{ad.method} body gained {keyvalues(r.keyvalues)}"]
        change = UrlChange(ad.url, r.url)
        return [got, f"URL gained {change.param_after}"]

    async def consent_gating(self) -> list[str]:
        alias = self.t.fresh_alias()
        viewer = Viewer("verify", alias.tag, alias.id, TC_PURPOSE1_DENIED)
        registry = CollectorRegistry()
        sandbox_before = self.t.sandbox.calls["ccs"] if self.t.sandbox is not None else 0
        r, _ = await self._enrich(viewer, registry)
        metric = sample_sum(registry, "cohortkv_upstream_seconds_count", api="ccs")
        if self.t.sandbox is not None:
            ccs = self.t.sandbox.calls["ccs"] - sandbox_before
            counted = f"CCS calls +{ccs} (sandbox counter; enricher metric +{metric:.0f})"
        else:
            ccs = int(metric)
            counted = f'CCS calls +{ccs} (cohortkv_upstream_seconds_count{{api="ccs"}})'
        c = r.contextual
        got = [
            f"consent {decision(r)}: behavioral {r.behavioral.source}, {counted}",
            f"contextual {c.source} {codes(c.cohorts)} -> {keyvalues(r.keyvalues) or '(none)'}",
        ]
        why = []
        if r.consent.allowed:
            why.append("a TC string without Purpose 1 was taken as consent")
        if ccs or r.behavioral.source != "skipped":
            why.append("the CCS API was called for an unconsented user")
        if not c.cohorts:
            why.append(f"no contextual cohorts reached the ad request ({c.source})")
        if why:
            raise Fail(*got, "; ".join(why))
        return got

    async def _enrich(
        self, viewer: Viewer, registry: CollectorRegistry
    ) -> tuple[EnrichResult, AdRequest]:
        from plugin.enricher import Enricher

        video = Video(
            "cohortkv-verify", "cohortkv verification", (), 60, self.t.content_url, "verify"
        )
        ad = ad_request(self.t.platform, viewer, video, PREROLL, 1)
        props = {"video_id": video.video_id, "title": video.title}
        context = Context(content=Content(url=video.url, properties=props))
        budget = max(self.t.config.budget_ms, MIN_ENRICH_BUDGET_MS)
        async with Enricher(self.t.config, registry=registry) as enricher:
            result = await enricher.enrich(ad, context, platform=self.t.platform, budget_ms=budget)
        return result, ad
