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
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from prometheus_client import CollectorRegistry

from adapters.base import Adapter, Parsed, Unrecognised, UrlAdapter
from adapters.registry import build_adapters
from plugin.accounting import Accounting
from plugin.backends import Backends
from plugin.background import Background
from plugin.cache.local import Clock
from plugin.config import Config, adapter_settings, require_api
from plugin.consent.gate import RememberedDecisions
from plugin.context import ConsentSignals, Context
from plugin.identity import Identity
from plugin.observe.metrics import Metrics
from plugin.observe.tracing import TracerProvider, make_tracer, result_attributes
from plugin.permutive.answer import Answer
from plugin.permutive.wire import Event
from plugin.reading import Reading
from plugin.reading import read as read_request
from plugin.request import AdRequest
from plugin.result import ConsentDecision, EnrichResult, SignalResult
from plugin.signals.behavioral import BehavioralSignal
from plugin.signals.content_properties import ContentDescription
from plugin.signals.content_url import REDACTION_REASONS, ContentUrls, with_clean_url
from plugin.signals.contextual import ContextualSignal
from plugin.signals.describe import ContentDescriber
from plugin.signals.merge import RememberedPlans, cohorts_for
from plugin.signals.pending import Pending, wait_all
from plugin.signals.sessions import SessionTracker
from plugin.signals.tracker import EventIds, EventViews
from plugin.tracking import Denied, Prepared, Tracking

if TYPE_CHECKING:
    from plugin.sandbox.server import Sandbox

