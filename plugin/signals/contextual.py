"""The contextual signal: cohorts of the content, for every user, consented or not.

Answers are keyed by a digest of the content URL (never the URL itself), fresh for
`cache.contextual_ttl_s` and kept as fallback for `cache.contextual_stale_s` more. Concurrent
misses for one URL share one call (single-flight), and with a shared store the fleet shares
fresh answers, so a fleet makes about one Contextual call per content URL per TTL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from plugin.cache.local import AgedLru, Clock, SingleFlight, compact_key
from plugin.cache.shared import SharedStore
from plugin.config import CacheConfig
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from plugin.permutive.clients import ContextualClient, UpstreamError
from plugin.permutive.wire import ContextualRequest
from plugin.signals.content_properties import ContentDescription
from plugin.signals.pending import Failed, Pending, ready

_NO_CONTENT = ready("none", None, "no_content")


class ContextualSignal:
    def __init__(self, cfg: CacheConfig, metrics: Metrics, clock: Clock) -> None:
        self._cfg = cfg
        self.cache: AgedLru[Answer] = AgedLru(
            cfg.contextual_max_entries, cfg.contextual_ttl_s + cfg.contextual_stale_s, clock
        )
        self._flights: SingleFlight[bytes, Answer | Failed] = SingleFlight()
        # Read when scraped, not set on every answer.
        metrics.cache_entries.labels("contextual").set_function(lambda: len(self.cache))
        self._late = metrics.late_answers.labels("contextual")
        self.client: ContextualClient | None = None
        self.shared: SharedStore | None = None
        self.late_after_s = 0.0
        self.track: Any = None
        """Called with each call's task, so the enricher can let it finish on close."""

    def begin(self, content: ContentDescription | None) -> Pending:
        """`content` is what the request is about, built with the play event's properties
        (`plugin.signals.content_properties`); None: no content, so no call."""
        if content is None:
            return _NO_CONTENT
        key = compact_key(content.url)  # content URLs never stand in the clear in a cache key
        cache = self.cache
        fresh = cache.get(key, self._cfg.contextual_ttl_s)
        if fresh is not None:
            return ready("cache", fresh, "fresh_cache")
        running = self._flights.get(key)
        if running is not None:
            return Pending(call=running, reason="shared_call", fallback=lambda: cache.get(key))
        request = content.contextual_request()
        running = self._flights.run(key, lambda: self._fetch(key, request))
        if self.track is not None:
            self.track(running)
        return Pending(call=running, fallback=lambda: cache.get(key))

    async def _fetch(self, key: bytes, request: ContextualRequest) -> Answer | Failed:
        """The fleet's fresh answer if there is one, else the API; shared by all waiters."""
        cfg = self._cfg
        shared_key = key.hex()
        if self.shared is not None:
            shared = await self.shared.get("c", shared_key, cfg.contextual_ttl_s)
            if shared is not None:
                self.cache.put(key, shared)
                return shared
        assert self.client is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            answer = await self.client.segment(request)
        except UpstreamError as e:
            if self.shared is not None and self.cache.get(key) is None:
                stale = await self.shared.get(
                    "c", shared_key, cfg.contextual_ttl_s + cfg.contextual_stale_s
                )
                if stale is not None:
                    self.cache.put(key, stale, age=cfg.contextual_ttl_s)
            return Failed(e.kind)
        self.cache.put(key, answer)
        if self.shared is not None:
            self.shared.put("c", shared_key, answer, cfg.contextual_ttl_s + cfg.contextual_stale_s)
        if loop.time() - started > self.late_after_s:
            self._late.inc()
        return answer
