"""The enricher: one ad request URL in, the same URL with cohort key-values out, within budget.

Behavioral (CCS, consented users only) and contextual cohorts are asked for concurrently and
waited for under ONE deadline. A signal that fails or misses the deadline falls back to its
last good answer; a late answer keeps running in the background and still refreshes the cache.
Nothing here raises into the host for a machine's bad input: the worst case is the URL as given.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry

from adapters.base import Adapter
from adapters.registry import adapter_by_name, default_adapters, find_adapter
from plugin.cache import AgedLru, Answer, Interner, Key, SingleFlight, compact_key
from plugin.config import Config, require_api
from plugin.consent import decide, is_undecodable
from plugin.context import ConsentSignals, Context
from plugin.identity import Identity, IdentityError
from plugin.merge import build_keyvalues
from plugin.metrics import Metrics, RateLimitedLog
from plugin.result import ConsentDecision, EnrichResult, SignalResult, Source
from plugin.shared import SharedStore
from plugin.sources import CcsClient, ContextualClient, UpstreamError, make_session
from plugin.views import session_view
from plugin.wire import CcsRequest, ClientProperties, ContextualRequest, Event

__all__ = ["EnrichResult", "Enricher", "SignalResult"]

log = logging.getLogger("cohortkv.enricher")

MAX_EVENTS_PER_REQUEST = 10
_FINISH_RESERVE_S = 0.002
_NONE = SignalResult("none")
_SKIPPED = SignalResult("skipped")


Got = tuple[Source, Answer | None]


class _Pending:
    """One signal of one ad request: an answer now, or a call to wait for plus its fallback."""

    __slots__ = ("key", "now", "shared", "task")

    def __init__(
        self,
        now: Got,
        task: asyncio.Task[Answer | None] | None = None,
        key: Key | None = None,
        shared: asyncio.Task[Answer | None] | None = None,
    ) -> None:
        self.now = now
        self.task = task
        self.key = key
        self.shared = shared

    def outcome(self, cache: AgedLru[Answer]) -> Got:
        """The call's answer if it came in time, else the last good one, local or shared."""
        task = self.task
        if task is not None and task.done() and not task.cancelled():
            if task.exception() is None and (answer := task.result()) is not None:
                return self.now[0], answer
        elif task is None and self.now[1] is not None:
            return self.now
        if self.key is None:
            return self.now if task is None else ("none", None)
        fallback = cache.get(self.key)
        shared = self.shared
        if fallback is None and shared is not None and shared.done() and not shared.cancelled():
            fallback = shared.result() if shared.exception() is None else None
            if fallback is not None:
                cache.put(self.key, fallback)
        return ("cache", fallback) if fallback is not None else ("none", None)


class _Flight:
    """A view's behavioral call: later ad breaks of the same view wait on it, never resend.

    Once the call has answered only the answer is kept: a finished task (and its coroutine)
    for each of a hundred thousand remembered views is that many more objects for every full
    garbage collection to walk.
    """

    __slots__ = ("answer", "task")

    def __init__(self, task: asyncio.Task[Answer | None]) -> None:
        self.task: asyncio.Task[Answer | None] | None = task
        self.answer: Answer | None = None


