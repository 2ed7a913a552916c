"""Reading a bid request the way the servers behind us read it: every copy, every case.

Prebid Server decodes bid requests with Go's `encoding/json` rules: a member name matches a
field case-insensitively (`"COPPA"` is `coppa`; Go's folding also takes U+017F, the long s,
for `s` and U+212A, the Kelvin sign, for `k`), and of repeated names the last copy wins,
while other readers take the first. So every member whose name folds to the one we read is a
copy of it (`members`), and every copy counts: a deny flag in any copy denies, copies of a
consent string or an identity that disagree are a conflict. Repeated keys collapse in a plain
decode, so a body where a read name occurs more often than the decoded objects show is
decoded again keeping every copy (`with_every_copy`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.params import Params, encodable, encode
from plugin.identity import is_uuid4

_GO_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})
_FOLDING_BYTES = ("\u017f".encode(), "\u212a".encode())

Where = tuple[tuple[str, ...], str]
"""A member to read: the object path and the member's name (`(("regs", "ext"), "gdpr")`)."""


def fold(name: str) -> str:
    """A member name as Go's `encoding/json` compares it with a field name (lower-case ASCII)."""
    if name.isascii():
        return name.lower()
    return name.translate(_GO_FOLD).lower()


class Copies(dict[str, Any]):
    """A JSON object that keeps every member in order, repeated names included (the dict keeps
    the last value, as msgspec and Go do)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def with_every_copy(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=Copies)


def _items(obj: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    return obj.pairs if isinstance(obj, Copies) else obj.items()


def members(obj: Any, name: str) -> list[Any]:
    """Every value of a member whose name folds to `name` (lower-case), in order."""
    if not isinstance(obj, dict):
        return []
    n = len(name)
    return [v for k, v in _items(obj) if len(k) == n and (k == name or fold(k) == name)]


def first(root: Any, path: Iterable[str]) -> Any:
    """The value at `path` as a plain decode gives it (the last copy of an exact name)."""
    node = root
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def raw(value: Any) -> str | None:
    """A JSON scalar as the percent-encoded text `params` readers take; None for the rest."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        return encode(value) if encodable(value) else None
    return None


def deny_raw(value: Any) -> str | None:
    """A deny-only member (`coppa`, `lmt`) as `raw` text; a value `raw` cannot express (`0.5`,
    `[1]`, `{}`) reads as set: a lenient reader may take it so, and the most restrictive
    reading wins. Only absent (`null`) and 0 (`0`, `false`, `"0"`, blank) leave it unset."""
    if value is None:
        return None
    text = raw(value)
    return "1" if text is None else text


def odd_flag(value: Any) -> bool:
    """Whether a deny-only member's value is other than the integer 0 or 1 the standard asks
    for (`null` aside): counted as bad input, whichever way it reads."""
    if value is None:
        return False
    return isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1)


def sid_raw(value: Any) -> str | None:
    """`gpp_sid` as an array of ints (the standard) or a comma list (seen in the wild)."""
    if isinstance(value, list):
        ids = [str(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return encode(",".join(ids)) if ids else None
    return raw(value)


def synthetic(where: Where) -> str:
    """The name a conflict reports (`regs.ext.gdpr`)."""
    return ".".join((*where[0], where[1]))


def the(found: list[Any]) -> Any:
    """The one value all copies agree on; None when absent or they differ."""
    if not found or any(v != found[0] for v in found[1:]):
        return None
    return found[0]


def string(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and encodable(value) else None


def prop(value: Any) -> Any:
    """JSON scalars and arrays of them, as play-event properties; None for anything else."""
    if isinstance(value, str):
        return string(value)
    if isinstance(value, int):  # bool included
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        items = [p for p in (prop(v) for v in value if not isinstance(v, list)) if p is not None]
        return items or None
    return None


class Reader:
    """The members of one decoded body as Go matches them, each object indexed once: one parse
    asks the same few objects (`regs`, `user`, `device`) for many names."""

    __slots__ = ("_index", "_paths", "root")

    def __init__(self, root: Any) -> None:
        self.root = root
        self._index: dict[int, tuple[Any, dict[str, list[Any]]]] = {}
        self._paths: dict[tuple[str, ...], list[Any]] = {(): [root]}

    def members(self, obj: Any, name: str) -> list[Any]:
        """Every value of a member of `obj` whose name folds to `name` (lower-case)."""
        if not isinstance(obj, dict):
            return []
        known = self._index.get(id(obj))
        if known is None or known[0] is not obj:
            index: dict[str, list[Any]] = {}
            for key, value in _items(obj):
                index.setdefault(fold(key), []).append(value)
            known = self._index[id(obj)] = (obj, index)
        return known[1].get(name, [])

    def nodes(self, path: tuple[str, ...]) -> list[Any]:
        """Every value at `path` from the root, through every copy on the way."""
        found = self._paths.get(path)
        if found is None:
            found = [v for n in self.nodes(path[:-1]) for v in self.members(n, path[-1])]
            self._paths[path] = found
        return found

    def values(self, where: Where) -> list[Any]:
        return self.nodes((*where[0], where[1]))

    def params(self, groups: Iterable[Where], sid: bool = False, deny: bool = False) -> Params:
        """The values at each place as one `Params` set, named `regs.ext.gdpr` and so on,
        every copy kept, so that `SignalReader` applies its rules to JSON as to URLs. `deny`:
        the places hold deny-only flags (`deny_raw`)."""
        out = Params()
        to_text = sid_raw if sid else deny_raw if deny else raw
        for where in groups:
            name = synthetic(where)
            for value in self.values(where):
                text = to_text(value)
                if text is None:
                    continue
                if name not in out:
                    out[name] = text
                else:
                    out.repeats.setdefault(name, [out[name]]).append(text)
        return out

    def suspicious(self, body: bytes, watched: Iterable[Where]) -> bool:
        """Whether a watched member may be repeated in one object: its name occurs in the body
        (in any case) more often than the decoded objects show, or could hide behind a `\\u`
        escape or a character Go folds to ASCII. False positives only cost a slower decode."""
        if b"\\u" in body or any(b in body for b in _FOLDING_BYTES):
            return True
        seen: dict[str, int] = {}
        for where in watched:
            seen[where[1]] = seen.get(where[1], 0) + len(self.values(where))
        lower = body.lower()
        return any(lower.count(b'"' + name.encode() + b'"') > n for name, n in seen.items())

    def permutive_ids(self, sources: frozenset[str]) -> set[str]:
        """Every Permutive id (a UUIDv4 under one of `sources`) in `user.eids` /
        `user.ext.eids`, through every copy of every member on the way."""
        found: set[str] = set()
        for eids in (*self.nodes(("user", "eids")), *self.nodes(("user", "ext", "eids"))):
            for eid in eids if isinstance(eids, list) else ():
                if not any(_source(s) in sources for s in self.members(eid, "source")):
                    continue
                for uids in self.members(eid, "uids"):
                    for uid in uids if isinstance(uids, list) else ():
                        for ident in self.members(uid, "id"):
                            if isinstance(ident, str) and is_uuid4(ident.strip().lower()):
                                found.add(ident.strip().lower())
        return found


def _source(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) else None
