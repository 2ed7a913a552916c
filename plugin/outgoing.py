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

from adapters.base import Unrecognised
from adapters.registry import adapter_by_name
from plugin import reserved
from plugin.context import Context
from plugin.enricher import Enricher
from plugin.errors import CohortkvError
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
        host's request matters more than our key-values. The host's mistake (an invalid
        identity in `ad_context`) is counted as bad input, a failure of ours as an internal
        error (`cohortkv_internal_errors_total{where=origin}`); both are logged at a bounded
        rate."""
        try:
            context = _current.get()
            if context is not None and context.identity is not None:
                context.identity.validate()  # the host's: checked here, trusted from here on
            reading = self.enricher.read(request, context, self.platform)
            if self.platform is None and isinstance(reading.parsed, Unrecognised):
                return reading.request  # not an ad request: out as it came, minus reserved
            result = await self.enricher.enrich_reading(reading, origin=self.origin)
        except CohortkvError as e:
            self.enricher.metrics.bad_input.labels(self.origin, type(e).__name__).inc()
            self._warn.warning(self.origin, "enrichment skipped: %s", type(e).__name__)
            return _bare(request)
        except Exception as e:
            self.bug(e)
            return _bare(request)
        return result.request if result.request is not None else reading.request

    def bug(self, e: Exception) -> None:
        """A failure of our own code around the host's request: it goes out as it came, minus
        its reserved parameters."""
        self.enricher.accounting.bug(self.origin, e)


def without_reserved(url: str) -> str:
    """`url` minus its reserved parameters: what a client hook sends when it does not enrich
    (another method, a streamed body, a request no platform recognises, a failure)."""
    return reserved.split_url(url)[0]


def _bare(request: AdRequest) -> AdRequest:
    return request.with_url(without_reserved(request.url))
