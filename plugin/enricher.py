"""The enricher: one ad request in, the same request with cohort key-values out, within budget.

It orchestrates: the adapter reads the request, the consent gate decides, the behavioral and
contextual signals (`plugin.behavioral`, `plugin.contextual`) start concurrently and are waited
for under ONE deadline, their cohorts are merged or split, and the adapter writes them. A
signal that fails or misses the deadline falls back to its last good answer; a late answer
keeps running in the background and still refreshes the cache. Nothing here raises into the
host for a machine's bad input: the worst case is the request as given.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Self

import aiohttp
from prometheus_client import CollectorRegistry

from adapters.base import Adapter
from adapters.registry import adapter_by_name, build_adapters, find_adapter
from plugin.behavioral import BehavioralSignal, PlayEvent
from plugin.cache import Answer
from plugin.config import Config, adapter_settings, require_api
from plugin.consent import decide, is_undecodable
from plugin.context import ConsentSignals, Context
from plugin.contextual import ContextualSignal
from plugin.events import now_rfc3339, parse_event_time, prune_empty, typed_properties
from plugin.identity import Identity
from plugin.merge import build_keyvalues
from plugin.metrics import Metrics, RateLimitedLog
from plugin.pending import Outcome, Pending, wait_all
from plugin.request import AdRequest, as_request
from plugin.result import ConsentDecision, EnrichResult, Reason, SignalResult, Source
from plugin.sessions import SessionTracker
from plugin.shared import SharedStore
from plugin.sources import CcsClient, ContextualClient, make_session
from plugin.tracker import EventIds, EventSender
from plugin.wire import Event

__all__ = ["EnrichResult", "Enricher", "SignalResult"]

log = logging.getLogger("cohortkv.enricher")

_FINISH_RESERVE_S = 0.002
_MAX_DECISIONS = 4096
"""Consent decisions (by the signals they were made from) and answers' activated cohorts (by
answer) remembered before starting over."""
_NOT_RECOGNISED = SignalResult("none", [], "not_recognised")


class Enricher:
    """`async with Enricher(config) as e: result = await e.enrich(url_or_request, context)`.

    It needs an API key, or `sandbox = true` to run the built-in sandbox of the Permutive APIs
    in-process on purpose (no credentials, no network; it logs a warning and sets the
    `cohortkv_sandbox_mode` gauge). Without either it refuses to start: sandbox cohorts must
    never reach real ad servers by accident.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: CollectorRegistry | None = None,
        adapters: Sequence[Adapter] | None = None,
        clock: Any = None,
    ) -> None:
        self.config = require_api(config if config is not None else Config())
        cfg = self.config
        self.metrics = Metrics(registry)
        self._warn = RateLimitedLog(log)
        self.adapters: tuple[Adapter, ...] = (
            tuple(adapters)
            if adapters is not None
            else build_adapters(adapter_settings(cfg), on_error=self._adapter_failed)
        )
        clock = clock or time.monotonic
        self.sessions = SessionTracker(
            namespace=uuid.UUID(cfg.events.view_namespace),
            session_idle_s=cfg.sessions.idle_timeout_s,
            view_idle_s=cfg.views.idle_timeout_s,
            max_sessions=cfg.sessions.max_entries,
            max_views=cfg.views.max_entries,
            clock=clock,
        )
        self.behavioral = BehavioralSignal(cfg, self.metrics, self.sessions, clock)
        self.contextual = ContextualSignal(cfg.cache, self.metrics, clock)
        self.behavioral.spawn = self._spawn
        self.contextual.track = self._track
        self.behavioral.late_after_s = self.contextual.late_after_s = cfg.budget_ms / 1000
        self.events = EventSender(self.sessions, self._ccs_client, self.behavioral.remember)
        self._property_types = cfg.events.property_types()
        self._background: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._starting = asyncio.Lock()
        self._sandbox: Any = None
        self._shared: SharedStore | None = None
        # Labelled children looked up once: `labels()` costs more than the increment itself.
        self._decisions: dict[tuple[bool, str], Any] = {}
        self._sources: dict[tuple[str, Source, Reason], Any] = {}
        self._timers: dict[str, Any] = {}
        self._not_recognised: dict[tuple[str, str, str], Any] = {}
        self._decided: dict[tuple[ConsentSignals, ConsentSignals | None], ConsentDecision] = {}
        self._activations: dict[int, tuple[Answer, tuple[str, ...], tuple[str, ...]]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Idempotent, and safe to race: concurrent first calls share one start."""
        if self._session is not None:
            return
        async with self._starting:
            if self._session is None:
                await self._start()

    async def _start(self) -> None:
        cfg = self.config
        api_key, ccs_url, ctx_url = cfg.api_key, cfg.ccs_url, cfg.ctx_url
        if api_key is None:
            from plugin.sandbox import start_sandbox

            self._sandbox = await start_sandbox()
            api_key = self._sandbox.api_key
            ccs_url = ctx_url = self._sandbox.base_url
            self.metrics.sandbox_mode.set(1)
            log.warning(
                "sandbox = true: serving the built-in sandbox's cohorts (%s), not Permutive's; "
                "never point real ad traffic at this",
                ccs_url,
            )
        if cfg.cache.redis_url:
            from plugin.shared import RedisStore

            self._shared = RedisStore(
                cfg.cache.redis_url,
                self.metrics,
                timeout_s=cfg.cache.redis_timeout_ms / 1000,
                cluster=cfg.cache.redis_cluster,
            )
            self.behavioral.shared = self.contextual.shared = self._shared
            self.sessions.shared = self._shared
        h = cfg.http
        session = make_session(h.pool_limit, h.pool_limit_per_host, h.keepalive_timeout_s)
        self.behavioral.client = CcsClient(session, ccs_url, api_key, self.metrics, h)
        self.contextual.client = ContextualClient(session, ctx_url, api_key, self.metrics, h)
        self._session = session

    async def close(self) -> None:
        """Lets calls already made finish briefly (their answers fill the cache), then stops."""
        pending = [t for t in self._background if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.config.budget_ms / 1000)
            for t in pending:
                t.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._shared is not None:
            await self._shared.close()
            self._shared = self.sessions.shared = None
            self.behavioral.shared = self.contextual.shared = None
        if self._sandbox is not None:
            await self._sandbox.close()
            self._sandbox = None

    def upstream_states(self) -> dict[str, str]:
        """Circuit breaker state per API (`closed`, `open`, `half_open`), for readiness."""
        clients = {"ccs": self.behavioral.client, "contextual": self.contextual.client}
        return {
            api: c.breaker.state.name.lower() if c is not None else "closed"
            for api, c in clients.items()
        }

    @property
    def sandbox(self) -> Any:
        """The in-process sandbox when running with `sandbox = true`, else None."""
        return self._sandbox

    def _ccs_client(self) -> CcsClient:
        client = self.behavioral.client
        if client is None:
            raise RuntimeError("Enricher used before start()")
        return client

    # -- the hot path ---------------------------------------------------------------------

    async def enrich(
        self,
        request: AdRequest | str,
        context: Context | None = None,
        *,
        platform: str | None = None,
        budget_ms: float | None = None,
        origin: str = "library",
    ) -> EnrichResult:
        """The request (or URL) with key-values for its platform; never raises for a
        machine's bad input.

        `platform` names an adapter or is None/`auto` to pick the one that recognises the
        request. `origin` says where the request came from (an upstream's name, `middleware`)
        in the metrics and logs of requests that are not recognised. A person's mistake (an
        unknown platform name, an invalid explicit identity) raises ValueError.
        """
        started = time.perf_counter()
        req = as_request(request)
        adapter = self.adapter_for(req, platform)
        if context is not None and context.identity is not None:
            context.identity.validate()
        if adapter is None:
            return self._unchanged(req, started, origin, platform or "auto", "no_adapter")
        why_not = adapter.unrecognised(req)
        if why_not is not None:
            return self._unchanged(req, started, origin, adapter.name, why_not)
        if self._session is None:
            await self.start()

        parsed = adapter.parse(req)
        ctx = parsed.overlaid(context)
        decision = self.decide(parsed.consent, context.consent if context is not None else None)
        loop = asyncio.get_running_loop()
        deadline = (budget_ms if budget_ms is not None else self.config.budget_ms) / 1000
        # Stop waiting a little before the budget: merging and writing come after.
        until = loop.time() + deadline - min(_FINISH_RESERVE_S, deadline * 0.05)

        content = ctx.content
        props = self._properties(content.properties) if content.properties else {}
        client_type = content.client_type or adapter.client_type
        c = self.contextual.begin(
            content.url,
            props,
            title=content.title,
            client_type=client_type,
            section=adapter.content_section,
        )
        has_content = bool(content.url) or bool(props)
        play = None
        if has_content:

            def play() -> PlayEvent:
                return PlayEvent(
                    adapter.play_event,
                    now_rfc3339(),
                    _play_properties(props, content.title, client_type),
                )

        b = await self.behavioral.begin(ctx, decision, play)
        waiting: list[asyncio.Task[Any]] = []
        b.waiting(waiting)
        c.waiting(waiting)
        if waiting:
            await wait_all(loop, waiting, until)
        return self._finish(req, adapter, decision, b, c, started)

    def _finish(
        self,
        req: AdRequest,
        adapter: Adapter,
        decision: ConsentDecision,
        b: Pending,
        c: Pending,
        started: float,
    ) -> EnrichResult:
        behavioral, contextual = b.outcome(), c.outcome()
        platforms = adapter.activation_platforms
        b_codes = self._activated(behavioral.answer, platforms) if behavioral.answer else []
        c_codes = self._activated(contextual.answer, platforms) if contextual.answer else []
        puid = behavioral.answer.user_id if behavioral.answer is not None else None
        wanted = build_keyvalues(self.config.keys, b_codes, c_codes, puid)
        applied = adapter.apply(req, wanted)
        elapsed = time.perf_counter() - started
        timer = self._timers.get(adapter.name)
        if timer is None:
            timer = self._timers[adapter.name] = self.metrics.enrich_seconds.labels(adapter.name)
        timer.observe(elapsed)
        return EnrichResult(
            url=applied.request.url,
            keyvalues=applied.written,
            behavioral=self._signal("behavioral", behavioral, b_codes),
            contextual=self._signal("contextual", contextual, c_codes),
            consent=decision,
            elapsed_ms=round(elapsed * 1000, 3),
            platform=adapter.name,
            user_id=puid,
            request=applied.request,
        )

    def _activated(self, answer: Answer, platforms: tuple[str, ...]) -> list[str]:
        """`answer.activated(platforms)`, remembered per answer object: one cached answer
        serves many requests (a content's, a view's), and the platforms are an adapter's."""
        known = self._activations.get(id(answer))
        if known is not None and known[0] is answer and known[1] is platforms:
            return list(known[2])
        codes = answer.activated(platforms)
        if len(self._activations) >= _MAX_DECISIONS:
            self._activations.clear()
        self._activations[id(answer)] = (answer, platforms, tuple(codes))
        return codes

    def adapter_for(self, request: AdRequest, platform: str | None) -> Adapter | None:
        if platform is None or platform == "auto":
            return find_adapter(self.adapters, request)
        return adapter_by_name(self.adapters, platform)

    def decide(
        self, signals: ConsentSignals, host: ConsentSignals | None = None
    ) -> ConsentDecision:
        """The consent gate's decision over the request's and the host's signals, counted."""
        d = self._decide(signals, host)
        counter = self._decisions.get((d.allowed, d.reason))
        if counter is None:
            counter = self.metrics.consent_decisions.labels(
                "allowed" if d.allowed else "denied", d.reason
            )
            self._decisions[(d.allowed, d.reason)] = counter
        counter.inc()
        if is_undecodable(d.reason):
            self.metrics.bad_input.labels("consent", d.reason).inc()
            self._warn.warning(f"consent:{d.reason}", "consent signal undecodable: %s", d.reason)
        return d

    def _decide(self, signals: ConsentSignals, host: ConsentSignals | None) -> ConsentDecision:
        """`plugin.consent.decide`, remembered: it is pure, and one user's signals come back
        with every ad break (a TC string is worth decoding once, not per request)."""
        key = (signals, host)
        try:
            known = self._decided.get(key)
        except TypeError:  # a signal of an unhashable type: decided, not remembered
            return decide(signals, self.config.consent, host)
        if known is None:
            known = decide(signals, self.config.consent, host)
            if len(self._decided) >= _MAX_DECISIONS:
                self._decided.clear()
            self._decided[key] = known
        return known

    def _properties(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Typed as `[events.properties]` says, empty values left out."""
        typed, dropped = typed_properties(raw, self._property_types)
        for name in dropped:
            self.metrics.bad_input.labels("property", "untyped").inc()
            self._warn.warning(
                f"property:{name}", "property %r: value does not parse as its type; left out", name
            )
        pruned: dict[str, Any] = prune_empty(typed)
        return pruned

    def _signal(self, name: str, got: Outcome, cohorts: list[str]) -> SignalResult:
        source, reason = got.source, got.reason
        counter = self._sources.get((name, source, reason))
        if counter is None:
            counter = self._sources[(name, source, reason)] = self.metrics.signal_source.labels(
                name, source, reason
            )
        counter.inc()
        if got.answer is None:
            return SignalResult(source, [], reason)
        return SignalResult(source, list(cohorts), reason)

    def _unchanged(
        self, req: AdRequest, started: float, origin: str, platform: str, why: str
    ) -> EnrichResult:
        """A request no adapter recognises goes out as it came: counted, logged, never called an
        enrichment."""
        counter = self._not_recognised.get((origin, platform, why))
        if counter is None:
            counter = self._not_recognised[(origin, platform, why)] = (
                self.metrics.not_recognised.labels(origin, platform, why)
            )
        counter.inc()
        self._warn.warning(
            f"unrecognised:{origin}:{platform}:{why}",
            "ad request from %s not recognised by platform %s (%s): sent on unchanged",
            origin,
            platform,
            why,
        )
        return EnrichResult(
            url=req.url,
            keyvalues={},
            behavioral=_NOT_RECOGNISED,
            contextual=_NOT_RECOGNISED,
            consent=ConsentDecision(False, "not_evaluated"),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            request=req,
            unrecognised=why,
        )

    def _adapter_failed(self, platform: str, stage: str, e: BaseException) -> None:
        self.metrics.adapter_errors.labels(platform, stage).inc()
        self._warn.warning(
            f"adapter:{platform}:{stage}",
            "adapter %s failed in %s (%s): the request goes out %s",
            platform,
            stage,
            type(e).__name__,
            "unchanged" if stage != "parse" else "without what it carries",
        )
        log.debug("adapter failure", exc_info=e)

    # -- events ---------------------------------------------------------------------------

    async def track(
        self,
        events: Iterable[Event],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
        ids: EventIds | None = None,
    ) -> int:
        """Sends player events (completion with engagement metrics, ...) to the CCS API.

        Consented users only; chronological order; at most 10 events per request; empty
        properties left out. Events without a view id land in the view whose play event went
        out (`plugin.sessions`; `ids` says where, as the ad request did). Returns how many
        events were delivered. Raises `IdentityError` / `RequestError` for a person's mistake
        (an invalid identity, a bad event time); upstream failures mean fewer delivered.
        """
        identity.validate()
        if isinstance(consent, bool):
            allowed = consent
        elif isinstance(consent, ConsentDecision):
            allowed = consent.allowed
        else:
            allowed = self.decide(consent).allowed
        events = list(events)
        if not allowed:
            for i, ev in enumerate(events):  # a person's mistake is one whatever the consent
                parse_event_time(ev.time, f"events[{i}].time")
            return 0
        await self.start()
        prepared = await self.events.prepare(identity, events, ids or EventIds())
        return await self.events.send(identity, prepared)

    async def send_batch(self, identity: Identity, events: Sequence[Event]) -> Answer:
        """One CCS call with up to 10 prepared events, no consent check: callers made it."""
        await self.start()
        return await self.events.send_batch(identity, events)

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        if task not in self._background:
            self._background.add(task)
            task.add_done_callback(self._background.discard)


def _play_properties(
    props: dict[str, Any], title: str | None, client_type: str | None
) -> dict[str, Any]:
    out = dict(props)
    if title and "title" not in out:
        out["title"] = title
    if client_type:
        client = out.get("client")
        out["client"] = (
            {**client, "type": client_type} if isinstance(client, dict) else {"type": client_type}
        )
    return out
