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


class Planned:
    """What two answers write for an adapter's platforms: the codes each activated and the
    key-values they make (`keyvalues()` hands out a copy: adapters may keep or change it)."""

    __slots__ = ("_keyvalues", "b_codes", "behavioral", "c_codes", "contextual", "platforms")

    def __init__(
        self, keys: KeysConfig, b: Answer | None, c: Answer | None, platforms: tuple[str, ...]
    ) -> None:
        self.behavioral, self.contextual, self.platforms = b, c, platforms
        self.b_codes = tuple(b.activated(platforms)) if b is not None else ()
        self.c_codes = tuple(c.activated(platforms)) if c is not None else ()
        puid = b.user_id if b is not None else None
        self._keyvalues = build_keyvalues(keys, self.b_codes, self.c_codes, puid)

    def keyvalues(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self._keyvalues.items()}


class RememberedPlans:
    """`Planned` by the answer objects and the platforms tuple: one cached answer serves many
    requests (a view's breaks, a content's viewers) and an answer never changes, so what it
    writes is worked out once. Bounded: full, it starts over. Also the keys to clear
    (`keys_to_clear`), worked out once per case."""

    MAX = 4096

    def __init__(self, keys: KeysConfig) -> None:
        self._keys = keys
        self._known: dict[tuple[int, int, int], Planned] = {}
        self._clear = {
            (allowed, contextual): keys_to_clear(keys, allowed, contextual)
            for allowed in (False, True)
            for contextual in (False, True)
        }

    def __call__(self, b: Answer | None, c: Answer | None, platforms: tuple[str, ...]) -> Planned:
        key = (id(b), id(c), id(platforms))
        known = self._known.get(key)
        if (
            known is None
            or known.behavioral is not b
            or known.contextual is not c
            or known.platforms is not platforms
        ):
            known = Planned(self._keys, b, c, platforms)
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known[key] = known
        return known

    def clear(self, allowed: bool, contextual: bool) -> frozenset[str]:
        """`keys_to_clear` for these keys."""
        return self._clear[(allowed, contextual)]