class Enricher:
    """`async with Enricher(config) as e: result = await e.enrich(url, context)`.

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
        self.metrics = Metrics(registry)
        self.adapters: tuple[Adapter, ...] = (
            tuple(adapters) if adapters is not None else default_adapters(self.config.adapters)
        )
        self._clock = clock or time.monotonic
        c = self.config.cache
        self._behavioral: AgedLru[Answer] = AgedLru(
            c.behavioral_max_entries, c.behavioral_ttl_s, self._clock
        )
        self._contextual: AgedLru[Answer] = AgedLru(
            c.contextual_max_entries, c.contextual_ttl_s + c.contextual_stale_s, self._clock
        )
        self._views: AgedLru[_Flight] = AgedLru(c.views_max_entries, c.views_ttl_s, self._clock)
        self._intern = Interner()
        self._ctx_flights: SingleFlight[bytes, Answer | None] = SingleFlight()
        self._background: set[asyncio.Task[Any]] = set()
        self._namespace = uuid.UUID(self.config.events.view_namespace)
        self._warn = RateLimitedLog(log)
        self._session: aiohttp.ClientSession | None = None
        self._starting = asyncio.Lock()
        self._sandbox: Any = None
        self._ccs: CcsClient | None = None
        self._ctx: ContextualClient | None = None
        self._shared: SharedStore | None = None
        self._gauges = {
            name: self.metrics.cache_entries.labels(name)
            for name in ("behavioral", "contextual", "views")
        }
        # Labelled children looked up once: `labels()` costs more than the increment itself.
        self._decisions: dict[tuple[bool, str], Any] = {}
        self._sources: dict[tuple[str, Source], Any] = {}
        self._timers: dict[str, Any] = {}

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
        h = cfg.http
        self._session = make_session(h.pool_limit, h.pool_limit_per_host, h.keepalive_timeout_s)
        self._ccs = CcsClient(self._session, ccs_url, api_key, self.metrics, h)
        self._ctx = ContextualClient(self._session, ctx_url, api_key, self.metrics, h)

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
            self._shared = None
        if self._sandbox is not None:
            await self._sandbox.close()
            self._sandbox = None

    def upstream_states(self) -> dict[str, str]:
        """Circuit breaker state per API (`closed`, `open`, `half_open`), for readiness."""
        clients = {"ccs": self._ccs, "contextual": self._ctx}
        return {
            api: c.breaker.state.name.lower() if c is not None else "closed"
            for api, c in clients.items()
        }

    @property
    def sandbox(self) -> Any:
        """The in-process sandbox when running without an API key, else None."""
        return self._sandbox

    # -- the hot path ---------------------------------------------------------------------

    async def enrich(
        self,
        url: str,
        context: Context | None = None,
        *,
        platform: str | None = None,
        budget_ms: float | None = None,
    ) -> EnrichResult:
        """The URL with key-values for its platform; never raises for a machine's bad input.

        `platform` names an adapter (`gam`, `freewheel`, `adswizz`) or is None/`auto` to pick
        the one whose URL format matches. A person's mistake (an unknown platform name, an
        invalid explicit identity) raises ValueError.
        """
        started = time.perf_counter()
        adapter = self._adapter_for(url, platform)
        if context is not None and context.identity is not None:
            context.identity.validate()
        if adapter is None:
            self.metrics.bad_input.labels("url", "no_adapter").inc()
            return self._unchanged(url, started)
        if self._session is None:
            await self.start()

        parsed = adapter.parse(url)
        ctx = parsed.overlaid(context)
        decision = self.decide(parsed.consent, context.consent if context is not None else None)
        deadline = (budget_ms if budget_ms is not None else self.config.budget_ms) / 1000
        behavioral, contextual = await self._signals(ctx, decision, deadline)

        puid = behavioral[1].user_id if behavioral[1] is not None else None
        platforms = adapter.activation_platforms
        b_codes = behavioral[1].activated(platforms) if behavioral[1] else []
        c_codes = contextual[1].activated(platforms) if contextual[1] else []
        keyvalues = build_keyvalues(self.config.keys, b_codes, c_codes, puid)
        out_url = adapter.apply(url, keyvalues) if keyvalues else url
        b = self._signal("behavioral", behavioral, b_codes)
        c = self._signal("contextual", contextual, c_codes)
        elapsed = time.perf_counter() - started
        timer = self._timers.get(adapter.name)
        if timer is None:
            timer = self._timers[adapter.name] = self.metrics.enrich_seconds.labels(adapter.name)
        timer.observe(elapsed)
        return EnrichResult(
            url=out_url,
            keyvalues=keyvalues,
            behavioral=b,
            contextual=c,
            consent=decision,
            elapsed_ms=round(elapsed * 1000, 3),
            platform=adapter.name,
            user_id=puid,
        )

    def _adapter_for(self, url: str, platform: str | None) -> Adapter | None:
        if platform is None or platform == "auto":
            return find_adapter(self.adapters, url)
        return adapter_by_name(self.adapters, platform)

    def decide(
        self, signals: ConsentSignals, host: ConsentSignals | None = None
    ) -> ConsentDecision:
        """The consent gate's decision over the request's and the host's signals, counted."""
        d = decide(signals, self.config.consent, host)
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

    def _signal(self, name: str, got: Got, cohorts: list[str]) -> SignalResult:
        source, answer = got
        counter = self._sources.get((name, source))
        if counter is None:
            counter = self._sources[(name, source)] = self.metrics.signal_source.labels(
                name, source
            )
        counter.inc()
        if source == "skipped":
            return _SKIPPED
        if answer is None:
            return _NONE
        return SignalResult(source, list(cohorts))

    async def _signals(
        self, ctx: Context, decision: ConsentDecision, deadline_s: float
    ) -> tuple[Got, Got]:
        loop = asyncio.get_running_loop()
        # Stop waiting a little before the budget: merging and writing the URL come after.
        until = loop.time() + deadline_s - min(_FINISH_RESERVE_S, deadline_s * 0.05)
        b = self._behavioral_call(ctx, decision)
        c = self._contextual_call(ctx)
        waiting = [t for t in (b.task, b.shared, c.task) if t is not None and not t.done()]
        if waiting:
            await _wait_all(loop, waiting, until)
        return b.outcome(self._behavioral), c.outcome(self._contextual)

    # -- behavioral -------------------------------------------------------------------------

    def _behavioral_call(self, ctx: Context, decision: ConsentDecision) -> _Pending:
        if not decision.allowed:
            return _Pending(("skipped", None))
        identity = ctx.identity
        if identity is None:
            return _Pending(("none", None))
        try:
            identity.validate()
        except IdentityError:
            self.metrics.bad_input.labels("identity", "invalid").inc()
            return _Pending(("none", None))
        identity_key = identity.cache_key()
        key = compact_key(identity_key)
        session_id, view_id = self.session_view(ctx, identity_key)
        view_key = f"{identity_key}|{view_id}" if view_id else None
        if view_key is not None:
            flight = self._views.get(view_key)
            if flight is not None:
                # A later ad break of a view whose play event went out: reuse, never resend.
                if flight.answer is not None:
                    return _Pending(("cache", flight.answer))
                if flight.task is not None and not flight.task.done():
                    return _Pending(("cache", None), flight.task, key)
        event = self._play_event(ctx, session_id, view_id)
        shared = self._prefetch_shared(key)
        if event is None:
            return _Pending(("cache", None), None, key, shared)
        request = CcsRequest(
            events=[event], user_id=identity.user_id, alias=identity.alias, aliases=identity.aliases
        )
        flight_holder: list[_Flight] = []
        task = self._spawn(self._fetch_behavioral(key, request, view_key, flight_holder))
        if view_key is not None:
            flight = _Flight(task)
            flight_holder.append(flight)
            self._views.put(view_key, flight)
            self._gauges["views"].set(len(self._views))
        return _Pending(("live", None), task, key, shared)

    def _prefetch_shared(self, key: bytes) -> asyncio.Task[Answer | None] | None:
        """With a shared cache and nothing local, fetch the fleet's last answer meanwhile."""
        if self._shared is None or self._behavioral.get(key) is not None:
            return None
        return self._spawn(self._shared.get("b", key.hex(), self.config.cache.behavioral_ttl_s))

    async def _fetch_behavioral(
        self, key: bytes, request: CcsRequest, view_key: str | None, holder: list[_Flight]
    ) -> Answer | None:
        assert self._ccs is not None
        started = asyncio.get_running_loop().time()
        try:
            answer = await self._ccs.segment(request)
        except UpstreamError:
            if view_key is not None:
                # The play event may not have landed: let the next ad break of the view retry.
                self._views.discard(view_key)
            return None
        self._remember_behavioral(key, answer)
        if holder:
            holder[0].answer = answer
            holder[0].task = None
        self._count_late("ccs", started)
        return answer

    def _remember_behavioral(self, key: bytes, answer: Answer) -> None:
        """Caches the answer compactly: interned cohorts, the user id only if it is sent."""
        compact = self._intern(answer, keep_user=self.config.keys.puid is not None)
        self._behavioral.put(key, compact)
        self._gauges["behavioral"].set(len(self._behavioral))
        if self._shared is not None:
            self._shared.put("b", key.hex(), compact, self.config.cache.behavioral_ttl_s)

    def session_view(self, ctx: Context, identity_key: str) -> tuple[str | None, str | None]:
        """The session and view ids this context's events carry (see `plugin.views`)."""
        return session_view(
            self._namespace,
            identity_key,
            ctx.session_id,
            ctx.view_id,
            ctx.ssai_session_id,
            ctx.content.url,
        )

    def _play_event(
        self, ctx: Context, session_id: str | None, view_id: str | None
    ) -> Event | None:
        content = ctx.content
        if content.url is None and not content.properties:
            return None
        props = dict(content.properties)
        if content.title and "title" not in props:
            props["title"] = content.title
        return Event(
            name=self.config.events.play_event,
            time=_iso_now(),
            properties=props,
            view_id=view_id,
            session_id=session_id,
        )

    # -- contextual -------------------------------------------------------------------------

    def _contextual_call(self, ctx: Context) -> _Pending:
        url = ctx.content.url
        if not url:
            return _Pending(("none", None))
        key = compact_key(url)  # content URLs never stand in the clear in a cache key
        fresh = self._contextual.get(key, self.config.cache.contextual_ttl_s)
        if fresh is not None:
            return _Pending(("cache", fresh))
        running = self._ctx_flights.get(key)
        if running is None:
            request = self._contextual_request(ctx, url)
            running = self._ctx_flights.run(key, lambda: self._fetch_contextual(key, request))
            self._track(running)
        return _Pending(("live", None), running, key)

    def _contextual_request(self, ctx: Context, url: str) -> ContextualRequest:
        """Content only: the guide says "minus any user-related data", so no user agent,
        referrer, IP or identifier ever goes to the Contextual API."""
        content = ctx.content
        client = ClientProperties(
            url=url,
            domain=urlsplit(url).hostname or None if "://" in url else None,
            title=content.title,
        )
        props: dict[str, Any] = {"client": client}
        if content.properties:
            section = dict(content.properties)
            if content.title and "title" not in section:
                section["title"] = content.title
            props[self.config.events.content_section] = section
        return ContextualRequest(url=url, page_properties=props)

    async def _fetch_contextual(self, key: bytes, request: ContextualRequest) -> Answer | None:
        """The fleet's fresh answer if there is one, else the API; shared by all waiters."""
        cfg = self.config.cache
        shared_key = key.hex()
        if self._shared is not None:
            shared = await self._shared.get("c", shared_key, cfg.contextual_ttl_s)
            if shared is not None:
                self._contextual.put(key, shared)
                return shared
        assert self._ctx is not None
        started = asyncio.get_running_loop().time()
        try:
            answer = await self._ctx.segment(request)
        except UpstreamError:
            if self._shared is not None and self._contextual.get(key) is None:
                stale = await self._shared.get(
                    "c", shared_key, cfg.contextual_ttl_s + cfg.contextual_stale_s
                )
                if stale is not None:
                    self._contextual.put(key, stale, age=cfg.contextual_ttl_s)
            return None
        self._contextual.put(key, answer)
        self._gauges["contextual"].set(len(self._contextual))
        if self._shared is not None:
            self._shared.put("c", shared_key, answer, cfg.contextual_ttl_s + cfg.contextual_stale_s)
        self._count_late("contextual", started)
        return answer

    # -- events ---------------------------------------------------------------------------

    async def track(
        self,
        events: Iterable[Event],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
    ) -> int:
        """Sends player events (completion with engagement metrics, ...) to the CCS API.

        Consented users only; chronological order; at most 10 events per request. Returns how
        many events were delivered. Raises `IdentityError` for an invalid identity (a person's
        mistake); upstream failures are counted and reported as fewer events delivered.
        """
        identity.validate()
        if isinstance(consent, bool):
            allowed = consent
        elif isinstance(consent, ConsentDecision):
            allowed = consent.allowed
        else:
            allowed = self.decide(consent).allowed
        if not allowed:
            return 0
        ordered = sorted(events, key=lambda e: _parse_time(e.time))
        sent = 0
        for i in range(0, len(ordered), MAX_EVENTS_PER_REQUEST):
            batch = ordered[i : i + MAX_EVENTS_PER_REQUEST]
            try:
                await self.send_batch(identity, batch)
            except UpstreamError:
                break
            sent += len(batch)
        return sent

    async def send_batch(self, identity: Identity, events: Sequence[Event]) -> Answer:
        """One CCS call with up to 10 events, no consent check: callers have made it.

        Raises `UpstreamError` (with a `kind`) so that a queue can tell what to retry. The
        answer refreshes the behavioral cache like any other.
        """
        if not 1 <= len(events) <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"events: expected 1 to {MAX_EVENTS_PER_REQUEST}, got {len(events)}")
        if self._session is None:
            await self.start()
        assert self._ccs is not None
        request = CcsRequest(
            events=list(events),
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        answer = await self._ccs.segment(request)
        self._remember_behavioral(compact_key(identity.cache_key()), answer)
        return answer

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Answer | None]) -> asyncio.Task[Answer | None]:
        task: asyncio.Task[Answer | None] = asyncio.ensure_future(coro)
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        if task not in self._background:
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _count_late(self, api: Literal["ccs", "contextual"], started: float) -> None:
        if asyncio.get_running_loop().time() - started > self.config.budget_ms / 1000:
            self.metrics.late_answers.labels(api).inc()

    def _unchanged(self, url: str, started: float) -> EnrichResult:
        return EnrichResult(
            url=url,
            keyvalues={},
            behavioral=_NONE,
            contextual=_NONE,
            consent=ConsentDecision(False, "no_adapter"),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )


async def _wait_all(
    loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[Any]], until: float
) -> None:
    """Until every task is done or the loop's clock reaches `until`; never cancels them.

    `asyncio.wait` does the same with more bookkeeping per call, on the hot path.
    """
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(tasks)

    def one_done(_: asyncio.Task[Any]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(None)

    def timed_out() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for t in tasks:
        t.add_done_callback(one_done)
    timer = loop.call_at(until, timed_out)
    try:
        await waiter
    finally:
        timer.cancel()
        for t in tasks:
            t.remove_done_callback(one_done)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"events: time: expected an ISO 8601 timestamp, got {value!r}") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
