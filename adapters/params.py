"""Query-string helpers shared by the adapters: splice, don't re-serialise.

Ad request URLs are rewritten by cutting text into them, never by parsing the whole URL and
serialising it again: generic parsers re-encode, reorder or drop parameters the ad server relies
on, and FreeWheel's `;` sections break them outright. Everything here works on `str` slices with
`str.find` / `str.split`, tolerates malformed input (a bad `%XY` stays literal, bytes that are not
UTF-8 become U+FFFD) and never raises on it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar
from urllib.parse import quote, unquote

from plugin.context import ConsentSignals
from plugin.identity import DEVICE_ID_TAGS, Alias, Identity

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

NOT_A_USER_ID_TYPES = frozenset(("sessionid",))
"""IAB `ifa_type` values whose ids name a session, not a person: never used as identity."""

_MAX_ID_LENGTH = 256
_MAX_INT_DIGITS = 6
_TRUE = frozenset(("1", "true"))
_FALSE = frozenset(("0", "false"))
_FLAGS = {"1": True, "true": True, "0": False, "false": False}
"""Raw values that `flag` reads as they are (no `%`, `+` or space to decode or strip)."""
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def split_url(url: str) -> tuple[str, str | None, str]:
    """`(base, query, fragment)`; query is None without a `?`; the fragment keeps its `#`."""
    hash_at = url.find("#")
    rest, fragment = (url, "") if hash_at < 0 else (url[:hash_at], url[hash_at:])
    q = rest.find("?")
    if q < 0:
        return rest, None, fragment
    return rest[:q], rest[q + 1 :], fragment


def url_path(base: str) -> str:
    """The path of a URL without its query: after `scheme://authority` or `//authority`."""
    sep = base.find("://")
    if sep >= 0 and "/" not in base[:sep]:
        start = sep + 3
    elif base.startswith("//"):
        start = 2
    else:
        return base
    slash = base.find("/", start)
    return "" if slash < 0 else base[slash:]


def decode(value: str, *, plus: bool = True) -> str:
    """Percent-decode one query component (form style: `+` is a space unless `plus=False`)."""
    if plus and "+" in value:
        value = value.replace("+", " ")
    if "%" not in value:
        return value
    found = _decoded.get(value)
    if found is None:
        found = unquote(value, errors="replace")
        if len(value) <= _MAX_DECODED_LENGTH:
            keep(_decoded, value, found, _MAX_DECODED)
    return found


def keep(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Stores `value` in a bounded memo (full, it starts over: keeping is an optimisation
    only) and returns it."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


# The encoded values worth decoding recur (a content URL, a player's `cust_params`), and
# `unquote` is slow: the last few thousand short ones are kept.
_decoded: dict[str, str] = {}
_MAX_DECODED = 4096
_MAX_DECODED_LENGTH = 512


def encode(value: str) -> str:
    """Percent-encode every character except the unreserved ones (`A-Z a-z 0-9 - . _ ~`)."""
    if value.isascii() and value.isalnum():
        return value
    return quote(value, safe="")


def encodable(value: str) -> bool:
    """True when the text can go into a URL as UTF-8 (no lone surrogates)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Params(dict[str, str]):
    """Decoded name → raw (still encoded) value of its first occurrence; bare names map to "".

    `repeats` keeps every raw value of the names that came more than once: a consent parameter
    sent twice with different values must be noticed, not silently read as its first value.
    `other_cases` finds the copies of a name in another letter case (`TFCD`, `Is_Lat`): some
    ad servers read names case-insensitively (ASP.NET's query collection does), so for a
    privacy signal they count too.
    """

    __slots__ = ("_folded", "repeats")

    def __init__(self) -> None:
        super().__init__()
        self.repeats: dict[str, list[str]] = {}
        self._folded: dict[str, list[tuple[str, str]]] | None = None

    def every(self, name: str) -> list[str]:
        """Every raw value of `name`, in order; empty when it is absent."""
        repeated = self.repeats.get(name)
        if repeated is not None:
            return repeated
        value = self.get(name)
        return [] if value is None else [value]

    def other_cases(self, name: str) -> list[str]:
        """Every raw value of the names that equal `name` but for letter case (Unicode case
        folding, so ASCII case and its look-alikes), `name` itself left out."""
        folded = self._folded
        if folded is None:
            folded = self._folded = _fold(self)
        key = _casefold(name)
        if not folded:  # every name is lowercase ASCII: only `name` in lowercase can be one
            return [] if key == name else self.every(key)
        found = folded.get(key)
        if found is None:
            return []
        return [raw for other, raw in found if other != name]

    def folded_names(self) -> Collection[str]:
        """Every name case-folded (`str.casefold`): the names themselves when all are
        lowercase ASCII."""
        folded = self._folded
        if folded is None:
            folded = self._folded = _fold(self)
        return folded.keys() if folded else self.keys()

    def mixed_case(self) -> bool:
        """True when some name is not plain lowercase ASCII: only then can a name have
        copies in another case, and readers that key on exact names must look further."""
        folded = self._folded
        if folded is None:
            folded = self._folded = _fold(self)
        return bool(folded)

    def lowercase(self) -> bool:
        """`not mixed_case()`: every name is plain lowercase ASCII."""
        folded = self._folded
        if folded is None:
            folded = self._folded = _fold(self)
        return not folded

    def nested(self, prefix: str) -> Params:
        """The parameters named `<prefix><name>`, the prefix in any letter case, as `<name>`
        (AdsWizz's `aw_0_1st.` targeting); `prefix` is lowercase."""
        out = Params()
        n = len(prefix)
        for name in self:
            if len(name) > n and name[:n].casefold() == prefix:
                for raw in self.every(name):
                    out.add(name[n:], raw)
        return out

    def add(self, name: str, raw: str) -> None:
        """One more occurrence of `name`."""
        if name not in self:
            self[name] = raw
        else:
            self.repeats.setdefault(name, [self[name]]).append(raw)


