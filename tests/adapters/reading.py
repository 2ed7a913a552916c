"""The adapter contract (`read`, then `apply`) in the shapes tests ask about one request."""

from __future__ import annotations

from adapters.base import Adapter, CohortsFor, KeyValuesIn, Parsed, Unrecognised
from plugin.context import Context
from plugin.request import AdRequest, Applied


def parsed(adapter: Adapter, request: AdRequest) -> Parsed:
    """`adapter.read(request)`, which must recognise it."""
    got = adapter.read(request)
    assert isinstance(got, Parsed), got
    return got


def reason(adapter: Adapter, request: AdRequest) -> str | None:
    """Why `adapter` does not recognise `request`; None when it does."""
    got = adapter.read(request)
    return got.reason if isinstance(got, Unrecognised) else None


def context_of(adapter: Adapter, request: AdRequest) -> Context:
    """The Context `adapter` reads out of `request` (an empty one when it is not its own)."""
    got = adapter.read(request)
    return got.context if isinstance(got, Parsed) else Context()


def applied(
    adapter: Adapter,
    request: AdRequest,
    keyvalues: KeyValuesIn,
    cohorts_for: CohortsFor | None = None,
) -> Applied:
    """`request` read, then written (unchanged when `adapter` does not recognise it)."""
    got = adapter.read(request)
    if isinstance(got, Unrecognised):
        return Applied(request, {})
    return adapter.apply(got, keyvalues, cohorts_for)
