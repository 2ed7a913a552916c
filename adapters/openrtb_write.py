"""Writing members into a bid request by splicing them into its bytes.

A `Patch` says what goes where: nested objects by member name, down to `Put` (a member's new
value), `Segments` (our `{name, segment}` entries in a `data` array) and `Bidders` (entries of
`ext.prebid.bidderconfig`, one per bidder code). `write` walks the body's objects along the
patch (`adapters.jsonspan` finds each member's bytes) and splices: a member that is there gets
its value replaced, one that is missing is added after the object's last member, objects and
arrays on the way are made when missing. Every other byte stays as it was.

Member names match as Go's `encoding/json` matches them (`"User"` is `user`): writing `user`
next to a `User` would hand Prebid Server two copies, and it keeps the last. So an object on
the way that holds a name twice (in any case, or behind an escape) stops the write: which copy
a bidder reads is not ours to choose (`Duplicate`). A member that is there but is not an object
(or an array, for `Segments` and `Bidders`) is never overwritten; what would go in it is not
written.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import msgspec

from adapters.jsonspan import Arr, Member, Obj, Splice, array_at, object_at, root_at
from adapters.openrtb_read import fold, members


class Put(NamedTuple):
    """The member's value, as encoded JSON."""

    value: bytes
    label: str
    """The written key this counts towards (`Applied.written`)."""


class Segments(NamedTuple):
    """A `data` array of `{name, segment}` objects: each entry replaces the first element of
    its name where it stands (later ones of that name are dropped), or is appended."""

    entries: tuple[tuple[str, bytes, str], ...]
    """(name, the encoded entry, label)."""
    seed: tuple[str, ...] | None = None
    """When the array is missing, start it from the request's own array at this path, minus
    elements of our names: Prebid Server gives a bidder the bidderconfig's `data` instead of
    the request's, not merged with it, and other providers' entries must not be lost."""


class Bidders(NamedTuple):
    """`ext.prebid.bidderconfig`: per bidder code, what goes into its entry's `config`. An
    entry for exactly that bidder (`"bidders": [code]`) is written into; without one, an entry
    is appended; a bidder named in an entry shared with others (or in several) is skipped:
    Prebid Server refuses a second config for a bidder, the whole auction with it."""

    configs: tuple[tuple[str, Patch], ...]


Patch = dict[str, Union["Patch", Put, Segments, Bidders]]


class Duplicate(Exception):
    """An object on the way holds a member name twice."""


class Written(NamedTuple):
    body: bytes
    labels: frozenset[str]
    skipped: tuple[str, ...]
    """Bidder codes whose bidderconfig entry could not be written (shared with others)."""


def encode_member(name: str, value: bytes) -> bytes:
    return msgspec.json.encode(name) + b":" + value


def has_duplicates(obj: Obj) -> bool:
    names = {fold(m.key) for m in obj.members}
    return len(names) != len(obj.members)


def write(
    body: bytes, tree: dict[str, Any], patch: Patch, spans: dict[int, Obj] | None = None
) -> Written:
    """`body` with `patch` spliced in. Raises `Duplicate` (nothing written) when an object on
    the way repeats a name, `SpanError` when the bytes are not the JSON `tree` was decoded from.
    `spans` holds the objects already found in `body` (by offset): they are not scanned again,
    and the objects found are added to it."""
    writer = _Writer(body, {} if spans is None else spans)
    writer.root_span = writer.obj(root_at(body))
    writer.root_tree = tree
    writer.into(writer.root_span, tree, patch)
    return Written(writer.splice.result(), frozenset(writer.labels), tuple(writer.skipped))


def _member(obj: Obj, name: str) -> Member | None:
    for m in obj.members:
        if len(m.key) == len(name) and (m.key == name or fold(m.key) == name):
            return m
    return None


def _labels(sub: Patch | Put | Segments | Bidders) -> list[str]:
    if isinstance(sub, Put):
        return [sub.label]
    if isinstance(sub, Segments):
        return [label for _, _, label in sub.entries]
    if isinstance(sub, Bidders):
        return [label for _, cfg in sub.configs for label in _labels(cfg)]
    return [label for value in sub.values() for label in _labels(value)]


def _names_of(el: Any) -> list[str]:
    return [n for n in members(el, "name") if isinstance(n, str)]


def _codes(el: Any) -> tuple[list[str], bool]:
    """The bidder codes an entry names (lower-case), and whether it names exactly one bidder
    in one `bidders` member."""
    copies = members(el, "bidders")
    named = [c for copy in copies if isinstance(copy, list) for c in copy]
    codes = [c.lower() for c in named if isinstance(c, str)]
    return codes, len(copies) == 1 and len(named) == 1


