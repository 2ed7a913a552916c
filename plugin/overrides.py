"""What a caller says on top of an ad request, made a `Context` by one set of rules.

A caller can say who the user is, its consent decision, the content and the ids of a view, on
three ways in: the proxy's reserved `cohortkv_*` parameters and `X-Cohortkv-*` headers (read by
`plugin.reserved`), the JSON API's `context` member, and the flags of `cohortkv enrich`. Each
is turned into the same `Context` here, by the same rules: a user id is a UUIDv4; an alias is a
tag and an id (several need distinct priorities); a user id with an alias is one identity too
many; consent is `granted` or `denied`. Every mistake goes to one callback, `Report`: the proxy
counts it and leaves the value out (a viewer's ad request still goes out), the JSON API answers
400 naming each field, the command line exits 2 naming the flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import msgspec

import plugin.reserved as rp
from plugin.body_types import FieldError
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity, IdentityError, parse_alias_flag
from plugin.json_depth import too_deep
from plugin.signals.events import without_nulls

if TYPE_CHECKING:  # the JSON API's body types: annotations only, the core imports no serve module
    from plugin.serve.bodies import ConsentBody, ContextBody, IdentityBody


class Mistake(NamedTuple):
    kind: str
    """What was wrong (the `kind` of `cohortkv_bad_input_total`): `user_id`, `alias`,
    `identity`, `consent`, `conflict`, `encoding`, `properties`."""
    field: str
    """Where, as the caller wrote it: `cohortkv_uid`, `context.identity.user_id`, `--user-id`."""
    expected: str


Report = Callable[[Mistake], None]
Where = Callable[[str], str]
"""An identity field as `Identity.validate` names it (`identity.user_id`, `identity.alias.tag`,
...) → where the caller wrote it."""


class Headers(Protocol):
    """The request headers, as aiohttp and multidict give them."""

    def getall(self, key: str, default: Sequence[str]) -> Sequence[str]: ...
    def get(self, key: str) -> str | None: ...
    def __contains__(self, key: object) -> bool: ...


# -- the rules --------------------------------------------------------------------------------


def identity_of(
    user_id: str | None,
    alias: Alias | None,
    aliases: Sequence[Alias] | None,
    where: Where,
    report: Report,
) -> Identity | None:
    """The identity a caller gave, in one of the CCS API's forms; None for none, or a mistake
    (reported). Several aliases need distinct priorities, each one checked."""
    if user_id is None and alias is None and aliases is None:
        return None
    if aliases is not None:
        seen: set[int] = set()
        for i, a in enumerate(aliases):
            if a.priority is None or a.priority < 0 or a.priority in seen:
                field = where(f"identity.aliases[{i}].priority")
                report(Mistake("alias", field, "an integer >= 0, unique"))
            else:
                seen.add(a.priority)
        if len(seen) < len(aliases):
            return None
    identity = Identity(
        user_id=user_id, alias=alias, aliases=tuple(aliases) if aliases is not None else None
    )
    try:
        return identity.validate()
    except IdentityError as e:
        kind = "user_id" if "user_id" in e.field else "alias" if "alias" in e.field else "identity"
        report(Mistake(kind, where(e.field), e.expected))
        return None


def consent_word(word: str | None, field: str, report: Report) -> bool | None:
    """`granted` (or true, 1, yes) is True, `denied` (or false, 0, no) False, nothing None."""
    if word is None:
        return None
    w = word.strip().lower()
    if w in rp.GRANTED:
        return True
    if w in rp.DENIED:
        return False
    report(Mistake("consent", field, "granted or denied"))
    return None


# -- the proxy: reserved parameters and headers -----------------------------------------------

OUR_HEADERS = (*rp.HEADERS.values(), rp.PROPERTIES_HEADER)


def from_reserved(headers: Headers, found: Mapping[str, str], report: Report) -> Context | None:
    """What the `X-Cohortkv-*` headers and the reserved parameters `found` say (None: nothing).
    A header wins over its parameter, except for consent: a denial in either wins, and a name
    given twice differently is a conflict (for consent, a denial; for anything else, left
    out)."""
    if not found and not any(name in headers for name in OUR_HEADERS):
        return None

    def value(param: str) -> str | None:
        given = headers.getall(rp.HEADERS[param], ())
        return rp.pick(given, found.get(param), param, _reporting(param, report))

    consent = rp.override(value(rp.CONSENT), found.get(rp.CONSENT), _reporting(rp.CONSENT, report))
    alias = None
    alias_text = value(rp.ALIAS)
    if alias_text is not None:
        try:
            a = parse_alias_flag(alias_text)
            alias = Alias(tag=a.tag, id=a.id)
        except IdentityError as e:
            report(Mistake("alias", rp.ALIAS, e.expected))
    identity = None
    if alias_text is None or alias is not None:
        identity = identity_of(value(rp.USER_ID), alias, None, _reserved_field, report)
    props = _header_properties(headers.get(rp.PROPERTIES_HEADER), report)
    props.update(rp.param_properties(dict(found)))
    content = Content(
        url=value(rp.CONTENT_URL), properties=props, client_type=value(rp.CLIENT_TYPE)
    )
    return Context(
        identity=identity,
        consent=ConsentSignals(override=consent),
        content=content,
        view_id=value(rp.VIEW_ID),
        ssai_session_id=value(rp.SESSION_ID),
    )


def from_params(found: Mapping[str, str], report: Report) -> Context:
    """What the reserved parameters of a URL say, no headers (`Enricher.enrich`, the client
    middleware, `/v1/enrich`, `cohortkv enrich`: the host's context goes on top,
    `plugin.reserved.under`)."""
    return from_reserved(_NO_HEADERS, found, report) or Context()


class _NoHeaders:
    def getall(self, key: str, default: Sequence[str]) -> Sequence[str]:
        return default

    def get(self, key: str) -> str | None:
        return None

    def __contains__(self, key: object) -> bool:
        return False


_NO_HEADERS = _NoHeaders()


def _reporting(param: str, report: Report) -> rp.BadInput:
    """`plugin.reserved`'s callback (a kind) as a mistake at `param`."""
    return lambda kind: report(Mistake(kind, param, _EXPECTED.get(kind, "a usable value")))


