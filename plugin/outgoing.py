"""An ad request the host sends itself, through an HTTP client hook (the aiohttp middleware,
the httpx transport): which one to enrich, with which context, and failing open.

Per-request context travels in a `contextvars` variable, so it follows the task that makes the
request (and the tasks it spawns) without touching the call sites in between.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from adapters.registry import adapter_by_name, find_adapter
from plugin import reserved
from plugin.context import Context
from plugin.enricher import Enricher
from plugin.observe.metrics import RateLimitedLog
from plugin.request import AdRequest

log = logging.getLogger("cohortkv.middleware")

_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "cohortkv_ad_context", default=None
)


@contextmanager
def ad_context(context: Context | None) -> Iterator[None]:
    """Identity, consent and content for the ad requests made inside the block."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def current_ad_context() -> Context | None:
    return _current.get()


class Outgoing:
    """Enriches the ad requests a client hook sees; `origin` names the hook in metrics."""

    def __init__(self, enricher: Enricher, origin: str, platform: str | None = None) -> None:
        self.enricher = enricher
        self.origin = origin
        self.platform = None if platform in (None, "auto") else platform
        if self.platform is not None:
            adapter_by_name(enricher.adapters, self.platform)  # an unknown name fails here
        self._warn = RateLimitedLog(log)

    async def enriched(self, request: AdRequest) -> AdRequest:
        """`request` as it goes out: with key-values, or as it came minus its reserved
        `cohortkv_*` parameters (those never leave, whatever else happens). Never raises: the
        host's request matters more than our key-values; a failure is counted and logged."""
        bare = request.with_url(without_reserved(request.url))
        platform = self.platform
        if platform is None:
            adapter = find_adapter(self.enricher.adapters, bare)
            if adapter is None:
                return bare
            platform = adapter.name
        try:
            result = await self.enricher.enrich(
                request, _current.get(), platform=platform, origin=self.origin
            )
        except Exception as e:
            self.enricher.metrics.bad_input.labels(self.origin, type(e).__name__).inc()
            self._warn.warning(self.origin, "enrichment skipped: %s", type(e).__name__)
            return bare
        return result.request if result.request is not None else bare


def without_reserved(url: str) -> str:
    """`url` minus its reserved parameters: what a client hook sends when it does not enrich
    (another method, a streamed body, a request no platform recognises, a failure)."""
    return reserved.split_url(url)[0]
