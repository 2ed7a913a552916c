"""The enricher: one ad request in, the same request with cohort key-values out, within budget.

It orchestrates: the adapter reads the request, the consent gate decides, the behavioral and
contextual signals (`plugin.signals.behavioral`, `plugin.signals.contextual`) start
concurrently and are waited for under ONE deadline, their cohorts are merged or split, and the
adapter writes them. A signal that fails or misses the deadline falls back to its last good
answer; a late answer keeps running in the background and still refreshes the cache. Nothing
here raises into the host for a machine's bad input: the worst case is the request as given.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, Self

from prometheus_client import CollectorRegistry

from adapters.base import Adapter, UrlAdapter
from adapters.registry import adapter_by_name, build_adapters, find_adapter
from plugin import reserved
from plugin.accounting import Accounting
from plugin.config import Config, adapter_settings, require_api
from plugin.consent.gate import RememberedDecisions
from plugin.context import ConsentSignals, Context
from plugin.identity import Identity
from plugin.observe.metrics import Metrics
from plugin.observe.tracing import make_tracer, result_attributes
from plugin.permutive.answer import Answer, RememberedActivations
from plugin.permutive.wire import CcsRequest, Event
from plugin.request import AdRequest, as_request
from plugin.result import ConsentDecision, EnrichResult, SignalResult
from plugin.signals.behavioral import BehavioralSignal
from plugin.signals.content_key import content_key
from plugin.signals.content_properties import ContentDescription
from plugin.signals.content_url import ContentUrls, with_clean_url
from plugin.signals.contextual import ContextualSignal
from plugin.signals.events import as_event, typed_content_properties
from plugin.signals.merge import build_keyvalues, cohorts_for
from plugin.signals.pending import Pending, wait_all
from plugin.signals.sessions import SessionTracker
from plugin.signals.tracker import EventIds, EventSender
from plugin.upstreams import Upstreams

__all__ = ["EnrichResult", "Enricher", "SignalResult"]

_FINISH_RESERVE_S = 0.002


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
        tracer_provider: Any = None,
    ) -> None:
        self.config = cfg = require_api(config if config is not None else Config())
        self.metrics = Metrics(registry)
        self.accounting = Accounting(self.metrics)
        self.adapters: tuple[Adapter, ...] = (
            tuple(adapters)
            if adapters is not None
            else build_adapters(
                adapter_settings(cfg),
                on_error=self.accounting.adapter_failed,
                on_skip=self.accounting.adapter_skipped,
            )
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
        self.events = EventSender(
            self.sessions,
            self._call,
            self.metrics,
            cfg.events.play_events or {a.play_event for a in self.adapters},
        )
        self.content_urls = ContentUrls(
            cfg.content.drop_query, self.metrics.content_url_redactions.inc
        )
        self.events.content_url = self.content_urls
        self.tracer = make_tracer(cfg.tracing, tracer_provider)
        self.upstreams = Upstreams(cfg, self.metrics, self.tracer, tracer_provider)
        self._decide = RememberedDecisions(cfg.consent)
        self._activated = RememberedActivations()
        self._property_types = cfg.events.property_types()
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Idempotent, and safe to race: concurrent first calls share one start."""
        if await self.upstreams.start():
            up = self.upstreams
            self.behavioral.client, self.contextual.client = up.ccs, up.contextual
            self.behavioral.shared = self.contextual.shared = self.sessions.shared = up.shared

    async def close(self) -> None:
        """Lets calls already made finish briefly (their answers fill the cache), then stops."""
        pending = [t for t in self._background if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.config.budget_ms / 1000)
            for t in pending:
                t.cancel()
        self.behavioral.shared = self.contextual.shared = self.sessions.shared = None
        await self.upstreams.close()

    def upstream_states(self) -> dict[str, str]:
        """Circuit breaker state per API (`closed`, `open`, `half_open`), for readiness."""
        return self.upstreams.states()

    @property
    def sandbox(self) -> Any:
        """The in-process sandbox when running with `sandbox = true`, else None."""
        return self.upstreams.sandbox

    async def _call(self, key: bytes, request: CcsRequest) -> Answer:
        if self.behavioral.client is None:
            raise RuntimeError("Enricher used before start()")
        return await self.behavioral.call(key, request)

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
        machine's bad input. With tracing on, inside a `cohortkv.enrich` span.

        `platform` names an adapter or is None/`auto` to pick the one that recognises the
        request. `origin` says where the request came from (an upstream's name, `middleware`)
        in the metrics and logs of requests that are not recognised. A person's mistake (an
        unknown platform name, an invalid explicit identity) raises `CohortkvError`.
        """
        if self.tracer is None:
            return await self._enrich(request, context, platform, budget_ms, origin)
        with self.tracer.start_as_current_span("cohortkv.enrich") as span:
            result = await self._enrich(request, context, platform, budget_ms, origin)
            span.set_attributes(result_attributes(result))
            return result

    async def _enrich(
        self,
        request: AdRequest | str,
        context: Context | None,
        platform: str | None,
        budget_ms: float | None,
        origin: str,
    ) -> EnrichResult:
        started = time.perf_counter()
        req = as_request(request)
        if context is not None and context.identity is not None:
            context.identity.validate()
        url, found = reserved.split_url(req.url)
        if found:  # the URL's reserved parameters: read, and never forwarded
            req = req.with_url(url)
            context = reserved.under(context, reserved.params_context(found, self._bad_reserved))
        adapter = self.adapter_for(req, platform)
        why_not = "no_adapter" if adapter is None else adapter.unrecognised(req)
        if adapter is None or why_not is not None:
            name = (platform or "auto") if adapter is None else adapter.name
            return self.accounting.unrecognised(req, started, origin, name, why_not or "")
        if not self.upstreams.running:
            await self.start()

        parsed = adapter.parse(req)
        ctx = with_clean_url(parsed.overlaid(context), self.content_urls)
        decision = self.decide(parsed.consent, context.consent if context is not None else None)
        loop = asyncio.get_running_loop()
        deadline = (budget_ms if budget_ms is not None else self.config.budget_ms) / 1000
        # Stop waiting a little before the budget: merging and writing come after.
        until = loop.time() + deadline - min(_FINISH_RESERVE_S, deadline * 0.05)

        described = self.describe_content(ctx, adapter)
        c = self.contextual.begin(described)
        b = await self.behavioral.begin(
            ctx, decision, described, adapter.play_event, until - loop.time()
        )
        waiting: list[asyncio.Task[Any]] = []
        b.waiting(waiting)
        c.waiting(waiting)
        if waiting:
            await wait_all(loop, waiting, until)
        result = self._finish(req, adapter, decision, b, c, started)
        if self.accounting.decisions is not None:  # the explain page's last decisions
            self.accounting.decisions.add(result, ctx.identity, origin)
        return result

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
        if not platforms:
            self.accounting.no_activation_platforms(adapter.name)
        b_codes = self._activated(behavioral.answer, platforms) if behavioral.answer else []
        c_codes = self._activated(contextual.answer, platforms) if contextual.answer else []
        puid = behavioral.answer.user_id if behavioral.answer is not None else None
        wanted = build_keyvalues(self.config.keys, b_codes, c_codes, puid)
        by_name = cohorts_for(self.config.keys, behavioral.answer, contextual.answer)
        req = self._without_viewer_values(req, adapter, decision.allowed, bool(c_codes))
        applied = adapter.apply(req, wanted, by_name)
        elapsed = self.accounting.enriched(adapter.name, started)
        return EnrichResult(
            url=applied.request.url,
            keyvalues=applied.written,
            behavioral=self.accounting.signal("behavioral", behavioral, b_codes),
            contextual=self.accounting.signal("contextual", contextual, c_codes),
            consent=decision,
            elapsed_ms=round(elapsed * 1000, 3),
            platform=adapter.name,
            user_id=puid,
            request=applied.request,
        )

    def _without_viewer_values(
        self, req: AdRequest, adapter: Adapter, allowed: bool, contextual: bool
    ) -> AdRequest:
        """The request without values a viewer put under our keys: under the behavioral key
        (and the user id's) when consent is denied, since a viewer could inject cohorts there;
        under a contextual key of its own when we write it, since ours replace theirs. Each
        value removed is counted and logged (`viewer_keyvalue_removed`)."""
        keys = self.config.keys
        strip: set[str] = set()
        if not allowed:
            strip.update(k for k in (keys.behavioral, keys.puid) if k)
        if contextual and keys.mode == "split":
            strip.add(keys.contextual)
        if not strip or not isinstance(adapter, UrlAdapter):
            return req
        out, removed = adapter.strip_keys(req, strip)
        for _ in range(removed):
            self.accounting.adapter_skipped(adapter.name, "viewer_keyvalue_removed")
        return out

    def adapter_for(self, request: AdRequest, platform: str | None) -> Adapter | None:
        if platform is None or platform == "auto":
            return find_adapter(self.adapters, request)
        return adapter_by_name(self.adapters, platform)

    def decide(
        self, signals: ConsentSignals, host: ConsentSignals | None = None
    ) -> ConsentDecision:
        """The consent gate's decision over the request's and the host's signals, counted."""
        return self.accounting.decision(self._decide(signals, host))

    def describe_content(self, ctx: Context, adapter: Adapter) -> ContentDescription | None:
        """What the play event and the Contextual request say about the content; None when
        the request names none (no content URL, no content id). The explain page uses it too."""
        content = ctx.content
        props = self._properties(content.properties)
        key = content_key(content.url, props, adapter.name, adapter.content_ids)
        if key is None:
            return None
        return ContentDescription(
            key,
            props,
            title=content.title,
            client_type=content.client_type or adapter.client_type,
            section=adapter.content_section,
        )

    def _properties(self, raw: dict[str, Any]) -> dict[str, Any]:
        if not raw:
            return {}
        return typed_content_properties(raw, self._property_types, self._untyped)

    def _bad_reserved(self, kind: str) -> None:
        self.metrics.bad_input.labels("reserved", kind).inc()

    def _untyped(self, name: str) -> None:
        self.metrics.bad_input.labels("property", "untyped").inc()
        self.accounting.warn.warning(
            f"property:{name}", "property %r: value does not parse as its type; left out", name
        )

    # -- events ---------------------------------------------------------------------------

    async def track(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
        ids: EventIds | None = None,
    ) -> int:
        """Sends player events (completion with engagement metrics, ...) to the CCS API.

        Each event is a `plugin.Event` or a plain mapping (`{"name": "VideoCompletion", "time":
        "2024-01-15T14:00:00Z", "properties": {"percentage_watched": 0.9}}`), checked as a
        `/v1/events` body's event is. Consented users only; chronological order; at most 10
        events per request; empty properties left out. Events without a view id land in the
        view whose play event went out (`plugin.signals.sessions`; `ids` says where, as the ad
        request did). A play event (`[events] play_events`) opens its view; one whose view's
        play event went out already is not sent. Returns how many events were delivered;
        nothing is ever sent twice. Raises `IdentityError` /
        `RequestError` naming the field for a person's mistake (an invalid identity, a bad
        event), whatever the consent; upstream failures mean fewer delivered.
        """
        identity.validate()
        checked = [as_event(ev, f"events[{i}]") for i, ev in enumerate(events)]
        if isinstance(consent, bool):
            allowed = consent
        elif isinstance(consent, ConsentDecision):
            allowed = consent.allowed
        else:
            allowed = self.decide(consent).allowed
        if not allowed:
            return 0
        await self.start()
        prepared = await self.events.prepare(identity, checked, ids or EventIds())
        return await self.events.send(identity, prepared.events)

    async def send_batch(self, identity: Identity, events: Sequence[Event]) -> Answer:
        """One CCS call with up to 10 prepared events, no consent check: callers made it."""
        await self.start()
        return await self.events.send_batch(identity, events)

    # -- background tasks -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        if task not in self._background:
            self._background.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """A background call ended: an exception in it is a bug of ours, counted and logged at
        a bounded rate (asyncio would log each one with its traceback)."""
        self._background.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self.accounting.bug("background", e)
