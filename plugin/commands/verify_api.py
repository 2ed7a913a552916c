"""`cohortkv verify`'s steps 1-4, which talk to the Permutive APIs directly: identity, event
collection, activations, contextual signals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry

from plugin.commands.failures import upstream_text
from plugin.commands.verify_target import (
    Fail,
    Target,
    Unproven,
    codes,
    names_line,
    now,
    suggestion,
)
from plugin.config import Config, HttpConfig
from plugin.identity import Alias
from plugin.observe.metrics import Metrics
from plugin.permutive.clients import CcsClient, ContextualClient, UpstreamError, make_session
from plugin.permutive.wire import CcsRequest, CcsResponse, ContextualResponse, Event
from plugin.signals.content_properties import ContentDescription


class VerifyApis:
    """The CCS and Contextual APIs as steps 1-4 call them: through the product's own clients (the
    same URL, headers, settings and decoding an ad request's call uses) on one session, without
    a breaker. An API's failure is the step's failure, saying what went wrong, the key redacted."""

    def __init__(
        self, session: aiohttp.ClientSession, config: Config, api_key: str, http: HttpConfig
    ) -> None:
        self.config = config
        self.api_key = api_key
        metrics = Metrics(CollectorRegistry())
        ccs, ctx, key = config.ccs_url, config.ctx_url, api_key
        self._ccs = CcsClient(session, ccs, key, metrics, http)
        self._ccs_checked = CcsClient(session, ccs, key, metrics, http, synchronous_validation=True)
        self._ctx = ContextualClient(session, ctx, key, metrics, http)

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config, api_key: str) -> AsyncIterator[VerifyApis]:
        """The APIs on a session of their own, closed when the steps are done."""
        # Every step reports its own failure: no breaker may turn a later one into "open".
        http = msgspec.structs.replace(config.http, breaker_failures=1_000_000)
        async with make_session(http.pool_limit, http.pool_limit_per_host, 5.0) as session:
            yield cls(session, config, api_key, http)

    async def ccs(
        self, alias: Alias, event: Event, *, synchronous_validation: bool = False
    ) -> CcsResponse:
        """One CCS call through the product's own client (the same URL, headers, breaker-free
        settings and decoding an ad request's call uses)."""
        client = self._ccs_checked if synchronous_validation else self._ccs
        try:
            answer = await client.segment(CcsRequest(events=[event], alias=alias))
        except UpstreamError as e:
            raise Fail(self._upstream_text("CCS", self.config.ccs_url, e)) from None
        return CcsResponse(
            user_id=answer.user_id,
            cohorts=list(answer.cohorts),
            activations={p: list(codes) for p, codes in answer.activations or ()},
        )

    async def ctx(self, url: str) -> ContextualResponse:
        request = ContentDescription(url, {}).contextual_request()
        try:
            answer = await self._ctx.segment(request)
        except UpstreamError as e:
            raise Fail(self._upstream_text("Contextual", self.config.ctx_url, e)) from None
        return ContextualResponse(
            cohorts=list(answer.cohorts),
            activations={p: list(codes) for p, codes in answer.activations or ()},
        )

    async def why(self, alias: Alias, event: Event) -> list[str]:
        """Asks again with synchronous validation: a schema mismatch then says what it is."""
        try:
            await self.ccs(alias, event, synchronous_validation=True)
        except Fail as e:
            return [f"with synchronous-validation=true: {e.lines[0]}"]
        return [
            "the event passes synchronous validation: check the cohort's rule matches "
            f"{event.name} (--test-cohort names the cohort to expect)"
        ]

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def _upstream_text(self, api: str, url: str, e: UpstreamError) -> str:
        return upstream_text(api, url, e, self.redact)