class _Writer:
    def __init__(self, body: bytes, spans: dict[int, Obj]) -> None:
        self.body = body
        self.spans = spans
        self.view = memoryview(body)
        self.splice = Splice(body)
        self.labels: set[str] = set()
        self.skipped: list[str] = []
        self.root_tree: Any = None
        self.root_span: Obj | None = None

    def obj(self, pos: int) -> Obj:
        found = self.spans.get(pos)
        if found is None:
            found = object_at(self.body, pos, self.view)
            if has_duplicates(found):
                raise Duplicate
            self.spans[pos] = found
        return found

    def arr(self, pos: int) -> Arr:
        return array_at(self.body, pos, self.view)

    def into(self, span: Obj, node: dict[str, Any], patch: Patch) -> None:
        added: list[bytes] = []
        for name, sub in patch.items():
            m = _member(span, name)
            if m is None:
                added.append(encode_member(name, self.make(sub)))
                continue
            child = node.get(m.key)
            if isinstance(sub, Put):
                self.splice.replace(m.value, m.end, sub.value)
                self.labels.add(sub.label)
            elif isinstance(sub, dict):
                if isinstance(child, dict):
                    self.into(self.obj(m.value), child, sub)
            elif isinstance(child, list):
                if isinstance(sub, Segments):
                    self.segments(self.arr(m.value), child, sub)
                else:
                    self.bidders(self.arr(m.value), child, sub)
        if added:
            self.append(span.members[-1].end if span.members else span.start + 1, added, span)

    def append(self, at: int, texts: list[bytes], after: Obj | Arr) -> None:
        empty = not (after.members if isinstance(after, Obj) else after.items)
        self.splice.insert(at, (b"" if empty else b",") + b",".join(texts))

    def make(self, sub: Patch | Put | Segments | Bidders) -> bytes:
        """The encoded value of a missing member; its labels count as written."""
        self.labels.update(_labels(sub))
        if isinstance(sub, Put):
            return sub.value
        if isinstance(sub, Segments):
            names = {name for name, _, _ in sub.entries}
            seed = self.seed(sub.seed, names) if sub.seed is not None else []
            return b"[" + b",".join([*seed, *(entry for _, entry, _ in sub.entries)]) + b"]"
        if isinstance(sub, Bidders):
            return b"[" + b",".join(self.entry(code, cfg) for code, cfg in sub.configs) + b"]"
        return b"{" + b",".join(encode_member(k, self.make(v)) for k, v in sub.items()) + b"}"

    def entry(self, code: str, config: Patch) -> bytes:
        bidders = msgspec.json.encode([code])
        return b'{"bidders":' + bidders + b',"config":' + self.make(config) + b"}"

    def seed(self, path: tuple[str, ...], names: set[str]) -> list[bytes]:
        """The raw elements of the request's array at `path`, minus those of `names`."""
        span: Obj | None = self.root_span
        node: Any = self.root_tree
        for i, name in enumerate(path):
            m = _member(span, name) if span is not None else None
            if m is None:
                return []
            node = node.get(m.key) if isinstance(node, dict) else None
            last = i == len(path) - 1
            if last and isinstance(node, list):
                items = self.arr(m.value).items
                return [
                    self.body[s:e]
                    for (s, e), el in zip(items, node, strict=True)
                    if not names.intersection(_names_of(el))
                ]
            span = self.obj(m.value) if isinstance(node, dict) and not last else None
        return []

    def segments(self, arr: Arr, items: list[Any], sub: Segments) -> None:
        ours = {name: (entry, label) for name, entry, label in sub.entries}
        placed: set[str] = set()
        for i, el in enumerate(items):
            name = next((n for n in _names_of(el) if n in ours), None)
            if name is None:
                continue
            start, end = arr.items[i]
            if name in placed:  # a later one of our names: dropped, with its comma
                self.splice.replace(arr.items[i - 1][1], end, b"")
                continue
            placed.add(name)
            entry, label = ours[name]
            self.splice.replace(start, end, entry)
            self.labels.add(label)
        rest = [(entry, label) for name, (entry, label) in ours.items() if name not in placed]
        if rest:
            self.labels.update(label for _, label in rest)
            self.append(arr.items[-1][1] if arr.items else arr.start + 1, [e for e, _ in rest], arr)

    def bidders(self, arr: Arr, items: list[Any], sub: Bidders) -> None:
        new: list[bytes] = []
        for code, config in sub.configs:
            hits = [i for i, el in enumerate(items) if code.lower() in _codes(el)[0]]
            if not hits:
                new.append(self.entry(code, config))
            elif len(hits) == 1 and isinstance(items[hits[0]], dict) and _codes(items[hits[0]])[1]:
                i = hits[0]
                self.into(self.obj(arr.items[i][0]), items[i], {"config": config})
            else:
                self.skipped.append(code)
        if new:
            self.append(arr.items[-1][1] if arr.items else arr.start + 1, new, arr)
