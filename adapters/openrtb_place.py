"""Where OpenRTB cohorts go: the `Patch` (see `openrtb_write`) that puts one bid request's
cohorts in the places `[adapters.openrtb]` names: request-wide or per bidder, under the `[keys]`
names or Prebid.js's. The rules are specified in `adapters/openrtb.py`'s docstring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from adapters.base import CohortsFor, KeyValuesIn
from adapters.openrtb_read import members
from adapters.openrtb_write import Bidders, Patch, Put, Segments
from adapters.params import Dropped, encodable, sanitise
from plugin.request import KeyValues

INVENTORY = ("site", "app", "dooh")
BIDDERCONFIG_INVENTORY = ("site", "app")
"""The inventory objects Prebid Server's `ext.prebid.bidderconfig` can carry."""
PREBID_CUSTOM = ("permutive", "permutive")
PREBID_STANDARD = ("permutive.com", "p_standard")
"""Prebid.js's (`user.data` entry name, `user.ext.data` key) for custom and standard cohorts."""

UserLists = list[tuple[str, str, list[str]]]
"""(user `data` entry name, `ext.data` key, ids) for each list written to the user."""


def valid_key(key: object) -> bool:
    return isinstance(key, str) and bool(key.strip()) and encodable(key)


def clean_value(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip() or not encodable(value):
        return None
    return value


def _union(*lists: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(v for values in lists for v in values))


def _inventory(root: Any, allowed: Sequence[str] = INVENTORY) -> str | None:
    """The request's inventory object: the first of `allowed` that is an object."""
    return next((n for n in allowed if any(isinstance(v, dict) for v in members(root, n))), None)


class Placement:
    """One adapter's placement rules, applied to one bid request at a time."""

    def __init__(
        self,
        *,
        contextual_key: str,
        scope: Literal["request", "bidders"],
        names: Literal["keys", "prebid"],
        bidders: tuple[tuple[str, tuple[str, ...]], ...],
        custom: tuple[str, ...],
        standard: tuple[str, ...],
        max_cohorts: int,
    ) -> None:
        self.contextual_key = contextual_key
        self.scope = scope
        self.names = names
        self.bidders = bidders
        self.custom = custom
        self.standard = standard
        self.max_cohorts = max_cohorts
        self.dropped: Dropped | None = None
        """Told why each of our values was left out (the adapter's `on_skip`)."""

    def plan(
        self, tree: dict[str, Any], keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None
    ) -> tuple[Patch, KeyValues]:
        """What goes where, and the ids each written label carries."""
        planned: KeyValues = {}
        if self.scope == "bidders":
            return self._per_bidder(tree, cohorts_for, planned), planned
        if self.names == "prebid":
            custom = cohorts_for(self.custom) if cohorts_for else dict(keyvalues)
            standard = cohorts_for(self.standard) if cohorts_for and self.standard else {}
        else:
            custom, standard = dict(keyvalues), {}
        user, ctx = self._placements(custom, standard)
        patch = self._patch(user, ctx, _inventory(tree), planned, "", seed=False)
        return patch, planned

    def _per_bidder(
        self, tree: dict[str, Any], cohorts_for: CohortsFor | None, planned: KeyValues
    ) -> Patch:
        if cohorts_for is None:  # per-bidder cohorts need the answers' activations
            return {}
        inventory = _inventory(tree, BIDDERCONFIG_INVENTORY)
        configs: list[tuple[str, Patch]] = []
        for code, names in self.bidders:
            standard = [n for n in names if n in self.standard] if self.names == "prebid" else []
            custom = [n for n in names if n not in standard]
            user, ctx = self._placements(
                cohorts_for(custom) if custom else {}, cohorts_for(standard) if standard else {}
            )
            ortb2 = self._patch(user, ctx, inventory, planned, f"{code}.", seed=True)
            if ortb2:
                configs.append((code, {"ortb2": ortb2}))
        if not configs:
            return {}
        return {"ext": {"prebid": {"bidderconfig": Bidders(tuple(configs))}}}

    def _placements(
        self, custom: Mapping[str, Sequence[str]], standard: Mapping[str, Sequence[str]]
    ) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
        """(user `data` entry name, `ext.data` key, ids) for each list, and the contextual ids."""
        ctx_key = self.contextual_key
        mine = sanitise(custom, valid_key, clean_value, self.dropped)
        theirs = sanitise(standard, valid_key, clean_value, self.dropped)
        ctx = self._capped(_union(*(ids for k, ids in (*mine, *theirs) if k == ctx_key)))
        if self.names == "keys":
            user = [(k, k, self._capped(ids)) for k, ids in mine if k != ctx_key]
        else:
            lists = (
                (PREBID_CUSTOM, _union(*(ids for k, ids in mine if k != ctx_key))),
                (PREBID_STANDARD, _union(*(ids for k, ids in theirs if k != ctx_key))),
            )
            user = [(name, key, self._capped(ids)) for (name, key), ids in lists if ids]
        return user, ctx

    def _capped(self, ids: list[str]) -> list[str]:
        """`ids` within `max_cohorts`; each one over it is told to `dropped`."""
        cap = self.max_cohorts
        if len(ids) > cap and self.dropped is not None:
            for _ in ids[cap:]:
                self.dropped("keyvalue_over_max_cohorts")
        return ids[:cap]

    def _patch(
        self,
        user: list[tuple[str, str, list[str]]],
        ctx: list[str],
        inventory: str | None,
        planned: KeyValues,
        prefix: str,
        *,
        seed: bool,
    ) -> Patch:
        patch: Patch = {}
        if user:
            entries = tuple((n, _entry(n, ids), prefix + k) for n, k, ids in user)
            ext: Patch = {k: Put(msgspec.json.encode(ids), prefix + k) for _, k, ids in user}
            patch["user"] = {
                "data": Segments(entries, ("user", "data") if seed else None),
                "ext": {"data": ext},
            }
            planned.update({prefix + k: ids for _, k, ids in user})
        if ctx and inventory is not None:
            key = self.contextual_key
            where = (inventory, "content", "data") if seed else None
            patch[inventory] = {
                "content": {"data": Segments(((key, _entry(key, ctx), prefix + key),), where)},
                "ext": {"data": {key: Put(msgspec.json.encode(ctx), prefix + key)}},
            }
            planned[prefix + key] = ctx
        return patch


def _entry(name: str, ids: list[str]) -> bytes:
    return msgspec.json.encode({"name": name, "segment": [{"id": v} for v in ids]})