class ApiSteps:
    """Steps 1-4 on `apis`. Step 2's answer is checked again in step 3, and its user (who then
    has history) is the one step 5 enriches for."""

    def __init__(
        self, target: Target, apis: VerifyApis, test_cohort: str | None, baseline_event: str
    ) -> None:
        self.t = target
        self.apis = apis
        self.test_cohort = test_cohort
        self.baseline_event = baseline_event
        self.answer: CcsResponse | None = None
        self.alias: Alias | None = None

    async def identity(self) -> list[str]:
        alias, other = self.t.fresh_alias(), self.t.fresh_alias()
        first = await self.apis.ccs(alias, self.t.play_event())
        second = await self.apis.ccs(alias, self.t.play_event())
        third = await self.apis.ccs(other, self.t.play_event())
        shown = f"alias {alias.tag}:{alias.id}"
        got = [
            f"{shown} twice -> user_id {first.user_id or '(none)'}, then "
            f"{second.user_id or '(none)'}",
            f"another alias {other.tag}:{other.id} -> user_id {third.user_id or '(none)'}",
        ]
        if not (first.user_id and second.user_id and third.user_id):
            raise Fail(*got, "an answer has no user_id: the identity cannot be checked")
        if first.user_id != second.user_id:
            raise Fail(
                *got,
                "the same identifier must resolve to the same user: check the alias tag is "
                "configured in the workspace",
            )
        if third.user_id == first.user_id:
            raise Fail(
                *got,
                "two different identifiers resolved to one user: users would share their "
                "behaviour (the API answers one user_id for everyone?)",
            )
        return got

    async def event_collection(self) -> list[str]:
        alias = self.alias = self.t.fresh_alias()
        baseline = Event(name=self.baseline_event, time=now(), properties={})
        before = await self.apis.ccs(alias, baseline)
        event = self.t.play_event()
        answer = self.answer = await self.apis.ccs(alias, event)
        got = [
            f"fresh alias {alias.tag}:{alias.id}, one {baseline.name} event -> cohorts "
            f"{codes(before.cohorts)}",
            f"then one {event.name} event -> cohorts {codes(answer.cohorts)}",
        ]
        expected = self.test_cohort
        if expected is None:
            entered = [c for c in answer.cohorts if c not in before.cohorts]
            if entered:
                return [*got, f"entered {codes(entered)} with the event (no --test-cohort)"]
            if not answer.cohorts:
                raise Fail(
                    *got,
                    "no cohorts after the event: check cohorts are active and match "
                    f"{event.name}; pass --test-cohort CODE to name the test cohort",
                )
            raise Unproven(
                *got,
                f"could not prove the {event.name} event was collected: the user's cohorts did "
                "not change with it; pass --test-cohort CODE for a cohort it enters",
            )
        if expected in answer.cohorts and expected not in before.cohorts:
            return [*got, f"entered the test cohort {self.t.cohort(expected)} with the event"]
        if expected in answer.cohorts:
            raise Unproven(
                *got,
                f"could not prove the {event.name} event was collected: the fresh user was in "
                f"the test cohort {self.t.cohort(expected)} before it (a cohort that "
                f"{baseline.name} enters cannot show it; --baseline-event names another event)",
            )
        raise Fail(
            *got,
            f"the test cohort {self.t.cohort(expected)} is missing",
            *await self.apis.why(alias, event),
        )

    async def activations(self) -> list[str]:
        answer = self.answer
        if answer is None:
            raise Fail("no CCS answer to check: step 2 got none")
        acts = answer.activations
        if not acts or not any(acts.values()):
            raise Fail(
                f"cohorts {codes(answer.cohorts)} but no activations (asked with activations=true)",
                "a cohort must be activated for a platform in the dashboard to appear",
            )
        names = self.t.activation_names()
        listed = ", ".join(f"{p} {codes(c)}" for p, c in acts.items())
        mine = {p: c for p, c in acts.items() if p in names and c}
        if not mine:
            raise Fail(
                f"activations: {listed}",
                names_line(self.t.platform, names, acts),
                suggestion(self.t.platform, acts, self.t.adapter_settings()),
            )
        stray = sorted({c for codes in acts.values() for c in codes} - set(answer.cohorts))
        lines = [f"activations: {listed}", names_line(self.t.platform, names, acts)]
        note = f"; not among the user's cohorts: {', '.join(stray)}" if stray else ""
        lines.append(
            f"{self.t.platform} reads {', '.join(names)}: "
            + ", ".join(f"{p} {codes(c)}" for p, c in mine.items())
            + note
        )
        return lines

    async def contextual(self) -> list[str]:
        answer = await self.apis.ctx(self.t.content_url)
        acts = {p: codes for p, codes in answer.activations.items() if codes}
        listed = ", ".join(f"{p} {codes(c)}" for p, c in acts.items()) or "(none)"
        got = f"url {self.t.content_url} -> activations {listed}"
        if not acts:
            said = (
                f" (cohorts {codes(answer.cohorts)} without activations)" if answer.cohorts else ""
            )
            raise Fail(
                got + said,
                "no contextual activations: pass --content-url with a page of yours that the "
                "workspace's contextual cohorts match, activated for a platform",
            )
        names = self.t.activation_names()
        mine = sorted({c for p, codes in acts.items() if p in names for c in codes})
        if not mine:
            raise Fail(
                got,
                names_line(self.t.platform, names, acts),
                suggestion(self.t.platform, acts, self.t.adapter_settings()),
            )
        return [
            got,
            names_line(self.t.platform, names, acts),
            f"activated for {self.t.platform}: {codes(mine)}",
        ]
