"""The behavioral signal: a consented user's cohorts from the CCS API, one play event per view.

The first ad request of a view sends the view's play event and waits for its answer (within the
deadline); the view's later ad breaks reuse that answer (`cache`, reason `view_reuse`), and the
other requests of the same break wait on the same call (`live`, `view_reuse`, when it answers
in time); none sends it again. A call that fails or misses the deadline falls back to the
user's last good answer (local cache, then the shared one); a late answer still refreshes the
cache. Without content there is no play event to send: the signal is then cache-only
(`no_content`).

Any later CCS answer for the user (a completion event's, a late one) is fresher than the view's
play-event answer, and serves the view's later breaks instead (`AnswerOrder`). A play event
that failed is sent again only when that cannot count it twice (`_play_failed`).

With a shared store, a view's claim that the fleet has not answered within the request's
budget does not hold the request up (`cache_fallback_timeout`, nothing sent): the claim's
answer, when it comes, sends the play event if the view is new, or if its failed play event is
due to be sent again (`_when_settled`).

With `[behavioral] wait = "if_uncached"`, a view's first break whose user has a cached answer
uses it at once; the play event still goes out and its answer serves the later breaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from plugin.backends import Backends
from plugin.background import Spawn
from plugin.cache.local import AgedLru, Clock, Interner, compact_key
from plugin.cache.shared import SharedStore
from plugin.config import Config
from plugin.context import Context
from plugin.identity import Identity
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from plugin.permutive.clients import UpstreamError
from plugin.permutive.delivery import delivery
from plugin.permutive.wire import CcsRequest, Event
from plugin.result import ConsentDecision, Reason
from plugin.signals.content_properties import ContentDescription
from plugin.signals.events import now_rfc3339
from plugin.signals.pending import Call, Failed, Pending, ready
from plugin.signals.sessions import Claim, SessionTracker, View

_DENIED = ready("skipped", None, "consent_denied")
_NO_IDENTITY = ready("none", None, "no_identity")
MAX_PLAY_RETRIES = 1
"""Times a view's play event is sent again after a failure that may have landed (timeout,
5xx): each retry risks counting it twice."""


class _Play(NamedTuple):
    """A view's play event to send: for whom, about what, and whether the host gave the view
    (its key in the fleet)."""

    key: bytes
    identity: Identity
    content: ContentDescription
    name: str
    given: bool


class AnswerOrder:
    """Which CCS answer of an identity is the freshest: the one whose call went out last.

    Every call for an identity (a play event, the host's events) refreshes the user's cached
    answer, and a later ad break of a view uses that freshest answer. Calls can overlap, so an
    answer replaces the cached one only when no call sent after it has answered already: a
    slow play-event answer never undoes a completion event's newer one. Bounded by the calls in
    flight."""

    __slots__ = ("_calls", "_seq")

    def __init__(self) -> None:
        self._calls: dict[bytes, list[int]] = {}  # identity -> [calls in flight, newest answered]
        self._seq = 0

    def sent(self, key: bytes) -> int:
        """A call for `key` goes out; its ticket."""
        self._seq += 1
        entry = self._calls.get(key)
        if entry is None:
            self._calls[key] = [1, 0]
        else:
            entry[0] += 1
        return self._seq

    def done(self, key: bytes, ticket: int, answered: bool) -> bool:
        """The call `ticket` ended; True when it answered and its answer is the freshest."""
        entry = self._calls[key]
        entry[0] -= 1
        fresh = answered and ticket > entry[1]
        if fresh:
            entry[1] = ticket
        if entry[0] == 0:
            del self._calls[key]
        return fresh


class BehavioralSignal:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        sessions: SessionTracker,
        clock: Clock,
        *,
        backends: Backends,
        spawn: Spawn,
    ) -> None:
        """`backends` holds the CCS client and the shared store (once started); `spawn` starts
        the calls that may outlive their ad request."""
        c = config.cache
        self.cache: AgedLru[Answer] = AgedLru(c.behavioral_max_entries, c.behavioral_ttl_s, clock)
        self._ttl_s = c.behavioral_ttl_s
        self._keep_user = config.keys.puid is not None
        self._cache_first = config.behavioral.wait == "if_uncached"
        self._client_section = config.events.client
        self._intern = Interner()
        self._order = AnswerOrder()
        self.sessions = sessions
        # Read when scraped, not set on every request.
        metrics.cache_entries.labels("behavioral").set_function(lambda: len(self.cache))
        metrics.cache_entries.labels("views").set_function(lambda: self.sessions.view_count)
        self._late = metrics.late_answers.labels("ccs")
        self._backends = backends
        self.spawn = spawn
        self.late_after_s = config.budget_ms / 1000

    async def begin(
        self,
        ctx: Context,
        decision: ConsentDecision,
        content: ContentDescription | None,
        play_event: str,
        wait_s: float = 0.05,
    ) -> Pending:
        """`content` is what the play event is about (None: no content, so no play event is
        possible); `play_event` its name; `wait_s` how long the request can wait for the
        fleet's claim of its view."""
        if not decision.allowed:
            return _DENIED
        identity = ctx.identity  # valid: checked where the Context was built
        if identity is None:
            return _NO_IDENTITY
        key = compact_key(identity.cache_key())
        cached = self.cache.get(key)
        if content is None:
            return self._cache_only(key, cached, "no_content")
        claim = await self.sessions.claim(
            key,
            session=ctx.session_id,
            ssai_session_id=ctx.ssai_session_id,
            view_id=ctx.view_id,
            content_url=content.url,
            wait_s=wait_s,
        )
        view = claim.view
        if claim.later is None and not claim.new and not view.resend:
            return self._later_break(key, view, cached)  # the most common request
        given = ctx.view_id is not None or ctx.ssai_session_id is not None
        play = _Play(key, identity, content, play_event, given)
        if claim.later is not None:
            # The fleet has not answered in time: its answer decides the play event later.
            self.spawn(self._when_settled(claim.later, play))
            if view.answer is None and view.flight is None and view.settled is None:
                return self._cache_only(key, cached, "cache_fallback_timeout")
            return self._later_break(key, view, cached)
        call = self._send_play(play, claim)
        if cached is not None and self._cache_first:
            return ready("cache", cached, "cache_first")
        prefetch = self._prefetch(key) if cached is None else None
        return Pending(call=call, fallback=self._local(key), prefetch=prefetch)

    def _send_play(self, play: _Play, claim: Claim) -> Call:
        """The view's play event, sent now; its call is the view's flight."""
        view = claim.view
        view.resend = False
        identity = play.identity
        request = CcsRequest(
            events=[
                Event(
                    name=play.name,
                    time=now_rfc3339(),
                    properties=play.content.event_properties(client=self._client_section),
                    view_id=view.id,
                    session_id=claim.session_id,
                )
            ],
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        call: Call = self.spawn(self._fetch(play.key, request, claim, play.content.url, play.given))
        view.flight = call
        return call

    async def _when_settled(self, later: asyncio.Task[Claim], play: _Play) -> None:
        """A claim that came back after its request went on: the play event goes out now if
        the fleet (or, when it could not answer, this replica) says the view is new, or the
        view's failed play event is due to be sent again."""
        claim = await later
        if claim.new or (claim.view.resend and claim.view.flight is None):
            self._send_play(play, claim)

    def _later_break(self, key: bytes, view: View, cached: Answer | None) -> Pending:
        """A later ad break of a view whose play event went out: never sent again. The user's
        freshest answer (a completion event's, a late one) serves it, else the view's own."""
        if view.answer is not None:
            return ready("cache", cached or view.answer, "view_reuse")
        flight = view.flight
        if flight is not None and not flight.done():
            # The view's play-event call is still running (another platform's request of
            # the same ad break): its answer, if in time, is live and shared.
            return Pending(
                call=flight, source="live", reason="view_reuse", fallback=self._local(key)
            )
        return self._cache_only(key, cached, view.settled or "view_reuse")

    def _cache_only(self, key: bytes, cached: Answer | None, reason: Reason) -> Pending:
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
        shared = self._backends.shared
        if shared is None:
            return None
        return self.spawn(self._from_fleet(shared, key))

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
        loop = asyncio.get_running_loop()
        started = loop.time()
        view = claim.view
        try:
            answer = await self.call(key, request)
        except UpstreamError as e:
            view.flight = None
            self._play_failed(e, claim, key, content_url, given)
            return Failed(e.kind)
        # Kept as the cache keeps it (interned cohorts): the decoded answer is several times
        # larger, and a live view per viewer holds it for the view's whole life.
        view.answer = self._intern(answer, keep_user=self._keep_user)
        view.flight = None
        if loop.time() - started > self.late_after_s:
            self._late.inc()
        return answer

    def _play_failed(
        self, e: UpstreamError, claim: Claim, key: bytes, content_url: str, given: bool
    ) -> None:
        """What the view's later ad breaks do after its play event failed: send it again only
        when that cannot count it twice (`plugin.permutive.delivery`). Not processed: the
        view is released, any replica's next break sends it. Refused (4xx): never again.
        Uncertain (timeout, 5xx): the next break on this replica tries once more."""
        view = claim.view
        got = delivery(e)
        if got == "unsent":
            self.sessions.release(claim, key, content_url, given)
        elif got == "refused":
            view.settled = "play_rejected"
        elif got == "uncertain":
            view.failures += 1
            if view.failures <= MAX_PLAY_RETRIES:
                view.resend = True
            else:
                view.settled = "play_failed"

    async def call(self, key: bytes, request: CcsRequest) -> Answer:
        """One CCS call for the identity `key`; its answer refreshes the user's cached one
        when it is the freshest (`AnswerOrder`). Raises `UpstreamError`."""
        client = self._backends.ccs
        ticket = self._order.sent(key)
        answered = False
        try:
            answer = await client.segment(request)
            answered = True
        finally:
            fresh = self._order.done(key, ticket, answered)
        if fresh:
            self.remember(key, answer)
        return answer

    def remember(self, key: bytes, answer: Answer) -> None:
        """Caches the answer compactly: interned cohorts, the user id only if it is sent."""
        compact = self._intern(answer, keep_user=self._keep_user)
        self.cache.put(key, compact)
        shared = self._backends.shared
        if shared is not None:
            shared.put("b", key.hex(), compact, self._ttl_s)