def _casefold(name: str) -> str:
    """`name.casefold()`, kept: the names asked about are the adapters' own, a few dozen."""
    found = _casefolded.get(name)
    return found if found is not None else keep(_casefolded, name, name.casefold(), _MAX_NAMES)


_casefolded: dict[str, str] = {}
_MAX_NAMES = 1024


def _not_lowercase(names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `names` that are not plain lowercase (`aw_0_req.userConsentV2`), kept."""
    found = _mixed_names.get(names)
    if found is None:
        found = keep(_mixed_names, names, tuple(n for n in names if _casefold(n) != n), _MAX_NAMES)
    return found


_mixed_names: dict[tuple[str, ...], tuple[str, ...]] = {}


def _folded_groups(
    groups: tuple[tuple[str, ...], ...],
) -> tuple[frozenset[str], tuple[frozenset[str], ...]]:
    """Every name in `groups` case-folded, and each group's, kept: a name has a copy in a
    parameter set, in some letter case, exactly when its folded form is among the set's
    `folded_names`."""
    found = _folded.get(groups)
    if found is None:
        each = tuple(frozenset(_casefold(n) for n in g) for g in groups)
        found = keep(_folded, groups, (frozenset().union(*each), each), _MAX_NAMES)
    return found


_folded: dict[tuple[tuple[str, ...], ...], tuple[frozenset[str], tuple[frozenset[str], ...]]] = {}


def _fold(p: Params) -> dict[str, list[tuple[str, str]]]:
    """Folded name → (name, raw value) of every parameter; empty, after one check of all the
    names at once, for the usual query whose names are all lowercase ASCII."""
    joined = "".join(p)
    if joined.isascii() and joined.lower() == joined:
        return {}
    folded: dict[str, list[tuple[str, str]]] = {}
    for name in p:
        folded.setdefault(name.casefold(), []).extend((name, raw) for raw in p.every(name))
    return folded


def first_params(query: str, sep: str = "&") -> Params:
    """The query's parameters (see `Params`), split on `sep`."""
    segments = query.split(sep)
    out = Params()
    for segment in segments:  # the usual query first: distinct, plain names (checked below)
        name, _, value = segment.partition("=")
        out[name] = value
    if len(out) == len(segments) and "" not in out:
        joined = "".join(out)
        if "%" not in joined and "+" not in joined:
            # No name repeated, none to decode, no empty segment: what the general loop
            # reads. The names' case is known from the same join (`_fold`).
            if joined.isascii() and joined.lower() == joined:
                out._folded = {}
            return out
    return _every_params(segments)


def _every_params(segments: list[str]) -> Params:
    """`first_params` of a query's segments that repeat a name, encode one or are empty."""
    out = Params()
    for segment in segments:
        if not segment:
            continue
        name, _, value = segment.partition("=")
        if "%" in name or "+" in name:
            name = decode(name)
        if name not in out:
            out[name] = value
        else:
            out.repeats.setdefault(name, [out[name]]).append(value)
    return out


class SignalReader:
    """Reads privacy parameters across every place a request carries them: one or more
    parameter sets (FreeWheel's sections, GAM's `cust_params`), every occurrence, any case.

    Most restrictive wins: a deny flag counts when ANY occurrence sets it, under its name in
    any letter case (`TFCD=1`); a consent value whose occurrences disagree (`gdpr=0&gdpr=1`,
    `us_privacy` and `US_PRIVACY` or `aw_0_req.usPrivacy` differing, two FreeWheel sections)
    is recorded in `conflicts` and read as absent.
    """

    __slots__ = ("_general", "_plain", "_sets", "conflicts")

    def __init__(self, *sets: Params, general: bool = False) -> None:
        self._sets = sets
        self.conflicts: list[str] = []
        self._general = general
        """For tests: no shortcut, every signal read the general way."""
        self._plain: bool | None = False if general else None
        """The usual request: no name repeated, every name in lowercase ASCII (known once
        asked)."""

    def _is_plain(self) -> bool:
        """Whether every set is the usual query (`_plain`): then a lowercase name is one
        look-up a set."""
        plain = self._plain
        if plain is None:
            plain = True
            for p in self._sets:
                if p.repeats or not p.lowercase():
                    plain = False
                    break
            self._plain = plain
        return plain

    def _raw(self, names: tuple[str, ...]) -> list[str]:
        sets = self._sets
        plain = self._plain
        if plain is None:
            plain = self._is_plain()
        if plain:
            if len(names) == 1 and _casefold(name := names[0]) == name:
                found: list[str] = []  # one lowercase name: one look-up a set
                for p in sets:
                    value = p.get(name)
                    if value is not None:
                        found.append(value)
                return found
            out = [v for p in sets for name in names if (v := p.get(name)) is not None]
            for name in _not_lowercase(names):  # only their lowercase forms can be there
                for p in sets:
                    out.extend(p.other_cases(name))
            return out
        out = []
        for p in sets:
            for name in names:
                out.extend(p.every(name))
                out.extend(p.other_cases(name))
        return out

    def same(self, *names: str) -> str | None:
        """The raw value every occurrence of `names` (exact names, in every set) agrees on,
        for identity: None when absent, or when two occurrences name different ids (the
        request then names nobody; it is no consent conflict)."""
        sets = self._sets
        if len(sets) == 1 and len(names) == 1 and not sets[0].repeats:
            return sets[0].get(names[0])  # one place, one copy: nothing to disagree with
        found: str | None = None
        agreed: str | None = None
        for p in sets:
            for name in names:
                for raw in p.every(name):
                    value = text(raw)
                    if value is None:
                        continue
                    if agreed is None:
                        found, agreed = raw, value
                    elif value != agreed:
                        return None
        return found

    def text(self, *names: str) -> str | None:
        """The one value the parameters agree on; None when absent or in conflict."""
        return self._agreed(names, text)

    def flag(self, *names: str) -> bool | None:
        """A boolean the parameters agree on (`gdpr`); None when absent or in conflict."""
        return self._agreed(names, flag)

    def _agreed(self, names: tuple[str, ...], read: Callable[[str | None], T | None]) -> T | None:
        """The one value every occurrence reads as; a disagreement is a conflict (which the
        consent gate treats as a denial), recorded under the first name."""
        raws = self._raw(names)
        if len(raws) < 2:  # the usual: nothing to disagree with
            return read(raws[0]) if raws else None
        found: T | None = None
        for raw in raws:
            value = read(raw)
            if value is None:
                continue
            if found is None:
                found = value
            elif value != found:
                self.conflicts.append(names[0])
                return None
        return found

    def any_set(self, *names: str) -> bool | None:
        """True when any occurrence of any name is set (`tfcd`, `is_lat`); False when one is
        explicitly unset and none is set; None when absent. These flags can only deny, so a
        value that is neither set nor unset (`tfcd=yes`, `is_lat=1%00`) counts as set: a
        lenient reader may take it so, and the most restrictive reading wins."""
        seen: bool | None = None
        for raw in self._raw(names):
            value = flag(raw)
            if value is True or (value is None and text(raw) is not None):
                return True
            if value is False:
                seen = False
        return seen

    def signals(
        self,
        *,
        gdpr: tuple[str, ...],
        tc_string: tuple[str, ...],
        us_privacy: tuple[str, ...],
        gpp: tuple[str, ...],
        gpp_sid: tuple[str, ...],
        child_directed: tuple[str, ...] = (),
        restricted: tuple[str, ...] = (),
    ) -> ConsentSignals:
        """The ConsentSignals these parameter names carry, conflicts included. A signal none
        of whose names the request carries, in any letter case, is absent without being read."""
        groups = (child_directed, restricted, gpp_sid, gdpr, tc_string, us_privacy, gpp)
        wanted, folded = _folded_groups(groups)
        # the names no set carries in any case, found with one set difference
        if self._general:
            absent: frozenset[str] = frozenset()
        elif self._is_plain():  # every name lowercase ASCII: its own folded form
            absent = wanted.difference(*self._sets)
        else:
            absent = wanted.difference(*map(Params.folded_names, self._sets))
        if len(absent) == len(wanted):  # none of them is there
            return ConsentSignals(conflicts=tuple(self.conflicts))
        child = limited = None
        if not absent >= folded[0]:
            child = self.any_set(*child_directed)
        if not absent >= folded[1]:
            limited = self.any_set(*restricted)
        sid_text = None if absent >= folded[2] else self._agreed(gpp_sid, text)
        return ConsentSignals(
            gdpr=None if absent >= folded[3] else self._agreed(gdpr, gdpr_flag),
            tc_string=None if absent >= folded[4] else self._agreed(tc_string, text),
            us_privacy=None if absent >= folded[5] else self._agreed(us_privacy, text),
            gpp=None if absent >= folded[6] else self._agreed(gpp, text),
            gpp_sid=parse_gpp_sid(sid_text),
            child_directed=child,
            restricted=limited,
            conflicts=tuple(self.conflicts),
        )


def drop_fields(text: str, names: Collection[str], sep: str = "&") -> tuple[str, int]:
    """`text` (fields joined by `sep`) without the fields whose decoded name, trimmed and in
    any case, is one of `names` (lowercase), and how many went; every other byte stays."""
    fields = text.split(sep)
    kept = [f for f in fields if decode(f).partition("=")[0].strip().lower() not in names]
    dropped = len(fields) - len(kept)
    return (sep.join(kept), dropped) if dropped else (text, 0)


def find_param(query: str, name: str, sep: str = "&") -> tuple[int, int] | None:
    """Bounds `(start, end)` of the first `name` or `name=value` segment, matched raw."""
    n = len(name)
    size = len(query)
    pos = 0
    while True:
        i = query.find(name, pos)
        if i < 0:
            return None
        after = i + n
        if (i == 0 or query[i - 1] == sep) and (
            after == size or query[after] == "=" or query[after] == sep
        ):
            end = query.find(sep, after)
            return i, size if end < 0 else end
        pos = i + 1


def text(raw: str | None) -> str | None:
    """A decoded, stripped parameter value; None when absent or blank."""
    if raw is None:
        return None
    value = decode(raw).strip()
    return value or None


def flag(raw: str | None) -> bool | None:
    """`1`/`true` → True, `0`/`false` → False, anything else → None (unknown)."""
    if raw is None:
        return None
    known = _FLAGS.get(raw)  # the usual raw values, read as below
    if known is not None:
        return known
    value = text(raw)
    if value is None:
        return None
    value = value.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def gdpr_flag(raw: str | None) -> bool | None:
    """`gdpr`: 0 / 1 as `flag` reads them; any other non-blank value fails closed to 1 (GDPR
    applies), so that `gdpr=2` cannot pass for "no signal"."""
    value = flag(raw)
    if value is None and text(raw) is not None:
        return True
    return value


def gpp_sid(raw: str | None) -> tuple[int, ...] | None:
    """GPP section ids from a raw comma list; pieces that are not small integers are skipped."""
    return parse_gpp_sid(text(raw))


def parse_gpp_sid(value: str | None) -> tuple[int, ...] | None:
    """GPP section ids from a decoded comma list; None only when the parameter is absent.

    Present but without a usable id (`-1`, which says "no section applies", or garbage) is an
    empty tuple: the gate then reads no section. Never None, which would read every section:
    a value from the viewer must not widen what is read."""
    if value is None:
        return None
    ids = []
    for piece in value.split(","):
        piece = piece.strip()
        digits = piece[1:] if piece.startswith("-") else piece
        if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_INT_DIGITS:
            ids.append(int(piece))
    return tuple(ids)


def number(raw: str | None) -> int | float | None:
    """A finite, non-negative number (int when integral); None for anything else."""
    value = text(raw)
    if value is None or len(value) > 32:
        return None
    try:
        parsed = float(value)
    except ValueError:
        return None
    if parsed != parsed or parsed in (float("inf"), float("-inf")) or parsed < 0:
        return None
    return int(parsed) if parsed.is_integer() else parsed


def device_id(raw: str | None) -> str | None:
    """A usable device id: not blank, not the all-zero id a tracking opt-out produces."""
    value = text(raw)
    if value is None or len(value) > _MAX_ID_LENGTH:
        return None
    if not value.strip("0-"):
        return None
    return value


def device_tag(kind: str | None) -> str | None:
    """The alias tag for a device id type; unknown types that look like a type name are kept."""
    if kind is None:
        return None
    kind = kind.strip().lower()
    if kind in NOT_A_USER_ID_TYPES:
        return None
    known = DEVICE_ID_TAGS.get(kind)
    if known is not None:
        return known
    if 0 < len(kind) <= 32 and kind.isascii() and set(kind) <= _TAG_CHARS:
        return kind
    return None


def content_url(raw: str | None) -> str | None:
    """A content URL parameter, decoded once, or twice when a player encoded it twice
    (`https%3A%2F%2F…`), so that one page always yields the same content URL."""
    url = text(raw)
    if url is not None and url[:8].lower().startswith(("http%3a", "https%3a")):
        url = decode(url, plus=False)
    return url


def identity_of(aliases: list[Alias]) -> Identity | None:
    """One alias as `alias`; several as `aliases` with priorities in the order given."""
    if not aliases:
        return None
    if len(aliases) == 1:
        return Identity(alias=aliases[0])
    return Identity(
        aliases=tuple(Alias(tag=a.tag, id=a.id, priority=i) for i, a in enumerate(aliases))
    )


Dropped = Callable[[str], None]
"""Told the reason for each of our values an adapter drops or rewrites (`SkipHook` reasons):
`keyvalue_bad_key`, `keyvalue_bad_value`, `keyvalue_rewritten`, `keyvalue_over_length`, ..."""


def sanitise(
    keyvalues: Mapping[str, Sequence[str]],
    key_ok: Callable[[object], bool],
    clean: Callable[[object], str | None],
    dropped: Dropped | None = None,
) -> list[tuple[str, list[str]]]:
    """Our key-values as a platform can carry them: bad keys and unusable values dropped,
    values the platform cannot carry as they are rewritten (each told to `dropped`),
    duplicates removed, order kept; a bare string counts as one value."""
    out: list[tuple[str, list[str]]] = []
    for key, values in keyvalues.items():
        given = (values,) if isinstance(values, str) else values
        if not key_ok(key):
            if dropped is not None:
                for _ in given:
                    dropped("keyvalue_bad_key")
            continue
        kept: list[str] = []
        seen: set[str] = set()
        for raw in given:
            v = clean(raw)
            if dropped is not None and v != raw:
                dropped("keyvalue_bad_value" if v is None else "keyvalue_rewritten")
            if v is not None and v not in seen:
                seen.add(v)
                kept.append(v)
        if kept:
            out.append((key, kept))
    return out


def mapped_properties(
    mapping: Mapping[str, str], params: Params, prefix: str = ""
) -> dict[str, object]:
    """Play-event properties from a platform's parameters, as `mapping` names them:
    `{"vid": "video_id"}` renames one parameter, `{"_fw_content_*": "*"}` maps every parameter
    with that prefix to the rest of its name. `prefix` is put before each parameter's name
    first (`cust_params.` for GAM's key-values). A repeated parameter gives a list; values
    stay text (the enricher types them as `[events.properties]` says)."""
    out: dict[str, object] = {}
    n = len(prefix)
    for source, prop in mapping.items():
        if not n:
            name = source
        elif source.startswith(prefix):
            name = source[n:]
        else:
            continue
        if name not in params and name[-1:] != "*":  # the usual: a parameter not sent
            continue
        if name.endswith("*"):
            stem = name[:-1]
            for found in params:
                if found.startswith(stem) and len(found) > len(stem):
                    target = prop.replace("*", found[len(stem) :])
                    value = _values(params, found)
                    if value is not None:
                        out.setdefault(target, value)
        else:
            value = _values(params, name)
            if value is not None:
                out[prop] = value
    return out


def _values(params: Params, name: str) -> str | list[str] | None:
    if name not in params.repeats:
        raw = params.get(name)
        return None if raw is None else text(raw)
    raws = params.every(name)
    if len(raws) == 1:
        return text(raws[0])
    values = [v for v in (text(r) for r in raws) if v is not None]
    return values or None
