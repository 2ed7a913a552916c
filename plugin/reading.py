"""An ad request read once, before it is enriched: the URL's reserved parameters taken out and
laid over the caller's Context, then the adapter's one `read`.

Whoever reads a request (the enricher, the sidecar's proxy, the client hooks) hands the
`Reading` on, and nothing after it reads the request again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

import plugin.reserved as reserved
from adapters.base import Adapter, Parsed, Unrecognised
from adapters.registry import read_as
from plugin.context import Context
from plugin.overrides import Report, from_params
from plugin.request import AdRequest, as_request


class Reading(NamedTuple):
    """An ad request as `read` read it, for `Enricher.enrich_reading`."""

    request: AdRequest
    """As the adapter read it: the URL's reserved parameters taken out."""
    context: Context | None
    """The caller's, with what the reserved parameters say on top."""
    parsed: Parsed | Unrecognised
    started: float
    """`time.perf_counter()` when reading began: the enrichment's time counts from it."""


def read(
    adapters: Iterable[Adapter],
    request: AdRequest | str,
    context: Context | None,
    platform: str | None,
    bad_reserved: Report,
) -> Reading:
    """The request read once, by the adapter called `platform` or (None, `auto`) the one that
    recognises it. The identity in `context` is trusted: whoever built the Context validated
    it. An unknown platform name raises `CohortkvError`."""
    started = time.perf_counter()
    req = as_request(request)
    url, found = reserved.split_url(req.url)
    if found:  # the URL's reserved parameters: read, and never forwarded
        req = req.with_url(url)
        context = reserved.under(context, from_params(found, bad_reserved))
    return Reading(req, context, read_as(adapters, req, platform), started)
