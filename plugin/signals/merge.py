"""Behavioral and contextual cohorts into one ad request's key-values: merged or split."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.base import CohortsFor
from plugin.config import KeysConfig
from plugin.permutive.answer import Answer


def build_keyvalues(
    keys: KeysConfig,
    behavioral: Sequence[str],
    contextual: Sequence[str],
    user_id: str | None = None,
) -> dict[str, list[str]]:
    """Merged: behavioral then contextual under one key, each cohort once, order kept.
    Split: each signal under its own key. Empty keys are left out."""
    out: dict[str, list[str]] = {}
    if keys.mode == "merge":
        merged = list(dict.fromkeys([*behavioral, *contextual]))
        if merged:
            out[keys.behavioral] = merged
    else:
        if behavioral:
            out[keys.behavioral] = list(dict.fromkeys(behavioral))
        if contextual:
            out[keys.contextual] = list(dict.fromkeys(contextual))
    if keys.puid and user_id:
        out[keys.puid] = [user_id]
    return out


def keys_to_clear(keys: KeysConfig, allowed: bool, contextual: bool) -> frozenset[str]:
    """Our keys whose values a viewer may have put in the request, to remove before writing:
    the behavioral key (and the user id's) when consent is denied, since a viewer could inject
    cohorts there; the contextual key of its own when contextual cohorts are written, since
    ours replace theirs."""
    clear: set[str] = set()
    if not allowed:
        clear.update(k for k in (keys.behavioral, keys.puid) if k)
    if contextual and keys.mode == "split":
        clear.add(keys.contextual)
    return frozenset(clear)


def cohorts_for(
    keys: KeysConfig, behavioral: Answer | None, contextual: Answer | None
) -> CohortsFor:
    """For adapters that place cohorts per activation name (OpenRTB per bidder): the key-values
    of what the two answers activated for the names asked about, without the user id."""

    def activated(names: Sequence[str]) -> dict[str, list[str]]:
        b = behavioral.activated(names) if behavioral is not None else []
        c = contextual.activated(names) if contextual is not None else []
        return build_keyvalues(keys, b, c)

    return activated
