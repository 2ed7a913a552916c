"""Reserved `cohortkv_*` query parameters: read, then removed before the ad server sees the URL.

An SSAI stitcher's URL template can only add query parameters (MediaTailor:
`&cohortkv_sid=[session.id]`), so cohortkv takes these out of the query itself, on every way in:
the sidecar's proxy, `/v1/enrich`, the client middleware and `Enricher.enrich`. Removal is
byte-precise: the query is split on `;` (FreeWheel sections) and each section on `&`; reserved
fields are dropped and everything else is joined back with the separators it had, so no other
byte moves. A section left empty stays (`a;cohortkv_sid=1;b` → `a;;b`): FreeWheel sections are
positional.

A name is reserved whatever its spelling, as a lenient reader would take it (`lenient_name`):
percent-encoded once or twice (`cohortkv%5Fuid`, `%63ohortkv_uid`, `%2563ohortkv_uid`), in any
ASCII case (`COHORTKV_CONSENT`), with whitespace, `+` or NUL around it or NUL inside it
(`+cohortkv_uid`, `%20cohortkv_uid`, `cohortkv%00_uid`). A parameter whose value is itself
URL-encoded key-values (GAM's `cust_params`: `a%3D1%26cohortkv_uid%3D...`) has its reserved
fields read and removed the same way. The cheap scan that decides whether a query needs the
full decode (`may_hold_reserved`, about a microsecond on an ad request) cannot miss one: such a
name either shows `cohortkv` in some case, or encodes one of its characters, `%` or NUL, and so
holds one of their few percent-encodings or a NUL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

import msgspec

from plugin.context import Content, Context

PREFIX = "cohortkv_"
CONFLICT = "\x00conflict"
"""The value of a reserved name given twice with different values: the caller reads it as a
conflict (for consent, a denial), never as either value."""
_ENCODED = re.compile(r"%(?:[46][38BbFf]|[57][246]|5[Ff]|25|00)")
"""The percent-encoding of a character of `cohortkv_`, in either case (`%63` c, `%4B` K, `%5F` _,
...), of `%` (a second encoding) or of NUL: a name that hides the prefix holds one, or a NUL.
The pattern starts with its literal `%`, which the regex engine scans for at C speed (with a
NUL alternative it tries every position: three times slower on an ad request)."""
_TRIM = " \t\n\r\f\v+"
"""What a lenient reader trims around a name (a `+` is a space in a query)."""
_NESTED_SEP = re.compile("(%26)", re.IGNORECASE)
_NESTED_EQ = re.compile("%3D|=", re.IGNORECASE)

# Query parameter → what it carries. Request headers of the same meaning win over these, except
# that any consent denial wins (`plugin.overrides`).
SESSION_ID = "cohortkv_sid"
USER_ID = "cohortkv_uid"
ALIAS = "cohortkv_alias"
CONSENT = "cohortkv_consent"
CONTENT_URL = "cohortkv_content_url"
VIEW_ID = "cohortkv_vid"
CLIENT_TYPE = "cohortkv_client_type"
PROPERTY_PREFIX = "cohortkv_p."
"""`cohortkv_p.<name>=<value>`: a play-event property (typed by `[events.properties]`)."""

PARAMS: tuple[str, ...] = (
    SESSION_ID,
    USER_ID,
    ALIAS,
    CONSENT,
    CONTENT_URL,
    VIEW_ID,
    CLIENT_TYPE,
)
_KNOWN = frozenset(p[len(PREFIX) :] for p in PARAMS)

HEADERS: dict[str, str] = {
    SESSION_ID: "X-Cohortkv-Session-Id",
    USER_ID: "X-Cohortkv-User-Id",
    ALIAS: "X-Cohortkv-Alias",
    CONSENT: "X-Cohortkv-Consent",
    CONTENT_URL: "X-Cohortkv-Content-Url",
    VIEW_ID: "X-Cohortkv-View-Id",
    CLIENT_TYPE: "X-Cohortkv-Client-Type",
}
PROPERTIES_HEADER = "X-Cohortkv-Properties"
"""A JSON object of play-event properties; the `cohortkv_p.*` parameters win over it."""

GRANTED = frozenset({"granted", "true", "1", "yes"})
DENIED = frozenset({"denied", "false", "0", "no"})

BadInput = Callable[[str], None]
"""Counts one unusable value, by kind (`conflict`, `user_id`, `alias`, `consent`, ...)."""


def may_hold_reserved(text: str) -> bool:
    """False only when no field of `text` can be a reserved name, however spelled."""
    return "cohortkv" in text.lower() or "\x00" in text or _ENCODED.search(text) is not None


def reserved_name(name: str) -> str | None:
    """The canonical reserved name `name` spells (already percent-decoded), or None.

    The prefix and the known names match in any ASCII case; a property keeps its own name's
    case (`cohortkv_P.Title` is property `Title`).
    """
    head = name[: len(PREFIX)]
    if not head.isascii() or head.lower() != PREFIX:
        return None
    rest = name[len(PREFIX) :]
    if rest.lower() in _KNOWN:
        return PREFIX + rest.lower()
    if rest[:2].lower() == "p.":
        return PROPERTY_PREFIX + rest[2:]
    return PREFIX + rest


def lenient_name(name: str) -> str | None:
    """The canonical reserved name raw query name `name` spells under any decoding a lenient
    reader applies (percent-decoded once, as written, or decoded twice; NUL removed, whitespace
    and `+` trimmed; ASCII case folded), or None. Fail closed: one reading that is reserved
    makes the name reserved."""
    once = unquote(name, errors="replace") if "%" in name else name
    spellings = (once, name, unquote(once, errors="replace")) if "%" in once else (once, name)
    for spelling in spellings:
        canonical = reserved_name(spelling.replace("\x00", "").strip(_TRIM))
        if canonical is not None:
            return canonical
    return None


def _found(found: dict[str, str], canonical: str, value: str) -> None:
    if canonical not in found:
        found[canonical] = value
    elif found[canonical] != value:
        found[canonical] = CONFLICT


def _split_nested(value: str, found: dict[str, str]) -> str:
    """A parameter value that is itself URL-encoded key-values (`a%3D1%26cohortkv_uid%3Dx`),
    without its reserved fields (read into `found`); separators kept byte for byte."""
    parts = _NESTED_SEP.split(value)  # piece, separator, piece, ...
    out: list[str] = []
    for i in range(0, len(parts), 2):
        piece = parts[i]
        eq = _NESTED_EQ.search(piece)
        name, raw = (piece[: eq.start()], piece[eq.end() :]) if eq else (piece, "")
        canonical = lenient_name(unquote(name, errors="replace"))
        if canonical is None:
            out.extend((parts[i - 1], piece) if out else (piece,))
            continue
        _found(found, canonical, unquote(unquote(raw, errors="replace"), errors="replace"))
    return "".join(out)


def _split_section(section: str, found: dict[str, str]) -> str:
    kept = []
    for field in section.split("&"):
        name, eq, value = field.partition("=")
        canonical = lenient_name(name)
        if canonical is not None:
            _found(found, canonical, unquote(value, errors="replace"))
            continue
        if "%" in value and may_hold_reserved(value) and _NESTED_EQ.search(value):
            nested = _split_nested(value, found)
            if nested != value:
                field = name + eq + nested
        kept.append(field)
    return "&".join(kept)


def split_reserved(query: str) -> tuple[str, dict[str, str]]:
    """The query without reserved fields, and those fields' percent-decoded values by canonical
    name.

    Every field whose name a lenient reader takes for one starting with `cohortkv_`
    (`lenient_name`) is removed, known or not: the prefix is ours. So is every such field
    inside a value that is itself URL-encoded key-values (GAM's `cust_params`). A name given
    twice with different values reads as `CONFLICT`. Never raises.
    """
    if not may_hold_reserved(query):
        return query, {}
    found: dict[str, str] = {}
    sections = query.split(";")
    for i, section in enumerate(sections):
        if may_hold_reserved(section):
            sections[i] = _split_section(section, found)
    return ";".join(sections), found


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """`url` without reserved query fields (the same string when it has none), and their
    values. The fragment is left as it is; a query left empty loses its `?`."""
    head, sep, query = url.partition("?")
    if not sep or not may_hold_reserved(query):
        return url, {}
    query, hash_, fragment = query.partition("#")
    query, found = split_reserved(query)
    if not found:
        return url, {}
    return head + ("?" + query if query else "") + hash_ + fragment, found


def pick(given: Sequence[str], param: str | None, name: str, bad: BadInput) -> str | None:
    """The value to use for reserved `name`: the header's (`given`: every copy of it), else the
    parameter's. A value given twice differently is a conflict: for consent `CONFLICT`, for
    any other name nothing. Values that are not text (bytes that are not UTF-8 arrive as
    surrogates) are not used."""
    value = (given[0] if len(set(given)) == 1 else CONFLICT) if given else param
    if value == CONFLICT:
        bad("conflict")
        return CONFLICT if name == CONSENT else None
    if value is None:
        return None
    if not is_text(value):
        bad("encoding")
        return None
    return value.strip() or None


def is_text(value: str) -> bool:
    """Whether a header or parameter value is text: bytes that are not UTF-8 arrive as
    surrogates."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def override(said: str | None, param: str | None, bad: BadInput) -> bool | None:
    """The caller's consent override from the value `pick` chose and the parameter itself. It
    may always deny: given twice with different values, or by the header and the parameter
    differently, the denial wins."""
    if said == CONFLICT:
        return False
    words = [w.strip().lower() for w in (said, param) if w is not None and w != CONFLICT]
    if param == CONFLICT or any(w in DENIED for w in words):
        return False
    if not words:
        return None
    if all(w in GRANTED for w in words):
        return True
    bad("consent")
    return None


def param_properties(found: dict[str, str]) -> dict[str, Any]:
    """Play-event properties from the `cohortkv_p.<name>` parameters."""
    return {
        name[len(PROPERTY_PREFIX) :]: value
        for name, value in found.items()
        if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX)
    }


def under(host: Context | None, params: Context) -> Context:
    """The host's context over what the URL's reserved parameters say: each field the host set
    wins, except consent, where a denial from either wins (the URL's override can deny, never
    upgrade the host's)."""
    if host is None:
        return params
    said = (host.consent.override, params.consent.override)
    decided = False if False in said else (said[0] if said[0] is not None else said[1])
    h, p = host.content, params.content
    return Context(
        identity=host.identity or params.identity,
        consent=msgspec.structs.replace(host.consent, override=decided),
        content=Content(
            url=h.url or p.url,
            properties={**p.properties, **h.properties},
            title=h.title,
            client_type=h.client_type or p.client_type,
        ),
        session_id=host.session_id,
        view_id=host.view_id or params.view_id,
        ssai_session_id=host.ssai_session_id or params.ssai_session_id,
        limit_ad_tracking=host.limit_ad_tracking,
    )