__all__ = ["Denied", "EnrichResult", "Enricher", "Prepared", "Reading", "SignalResult"]

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
        clock: Clock | None = None,
        tracer_provider: TracerProvider | None = None,
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
        self.tracer = make_tracer(cfg.tracing, tracer_provider)
        self.backends = Backends(cfg, self.metrics, self.tracer, tracer_provider)
        self.background = Background(self.accounting.bug)
        self.sessions = _sessions(cfg, clock)
        self.behavioral = BehavioralSignal(
            cfg,
            self.metrics,
            self.sessions,
            clock,
            backends=self.backends,
            spawn=self.background.spawn,
        )
        self.contextual = ContextualSignal(
            cfg.cache,
            self.metrics,
            clock,
            backends=self.backends,
            track=self.background.track,
            late_after_s=cfg.budget_ms / 1000,
        )
        redactions = {r: self.metrics.content_url_redactions.labels(r) for r in REDACTION_REASONS}
        self.content_urls = ContentUrls(cfg.content.drop_query, lambda r: redactions[r].inc())
        plays = cfg.events.play_events or {a.play_event for a in self.adapters}
        views = EventViews(self.sessions, self.metrics, plays, self.content_urls)
        self.events = Tracking(views, self.behavioral.call, self.decide, self.start)
        self._decide = RememberedDecisions(cfg.consent)
        self._planned = RememberedPlans(cfg.keys)
        self._describe = ContentDescriber(
            cfg.events.property_types(), self.accounting.untyped_property
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Idempotent, and safe to race: concurrent first calls share one start."""
        if await self.backends.start():
            self.sessions.shared = self.backends.shared

    async def close(self) -> None:
        """Lets calls already made finish briefly (their answers fill the cache), then stops."""
        await self.background.close(self.config.budget_ms / 1000)
        self.sessions.shared = None
        await self.backends.close()

    def backend_states(self) -> dict[str, str]:
        """Circuit breaker state per API (`closed`, `open`, `half_open`), for readiness."""
        return self.backends.states()

    @property
    def sandbox(self) -> Sandbox | None:
        """The in-process sandbox when running with `sandbox = true`, else None."""
        return self.backends.sandbox

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
        if context is not None and context.identity is not None:
            context.identity.validate()  # the host's: checked here, trusted from here on
        read = self.read(request, context, platform)
        return await self.enrich_reading(read, budget_ms=budget_ms, origin=origin)

    def read(
        self, request: AdRequest | str, context: Context | None = None, platform: str | None = None
    ) -> Reading:
        """The request read once (`plugin.reading.read`), for `enrich_reading`."""
        return read_request(self.adapters, request, context, platform, self.accounting.bad_reserved)

    async def enrich_reading(
        self, reading: Reading, *, budget_ms: float | None = None, origin: str = "library"
    ) -> EnrichResult:
        """`enrich` of a request `read` read: it is not read again."""
        if self.tracer is None:
            return await self._enrich(reading, budget_ms, origin)
        with self.tracer.start_as_current_span("cohortkv.enrich") as span:
            result = await self._enrich(reading, budget_ms, origin)
            span.set_attributes(result_attributes(result))
            return result

    async def _enrich(self, reading: Reading, budget_ms: float | None, origin: str) -> EnrichResult:
        parsed, context, started = reading.parsed, reading.context, reading.started
        if isinstance(parsed, Unrecognised):
            why, name = parsed.reason, parsed.platform or "auto"
            return self.accounting.unrecognised(reading.request, started, origin, name, why)
        if not self.backends.running:
            await self.start()

        adapter = parsed.adapter
        ctx = with_clean_url(parsed.context.overlaid(context), self.content_urls)
        host = context.consent if context is not None else None
        decision = self.decide(parsed.context.consent, host)
        loop = asyncio.get_running_loop()
        deadline = (budget_ms if budget_ms is not None else self.config.budget_ms) / 1000
        # Stop waiting a little before the budget: merging and writing come after.
        until = loop.time() + deadline - min(_FINISH_RESERVE_S, deadline * 0.05)

        described = self.describe_content(ctx, adapter)
        c = self.contextual.begin(described)
        b = await self.behavioral.begin(
            ctx, decision, described, adapter.play_event, until - loop.time()
        )
        if b.ready is None or c.ready is None:
            waiting: list[asyncio.Task[Any]] = []
            b.waiting(waiting)
            c.waiting(waiting)
            if waiting:
                await wait_all(loop, waiting, until)
        result = self._finish(parsed, decision, b, c, started)
        if self.accounting.decisions is not None:  # the explain page's last decisions
            self.accounting.decisions.add(result, ctx.identity, origin)
        return result

    def _finish(
        self,
        parsed: Parsed,
        decision: ConsentDecision,
        b: Pending,
        c: Pending,
        started: float,
    ) -> EnrichResult:
        adapter = parsed.adapter
        behavioral, contextual = b.outcome(), c.outcome()
        platforms = adapter.activation_platforms
        if not platforms:
            self.accounting.no_activation_platforms(adapter.name)
        planned = self._planned(behavioral.answer, contextual.answer, platforms)
        puid = behavioral.answer.user_id if behavioral.answer is not None else None
        by_name = cohorts_for(self.config.keys, behavioral.answer, contextual.answer)
        clear = self._planned.clear(decision.allowed, bool(planned.c_codes))
        if clear and isinstance(adapter, UrlAdapter):  # a viewer's values under our keys
            parsed, removed = adapter.strip_keys(parsed, clear)
            for _ in range(removed):
                self.accounting.adapter_skipped(adapter.name, "viewer_keyvalue_removed")
        applied = adapter.apply(parsed, planned.keyvalues(), by_name)
        elapsed = self.accounting.enriched(adapter.name, started)
        return EnrichResult(
            url=applied.request.url,
            keyvalues=applied.written,
            behavioral=self.accounting.signal("behavioral", behavioral, planned.b_codes),
            contextual=self.accounting.signal("contextual", contextual, planned.c_codes),
            consent=decision,
            elapsed_ms=round(elapsed * 1000, 3),
            platform=adapter.name,
            user_id=puid,
            request=applied.request,
        )

    def decide(
        self, signals: ConsentSignals, host: ConsentSignals | None = None
    ) -> ConsentDecision:
        """The consent gate's decision over the request's and the host's signals, counted."""
        return self.accounting.decision(self._decide(signals, host))

    def describe_content(self, ctx: Context, adapter: Adapter) -> ContentDescription | None:
        """What the play event and the Contextual request say about the content; None when
        the request names none. The explain page uses it too."""
        return self._describe(ctx, adapter)

    # -- events ---------------------------------------------------------------------------

    async def prepare_events(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
        ids: EventIds | None = None,
    ) -> Prepared | Denied:
        """The one gate every host event passes (`track()`, `/v1/events`; `plugin.tracking`):
        a `Prepared` batch for `send_batch`, or a `Denied` with the consent decision's reason.
        A person's mistake raises `IdentityError` / `RequestError` naming the field."""
        return await self.events.prepare(events, identity=identity, consent=consent, ids=ids)

    async def track(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
        ids: EventIds | None = None,
    ) -> int:
        """Sends player events (`plugin.Event`s or plain mappings, checked as a `/v1/events`
        body's are) to the CCS API, through `prepare_events`: consented users only, in order,
        at most 10 per call; a host play event opens its view, or is left out when the view's
        went out already (`plugin.tracking`). Returns how many were delivered; nothing is ever
        sent twice; upstream failures mean fewer delivered."""
        got = await self.prepare_events(events, identity=identity, consent=consent, ids=ids)
        return 0 if isinstance(got, Denied) else await self.events.send(got)

    async def send_batch(self, prepared: Prepared) -> Answer:
        """One CCS call with 1 to 10 events of a `Prepared` batch (`prepare_events`), and
        nothing else: consent was decided when it was prepared."""
        return await self.events.send_batch(prepared)


def _sessions(cfg: Config, clock: Clock) -> SessionTracker:
    return SessionTracker(
        namespace=uuid.UUID(cfg.events.view_namespace),
        session_idle_s=cfg.sessions.idle_timeout_s,
        view_idle_s=cfg.views.idle_timeout_s,
        max_sessions=cfg.sessions.max_entries,
        max_views=cfg.views.max_entries,
        clock=clock,
    )
