"""Explaining one ad request without acting on it (the sidecar's explain page).

`DryRun(enricher)` reads a request with the enricher's own parts (the adapters its
configuration builds, the consent gate, property typing, the play-event and Contextual-request
builders) and looks at, never touches, its caches, sessions and views. It says what the
enricher would do: which API calls it would make and with which bodies, where each signal's
cohorts would come from and why, and what it would write. Nothing is claimed, kept alive,
cached or counted in the ad path's metrics: a later real request sees the same state it would
have seen had nobody asked.

`run=True` asks the Contextual API (content only, no user data). The CCS API is asked only
with `send_play_event=True` too: it takes no request without an event, so that call records a
real play event for the user in Permutive, under a view id of its own (never the view a real
ad request claims). Calls go through clients with their own breakers and metrics; their
answers are shown and never cached. Nothing is ever sent to an ad server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Literal

import msgspec

from adapters.base import Adapter, Parsed, Unrecognised
from adapters.registry import build_adapters, read_as
from plugin.cache.local import compact_key
from plugin.config import adapter_settings
from plugin.consent.gate import decide
from plugin.context import Context
from plugin.dryrun_text import summary_lines
from plugin.explanation import Ask, CohortRow, Explanation, Read, SignalView
from plugin.identity import IdentityError
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from plugin.permutive.clients import CcsClient, ContextualClient, UpstreamError
from plugin.permutive.wire import CcsRequest, ContextualRequest, Event
from plugin.request import AdRequest, as_request
from plugin.result import ConsentDecision
from plugin.signals.content_properties import ContentDescription
from plugin.signals.content_url import with_clean_url
from plugin.signals.contextual import contextual_key
from plugin.signals.events import now_rfc3339, typed_content_properties
from plugin.signals.merge import build_keyvalues
from plugin.signals.sessions import View, new_uuid4

if TYPE_CHECKING:
    from plugin.enricher import Enricher


class Plan:
    """One signal: what is known without a call, and the call the enricher would make."""

    __slots__ = ("answer", "ask", "fallback", "reason", "request", "source")

    def __init__(
        self,
        source: str,
        reason: str,
        ask: Ask,
        *,
        answer: Answer | None = None,
        fallback: Answer | None = None,
        request: CcsRequest | ContextualRequest | None = None,
    ) -> None:
        self.source = source
        self.reason = reason
        self.ask = ask
        self.answer = answer
        """The answer this signal has now (cache, the view's), or the run's live answer."""
        self.fallback = fallback
        """The last good answer, used when the call fails or misses the budget."""
        self.request = request

    def fall_back(self, reason: str) -> None:
        """The call failed or was late: the last good answer, as a real request would."""
        self.reason = reason
        self.source = "cache" if self.fallback is not None else "none"
        self.answer = self.fallback


class DryRun:
    """The explain page's engine; one per enricher. `names` maps cohort codes to names."""

    def __init__(self, enricher: Enricher, names: Mapping[str, str] | None = None) -> None:
        self._e = enricher
        cfg = enricher.config
        self._cfg = cfg
        self.names: dict[str, str] = dict(names or {})
        self._errors: list[str] = []
        self.adapters: tuple[Adapter, ...] = build_adapters(
            adapter_settings(cfg), on_error=self._adapter_error
        )
        self._types = cfg.events.property_types()
        self._clients: tuple[CcsClient, ContextualClient] | None = None

    def _adapter_error(self, platform: str, stage: str, e: BaseException) -> None:
        self._errors.append(f"{platform} {stage}: {type(e).__name__}")

    async def explain(
        self,
        request: AdRequest | str,
        context: Context | None = None,
        *,
        platform: str | None = None,
        run: bool = False,
        send_play_event: bool = False,
    ) -> Explanation:
        """What the enricher would do with `request`; raises `CohortkvError` only for a
        person's mistake (an unknown platform name)."""
        req = as_request(request)
        errors = self._errors = []
        mode: Literal["dry_run", "run"] = "run" if run else "dry_run"
        parsed = read_as(self.adapters, req, platform)
        if isinstance(parsed, Unrecognised):
            x = Explanation(mode, parsed.platform, False, parsed.reason, before=req)
            x.after, x.adapter_errors = req, errors
            x.summary = summary_lines(x, self._shapes())
            return x
        adapter = parsed.adapter
        ctx = with_clean_url(parsed.context.overlaid(context), self._e.content_urls.peek)
        host = context.consent if context is not None else None
        signals = parsed.context.consent
        decision = decide(signals, self._cfg.consent, host)
        read, b, c = self._plan(adapter, ctx, decision)
        read.consent_signals = msgspec.to_builtins(signals)
        read.host_consent = msgspec.to_builtins(host) if host is not None else None
        x = Explanation(mode, adapter.name, True, read=read, consent=decision, before=req)
        if run:
            await self._run(b, c, send_play_event)
        self._errors = errors
        self._finish(x, parsed, b, c)
        x.adapter_errors = errors
        x.notes = self._notes(run, send_play_event, b)
        x.summary = summary_lines(x, self._shapes())
        return x

    def _plan(
        self, adapter: Adapter, ctx: Context, decision: ConsentDecision
    ) -> tuple[Read, Plan, Plan]:
        content = ctx.content
        dropped: list[str] = []
        props = (
            typed_content_properties(content.properties, self._types, dropped.append)
            if content.properties
            else {}
        )
        client_type = content.client_type or adapter.client_type
        read = Read(
            identity=msgspec.to_builtins(ctx.identity) if ctx.identity is not None else None,
            identity_problem=None,
            limit_ad_tracking=ctx.limit_ad_tracking,
            consent_signals=None,
            host_consent=None,
            content={
                "url": content.url,
                "title": content.title,
                "client_type": client_type,
                "properties": props,
                "dropped_properties": dropped,
            },
            session={"id": None, "origin": None},
            view={"id": None, "origin": None, "first": None},
        )
        described = self._e.describe_content(ctx, adapter)
        read.content["key"] = described.url if described is not None else None
        c = self._contextual(described)
        b = self._behavioral(ctx, decision, described, adapter.play_event, read)
        return read, b, c

    def _contextual(self, content: ContentDescription | None) -> Plan:
        if content is None:
            why = "no content URL and no content id"
            return Plan("none", "no_content", Ask("contextual", False, why))
        signal = self._e.contextual
        key = contextual_key(content.contextual_request())
        fresh = signal.cache.peek(key, self._cfg.cache.contextual_ttl_s)
        if fresh is not None:
            why = "a fresh cached answer for this content (younger than contextual_ttl_s)"
            return Plan("cache", "fresh_cache", Ask("contextual", False, why), answer=fresh)
        stale = signal.cache.peek(key)
        if signal._flights.get(key) is not None:
            why = "another request's call for this content is in flight: it would share it"
            return Plan("not_asked", "shared_call", Ask("contextual", False, why), fallback=stale)
        request = content.contextual_request()
        if self._e.backend_states().get("contextual") == "open":
            why = "the Contextual API's circuit breaker is open: no call"
            return Plan("not_asked", "breaker_open", Ask("contextual", False, why), fallback=stale)
        ask = Ask("contextual", True, request=msgspec.to_builtins(request))
        return Plan("not_asked", "live", ask, fallback=stale, request=request)

    def _behavioral(
        self,
        ctx: Context,
        decision: ConsentDecision,
        content: ContentDescription | None,
        play_event: str,
        read: Read,
    ) -> Plan:
        if not decision.allowed:
            why = f"consent denied ({decision.reason}): no CCS call, no cached cohorts"
            return Plan("skipped", "consent_denied", Ask("ccs", False, why))
        identity = ctx.identity
        if identity is None:
            return Plan("none", "no_identity", Ask("ccs", False, "no identity in the request"))
        try:
            identity.validate()
        except IdentityError as e:
            read.identity_problem = f"{e.field}: expected {e.expected}"
            why = "the CCS API would refuse this identity"
            return Plan("none", "invalid_identity", Ask("ccs", False, why))
        key = compact_key(identity.cache_key())
        cached = self._e.behavioral.cache.peek(key)
        if content is None:
            why = "no content URL and no content id: no play event, so no call (cache only)"
            src = "cache" if cached is not None else "none"
            return Plan(src, "no_content", Ask("ccs", False, why), answer=cached)
        p = self._e.sessions.preview(
            key,
            session=ctx.session_id,
            ssai_session_id=ctx.ssai_session_id,
            view_id=ctx.view_id,
            content_url=content.url,
        )
        session_id = p.session_id or new_uuid4()
        view_id = p.view.id if p.view is not None else (p.given_view or new_uuid4())
        read.session = {"id": session_id, "origin": p.session_origin}
        view_origin = "host" if ctx.view_id else "ssai" if ctx.ssai_session_id else "generated"
        read.view = {"id": view_id, "origin": view_origin, "first": p.view is None}
        if p.view is not None and not p.view.resend:
            return self._later_break(p.view, cached)
        props = content.event_properties(client=self._cfg.events.client)
        request = CcsRequest(
            events=[Event(play_event, now_rfc3339(), props, view_id, session_id)],
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        if self._e.backend_states().get("ccs") == "open":
            why = "the CCS API's circuit breaker is open: no call"
            return Plan("not_asked", "breaker_open", Ask("ccs", False, why), fallback=cached)
        ask = Ask("ccs", True, request=msgspec.to_builtins(request))
        if cached is not None and self._cfg.behavioral.wait == "if_uncached":
            ask.note = "wait = if_uncached: the cached answer is used at once, the call goes on"
            return Plan("cache", "cache_first", ask, answer=cached, request=request)
        return Plan("not_asked", "live", ask, fallback=cached, request=request)

    def _later_break(self, view: View, cached: Answer | None) -> Plan:
        if view.answer is not None:
            why = "the view's play event already went out: this break uses the freshest answer"
            return Plan("cache", "view_reuse", Ask("ccs", False, why), answer=cached or view.answer)
        if view.flight is not None and not view.flight.done():
            why = "the view's play-event call is in flight: this request would wait on it"
            return Plan("not_asked", "view_reuse", Ask("ccs", False, why), fallback=cached)
        if view.settled is not None:
            why = f"the view's play event failed ({view.settled}): never sent again (cache only)"
        else:
            why = "the view's play event already went out: no second one (cache only)"
        src = "cache" if cached is not None else "none"
        return Plan(src, view.settled or "view_reuse", Ask("ccs", False, why), answer=cached)

    # -- a run: the calls, made on clients of their own ------------------------------------

    async def _run(self, b: Plan, c: Plan, send_play_event: bool) -> None:
        await self._e.start()
        if self._clients is None:
            self._clients = self._e.backends.side_clients(Metrics())
        ccs, ctx = self._clients
        budget = self._cfg.budget_ms
        calls = []
        if c.ask.would_call and isinstance(c.request, ContextualRequest):
            calls.append(_call(c, ctx.segment(c.request), budget))
        if b.ask.would_call and isinstance(b.request, CcsRequest):
            if send_play_event:
                calls.append(_call(b, ccs.segment(b.request), budget))
            else:
                b.ask.note = (
                    "not sent: the CCS API takes no request without an event, and this one"
                    " would record a real play event for this user (tick 'send the play"
                    " event' to send it)"
                )
        if calls:
            await asyncio.gather(*calls)

    # -- what would be written -------------------------------------------------------------

    def _finish(self, x: Explanation, parsed: Parsed, b: Plan, c: Plan) -> None:
        platforms = parsed.adapter.activation_platforms
        b_answer = b.answer if b.source != "not_asked" else b.fallback
        c_answer = c.answer if c.source != "not_asked" else c.fallback
        b_codes = b_answer.activated(platforms) if b_answer is not None else []
        c_codes = c_answer.activated(platforms) if c_answer is not None else []
        puid = b_answer.user_id if b_answer is not None else None
        wanted = build_keyvalues(self._cfg.keys, b_codes, c_codes, puid)
        applied = parsed.adapter.apply(parsed, wanted)
        written = {v for values in applied.written.values() for v in values}
        x.activation_platforms = list(platforms)
        x.keyvalues = applied.written
        x.not_written = [v for values in wanted.values() for v in values if v not in written]
        x.after = applied.request
        x.asks = [b.ask, c.ask]
        x.behavioral = _signal(b, b_answer, b_codes, written, self.names)
        x.contextual = _signal(c, c_answer, c_codes, written, self.names)

    def _notes(self, run: bool, send_play_event: bool, b: Plan) -> list[str]:
        notes = ["nothing was sent to the ad server"]
        if not run:
            notes.append("dry run: neither API was asked")
        elif send_play_event and b.ask.called:
            notes.append(
                "a real play event was sent to the CCS API for this user, under a view id of"
                " its own; its answer was not cached"
            )
        if self._e.sessions.shared is not None:
            notes.append(
                "sessions, views and answers are this replica's: the fleet's (Redis) were not read"
            )
        return notes

    def _shapes(self) -> dict[str, str]:
        return {a.name: getattr(a, "shape", "") for a in self.adapters}


async def _call(plan: Plan, call: Awaitable[Answer], budget_ms: int) -> None:
    """One API call of a run, and the outcome a real request would have had from it."""
    started = time.perf_counter()
    ask = plan.ask
    try:
        answer: Answer = await call
    except UpstreamError as e:
        ask.called, ask.outcome = True, e.kind
        ask.elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        ask.note = str(e)
        plan.fall_back("cache_fallback_error")
        return
    elapsed = time.perf_counter() - started
    ask.called, ask.outcome, ask.elapsed_ms = True, "ok", round(elapsed * 1000, 1)
    if plan.reason == "cache_first":
        ask.note += f"; it answered {len(answer.cohorts)} cohorts (not cached: explain)"
        return
    if elapsed > budget_ms / 1000:
        ask.note = (
            f"answered after budget_ms ({budget_ms} ms): a real request would use"
            " the last good answer, and the late answer would refresh the cache"
        )
        plan.fall_back("cache_fallback_timeout")
        return
    plan.source, plan.answer = "live", answer


def _signal(
    plan: Plan,
    answer: Answer | None,
    activated: list[str],
    written: set[str],
    names: Mapping[str, str],
) -> SignalView:
    rows: list[CohortRow] = []
    if answer is not None:
        on = set(activated)
        for code in dict.fromkeys([*answer.cohorts, *activated]):
            rows.append(CohortRow(code, names.get(code), code in on, code in written))
    note = ""
    if plan.source == "not_asked" and answer is not None:
        note = "not asked (dry run): these are the cached answer a failed call would use"
    return SignalView(plan.source, plan.reason, rows, note)
