"""The behavioral signal: a consented user's cohorts from the CCS API, one play event per view.

The first ad request of a view sends the view's play event and waits for its answer (within the
deadline); the view's later ad breaks reuse that answer (`cache`, reason `view_reuse`), and the
other requests of the same break wait on the same call (`live`, `view_reuse`, when it answers
in time); none sends it again. A call that fails or misses the deadline falls back to the
user's last good answer (local cache, then the shared one); a late answer still refreshes the
cache. Without content there is no play event to send: the signal is then cache-only
(`no_content`).

With `[behavioral] wait = "if_uncached"`, a view's first break whose user has a cached answer
uses it at once; the play event still goes out and its answer serves the later breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from plugin.cache.local import AgedLru, Clock, Interner, compact_key
from plugin.cache.shared import SharedStore
from plugin.config import Config
from plugin.context import Context
from plugin.identity import Identity, IdentityError
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from plugin.permutive.clients import CcsClient, UpstreamError
from plugin.permutive.wire import CcsRequest, Event
from plugin.result import ConsentDecision
from plugin.signals.events import now_rfc3339
from plugin.signals.pending import Call, Failed, Pending, ready
from plugin.signals.sessions import Claim, SessionTracker

_DENIED = ready("skipped", None, "consent_denied")
_NO_IDENTITY = ready("none", None, "no_identity")
_INVALID_IDENTITY = ready("none", None, "invalid_identity")


class PlayEvent:
    """What the play event of a view carries, apart from its ids."""

    __slots__ = ("name", "properties", "time")

    def __init__(self, name: str, time: str, properties: dict[str, Any]) -> None:
        self.name = name
        self.time = time
        self.properties = properties


def play_event_of(
    name: str,
    content_url: str | None,
    properties: dict[str, Any],
    title: str | None,
    client_type: str | None,
) -> Callable[[], PlayEvent] | None:
    """How to make the view's play event, when there is content to make it about; None
    otherwise (the behavioral signal is then cache-only, reason `no_content`). Made only when a
    view starts: later breaks of the view send none."""
    if not content_url and not properties:
        return None

    def play() -> PlayEvent:
        props = dict(properties)
        if title and "title" not in props:
            props["title"] = title
        if client_type:
            client = props.get("client")
            props["client"] = (
                {**client, "type": client_type}
                if isinstance(client, dict)
                else {"type": client_type}
            )
        return PlayEvent(name, now_rfc3339(), props)

    return play


class BehavioralSignal:
    def __init__(
        self, config: Config, metrics: Metrics, sessions: SessionTracker, clock: Clock
    ) -> None:
        c = config.cache
        self.cache: AgedLru[Answer] = AgedLru(c.behavioral_max_entries, c.behavioral_ttl_s, clock)
        self._ttl_s = c.behavioral_ttl_s
        self._keep_user = config.keys.puid is not None
        self._cache_first = config.behavioral.wait == "if_uncached"
        self._intern = Interner()
        self.sessions = sessions
        # Read when scraped, not set on every request.
        metrics.cache_entries.labels("behavioral").set_function(lambda: len(self.cache))
        metrics.cache_entries.labels("views").set_function(lambda: self.sessions.view_count)
        self._late = metrics.late_answers.labels("ccs")
        self._bad_identity = metrics.bad_input.labels("identity", "invalid")
        self.client: CcsClient | None = None
        self.shared: SharedStore | None = None
        self.late_after_s = 0.0
        self.spawn: Callable[[Any], asyncio.Task[Any]] = asyncio.ensure_future

    async def begin(
        self,
        ctx: Context,
        decision: ConsentDecision,
        play: Callable[[], PlayEvent] | None,
        wait_s: float = 0.05,
    ) -> Pending:
        """`play` builds the play event (None: no content, so no play event is possible);
        `wait_s` is how long the request can wait for the fleet's claim of its view."""
        if not decision.allowed:
            return _DENIED
        identity = ctx.identity
        if identity is None:
            return _NO_IDENTITY
        try:
            identity.validate()
        except IdentityError:
            self._bad_identity.inc()
            return _INVALID_IDENTITY
        key = compact_key(identity.cache_key())
        cached = self.cache.get(key)
        if play is None:
            return self._cache_only(key, cached, "no_content")
        content_url = ctx.content.url or ""
        claim = await self.sessions.claim(
            key,
            session=ctx.session_id,
            ssai_session_id=ctx.ssai_session_id,
            view_id=ctx.view_id,
            content_url=content_url,
            wait_s=wait_s,
        )
        given = ctx.view_id is not None or ctx.ssai_session_id is not None
        if claim.later is not None:
            # The fleet has not answered in time: its answer decides the play event later.
            self.spawn(self._when_settled(claim.later, key, identity, play, content_url, given))
            if claim.view.answer is None and claim.view.flight is None:
                return self._cache_only(key, cached, "cache_fallback_timeout")
        view = claim.view
        if not claim.new:
            # A later ad break of a view whose play event went out: reuse, never resend.
            if view.answer is not None:
                return ready("cache", view.answer, "view_reuse")
            flight = view.flight
            if flight is not None and not flight.done():
                # The view's play-event call is still running (another platform's request of
                # the same ad break): its answer, if in time, is live and shared.
                return Pending(
                    call=flight, source="live", reason="view_reuse", fallback=self._local(key)
                )
            return self._cache_only(key, cached, "view_reuse")
        call = self._send_play(key, identity, play, claim, content_url, given)
        if cached is not None and self._cache_first:
            return ready("cache", cached, "cache_first")
        prefetch = self._prefetch(key) if cached is None else None
        return Pending(call=call, fallback=self._local(key), prefetch=prefetch)

    def _send_play(
        self,
        key: bytes,
        identity: Identity,
        play: Callable[[], PlayEvent],
        claim: Claim,
        content_url: str,
        given: bool,
    ) -> Call:
        """The view's play event, sent now; its call is the view's flight."""
        event = play()
        request = CcsRequest(
            events=[
                Event(
                    name=event.name,
                    time=event.time,
                    properties=event.properties,
                    view_id=claim.view.id,
                    session_id=claim.session_id,
                )
            ],
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        call: Call = self.spawn(self._fetch(key, request, claim, content_url, given))
        claim.view.flight = call
        return call

    async def _when_settled(
        self,
        later: asyncio.Task[Claim],
        key: bytes,
        identity: Identity,
        play: Callable[[], PlayEvent],
        content_url: str,
        given: bool,
    ) -> None:
        """A claim that came back after its request went on: the play event goes out now if
        the fleet (or, when it could not answer, this replica) says the view is new."""
        claim = await later
        if claim.new:
            self._send_play(key, identity, play, claim, content_url, given)

    def _cache_only(
        self,
        key: bytes,
        cached: Answer | None,
        reason: Literal["no_content", "view_reuse", "cache_fallback_timeout"],
    ) -> Pending:
        if cached is not None:
            return ready("cache", cached, reason)
        prefetch = self._prefetch(key)
        if prefetch is None:
            return ready("none", None, reason)
        return Pending(reason=reason, prefetch=prefetch, fallback=self._local(key))

    def _local(self, key: bytes) -> Callable[[], Answer | None]:
        cache = self.cache
        return lambda: cache.get(key)

    def _prefetch(self, key: bytes) -> asyncio.Task[Answer | None] | None:
        """With a shared cache and nothing local, fetch the fleet's last answer meanwhile."""
        if self.shared is None:
            return None
        task: asyncio.Task[Answer | None] = self.spawn(self._from_fleet(self.shared, key))
        return task

    async def _from_fleet(self, shared: SharedStore, key: bytes) -> Answer | None:
        """The fleet's last answer, kept here too: the next request (or a Redis outage) finds
        it locally."""
        answer = await shared.get("b", key.hex(), self._ttl_s)
        if answer is not None and self.cache.get(key) is None:
            self.cache.put(key, self._intern(answer, keep_user=self._keep_user))
        return answer

    async def _fetch(
        self, key: bytes, request: CcsRequest, claim: Claim, content_url: str, given: bool
    ) -> Answer | Failed:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        view = claim.view
        try:
            answer = await self.client.segment(request)
        except UpstreamError as e:
            # The play event may not have landed: let the view's next ad break send it again.
            view.flight = None
            self.sessions.release(claim, key, content_url, given)
            return Failed(e.kind)
        self.remember(key, answer)
        view.answer = answer
        view.flight = None
        if loop.time() - started > self.late_after_s:
            self._late.inc()
        return answer

    def remember(self, key: bytes, answer: Answer) -> None:
        """Caches the answer compactly: interned cohorts, the user id only if it is sent."""
        compact = self._intern(answer, keep_user=self._keep_user)
        self.cache.put(key, compact)
        if self.shared is not None:
            self.shared.put("b", key.hex(), compact, self._ttl_s)