_EXPECTED = {
    "conflict": "one value, not two different ones",
    "encoding": "UTF-8 text",
    "consent": "granted or denied (or true/false, 1/0, yes/no)",
}


def _reserved_field(field: str) -> str:
    return rp.USER_ID if "user_id" in field else rp.ALIAS if "alias" in field else rp.USER_ID


def _header_properties(header: str | None, report: Report) -> dict[str, Any]:
    """Play-event properties from `X-Cohortkv-Properties`, a JSON object (the `cohortkv_p.*`
    parameters go on top). A header that is not one is reported and left out."""
    if header is None or not header:
        return {}
    if not rp.is_text(header):
        report(Mistake("encoding", rp.PROPERTIES_HEADER, "UTF-8 text"))
        return {}
    raw = header.encode()
    try:
        doc = None if too_deep(raw) else _decode_json(raw)
    except (msgspec.DecodeError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        return doc
    report(Mistake("properties", rp.PROPERTIES_HEADER, "a JSON object"))
    return {}


_decode_json = msgspec.json.Decoder().decode


# -- the JSON API: a body's `context` -----------------------------------------------------------


def from_body(b: ContextBody | None, path: str, report: Report) -> Context | None:
    """A JSON body's `context` member (at `path`)."""
    if b is None:
        return None
    identity = None
    if b.identity is not None:
        identity = body_identity(b.identity, f"{path}.identity", report)
    content = Content()
    if b.content is not None:
        c = b.content
        errors: list[FieldError] = []
        props = without_nulls(c.properties, f"{path}.content.properties", errors)
        for e in errors:
            report(Mistake("properties", e.field, e.expected))
        content = Content(
            url=c.url,
            properties=props,
            title=c.title,
            client_type=c.client_type,
        )
    return Context(
        identity=identity,
        consent=body_signals(b.consent, f"{path}.consent", report),
        content=content,
        session_id=b.session_id,
        view_id=b.view_id,
        ssai_session_id=b.ssai_session_id,
    )


def body_identity(b: IdentityBody, path: str, report: Report) -> Identity | None:
    """A JSON body's `identity` member (at `path`)."""
    aliases = None
    if b.aliases is not None:
        aliases = [Alias(a.tag, a.id, a.priority) for a in b.aliases]
    alias = Alias(b.alias.tag, b.alias.id) if b.alias is not None else None
    return identity_of(
        b.user_id, alias, aliases, lambda f: path + f.removeprefix("identity"), report
    )


def body_signals(b: ConsentBody | None, path: str, report: Report) -> ConsentSignals:
    """A JSON body's `consent` member: the host's decision (`granted`), or the raw signals."""
    if b is None:
        return ConsentSignals()
    raw = ConsentSignals(
        gdpr=b.gdpr,
        tc_string=b.tc_string,
        us_privacy=b.us_privacy,
        gpp=b.gpp,
        gpp_sid=tuple(b.gpp_sid) if b.gpp_sid is not None else None,
    )
    if b.granted is None:
        return raw
    if not raw.is_empty():
        expected = "either granted, or raw signals (gdpr, tc_string, ...), not both"
        report(Mistake("consent", path, expected))
    return ConsentSignals(override=b.granted)


# -- the command line ---------------------------------------------------------------------------


def from_flags(
    user_id: str | None,
    aliases: Sequence[str],
    consent: str | None,
    content_url: str | None,
    report: Report,
) -> Context | None:
    """`cohortkv enrich`'s `--user-id`, `--alias` (repeated), `--consent` and `--content-url`;
    `consent` None or `auto`: the ad request's own signals decide."""
    alias = None
    several = None
    parsed: list[Alias] = []
    for text in aliases:
        try:
            parsed.append(parse_alias_flag(text))
        except IdentityError as e:
            report(Mistake("alias", "--alias", e.expected))
            return None
    if len(parsed) == 1 and parsed[0].priority is None:
        alias = parsed[0]
    elif parsed:
        if any(a.priority is None for a in parsed):
            report(Mistake("alias", "--alias", "TAG:ID:PRIORITY for each one of several aliases"))
            return None
        several = parsed
    identity = identity_of(user_id, alias, several, _flag, report)
    decided = None if consent in (None, "auto") else consent_word(consent, "--consent", report)
    context = Context(
        identity=identity,
        consent=ConsentSignals(override=decided),
        content=Content(url=content_url or None),
    )
    return None if context == Context() else context


def _flag(field: str) -> str:
    return "--user-id" if "user_id" in field else "--alias" if "alias" in field else "--user-id"
