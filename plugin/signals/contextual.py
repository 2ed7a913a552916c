"""The contextual signal: cohorts of the content, for every user, consented or not.

Answers are keyed by a digest of the content URL and of everything else the Contextual request
carries (never the URL itself), fresh for `cache.contextual_ttl_s` and kept as fallback for
`cache.contextual_stale_s` more. The request's properties can come from the viewer (a title in
`cust_params`, `cohortkv_p.*`): keyed by the URL alone, one viewer's made-up title would decide
the cohorts every other viewer of the page gets. Concurrent misses for one key share one call
(single-flight), and with a shared store the fleet shares fresh answers, so a fleet makes about
one Contextual call per content (URL and properties) per TTL.
"""

from __future__ import annotations

import asyncio
from hashlib import blake2b

from plugin.backends import Backends
from plugin.background import Track
from plugin.cache.local import AgedLru, Clock, SingleFlight
from plugin.config import CacheConfig
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from plugin.permutive.clients import UpstreamError
from plugin.permutive.wire import ContextualRequest, json_encoder
from plugin.signals.content_properties import ContentDescription
from plugin.signals.pending import Failed, Pending, ready

_NO_CONTENT = ready("none", None, "no_content")
_MAX_REQUESTS = 4096


class _About:
    """A description's Contextual request, its cache key, and the outcome its last fresh
    cached answer made (outcomes are never changed: one serves every request it fits)."""

    __slots__ = ("_fresh", "content", "key", "request")

    def __init__(self, content: ContentDescription) -> None:
        self.content = content
        self.request = content.contextual_request()
        self.key = contextual_key(self.request)
        self._fresh: Pending | None = None

    def fresh(self, answer: Answer) -> Pending:
        """`ready("cache", answer, "fresh_cache")`, made once per answer."""
        known = self._fresh
        if known is None or known.ready is None or known.ready.answer is not answer:
            known = self._fresh = ready("cache", answer, "fresh_cache")
        return known


class ContextualSignal:
    def __init__(
        self,
        cfg: CacheConfig,
        metrics: Metrics,
        clock: Clock,
        *,
        backends: Backends,
        track: Track,
        late_after_s: float,
    ) -> None:
        """`backends` holds the Contextual client and the shared store (once started); `track`
        hears of each call's task, so the enricher can let it finish on close; an answer
        slower than `late_after_s` is counted late."""
        self._cfg = cfg
        self.cache: AgedLru[Answer] = AgedLru(
            cfg.contextual_max_entries, cfg.contextual_ttl_s + cfg.contextual_stale_s, clock
        )
        self._flights: SingleFlight[bytes, Answer | Failed] = SingleFlight()
        # By description (held, so its id is not reused while kept): see `_about`.
        self._requests: dict[int, _About] = {}
        # Read when scraped, not set on every answer.
        metrics.cache_entries.labels("contextual").set_function(lambda: len(self.cache))
        self._late = metrics.late_answers.labels("contextual")
        self._backends = backends
        self._track = track
        self.late_after_s = late_after_s

    def begin(self, content: ContentDescription | None) -> Pending:
        """`content` is what the request is about, built with the play event's properties
        (`plugin.signals.content_properties`); None: no content, so no call."""
        if content is None:
            return _NO_CONTENT
        about = self._about(content)
        key = about.key
        cache = self.cache
        fresh = cache.get(key, self._cfg.contextual_ttl_s)
        if fresh is not None:
            return about.fresh(fresh)
        running = self._flights.get(key)
        if running is not None:
            return Pending(call=running, reason="shared_call", fallback=lambda: cache.get(key))
        request = about.request
        running = self._flights.run(key, lambda: self._fetch(key, request))
        self._track(running)
        return Pending(call=running, fallback=lambda: cache.get(key))

    def _about(self, content: ContentDescription) -> _About:
        """The Contextual request about `content` and its cache key, worked out once per
        description: a kept description (`plugin.signals.describe`) serves many requests,
        and neither it nor the request made from it is ever changed."""
        known = self._requests.get(id(content))
        if known is not None and known.content is content:
            return known
        about = _About(content)
        if len(self._requests) >= _MAX_REQUESTS:
            self._requests.clear()  # full: start over (keeping is an optimisation only)
        self._requests[id(content)] = about
        return about

    async def _fetch(self, key: bytes, request: ContextualRequest) -> Answer | Failed:
        """The fleet's fresh answer if there is one, else the API; shared by all waiters."""
        cfg = self._cfg
        shared_key = key.hex()
        store = self._backends.shared
        if store is not None:
            shared = await store.get("c", shared_key, cfg.contextual_ttl_s)
            if shared is not None:
                self.cache.put(key, shared)
                return shared
        client = self._backends.contextual
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            answer = await client.segment(request)
        except UpstreamError as e:
            if store is not None and self.cache.get(key) is None:
                stale = await store.get(
                    "c", shared_key, cfg.contextual_ttl_s + cfg.contextual_stale_s
                )
                if stale is not None:
                    self.cache.put(key, stale, age=cfg.contextual_ttl_s)
            return Failed(e.kind)
        self.cache.put(key, answer)
        if store is not None:
            store.put("c", shared_key, answer, cfg.contextual_ttl_s + cfg.contextual_stale_s)
        if loop.time() - started > self.late_after_s:
            self._late.inc()
        return answer


def contextual_key(request: ContextualRequest) -> bytes:
    """A 16-byte digest of exactly what the Contextual request sends: the same content with
    the same properties shares one answer, and nothing sent with other properties can stand
    in for it. Content URLs never stand in the clear in a cache key."""
    try:
        sent = json_encoder.encode(request)
    except (TypeError, ValueError, OverflowError):
        # Not sendable either (the call fails the same way); key it apart from the rest.
        sent = repr(request.url).encode("utf-8", "replace") + b"\x00?"
    return blake2b(sent, digest_size=16).digest()
