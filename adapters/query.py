"""Plain query key-values: SpringServe-style VAST tags, custom ad servers, test ad servers.

Any http(s) URL looks like one of these, so this adapter never claims a request by itself
(`auto_detect` is off): it is used when an upstream (`[serve.upstreams.NAME] platform =
"query"`) or a caller (`--platform query`, `platform="query"`) names it.

Writing: each key-value is one plain parameter holding a list, `permutive=1,2&prmtvctx=c1`. A
parameter already in the query (a template's empty `permutive=`, or an earlier pass) gets our
new values appended to its list in place, values it already has are not repeated; otherwise it
is appended at the end of the query, before any `#fragment`. No other byte of the URL changes.
`separator` joins the values (`,` by default), `prefix` goes before each key's name, and `names`
gives single keys a parameter name of their own (`{permutive = "aud"}`, no prefix added). A
value holding the separator cannot be carried in the list and is dropped, and a key whose
parameter this adapter reads (consent, identity, content) is never written: our own output
must not change what the next read says.

Parsing (names configurable in `[adapters.query]`):
- identity: `ifa` typed by `ifa_type` (the IAB CTV macro names; `params.DEVICE_ID_TAGS`, e.g.
  `rida`, `aaid`, `tifa`; an id without a usable type, or of type `sessionid`, is not used),
  dropped when `lmt=1` or `is_lat=1` (any copy, any case) or all zeros; then each `aliases`
  parameter (default `uid` as alias tag `uid`), in that order of priority. An id whose
  parameters (or copies) disagree names nobody;
- consent: `gdpr`, `gdpr_consent`, `us_privacy`, `gpp`, `gpp_sid`; a parameter whose copies
  disagree (in any letter case) is a conflict and denies; `coppa=1` in any copy and any case is
  a child flag and denies outright, whatever the host says;
- content: the first of `content_url`, `url`, `description_url` (decoded twice when a player
  encoded it twice), else the content id `content_id` as `query://content/{id}`; play-event
  properties through the `properties` mapping (default: the `content_*` parameters named
  after OpenRTB's content fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

import msgspec

from adapters.base import (
    AdapterSettings,
    ContentId,
    ErrorHook,
    Example,
    KeyName,
    KeyValuesIn,
    SplitUrl,
    UrlAdapter,
)
from adapters.params import (
    SignalReader,
    content_url,
    decode,
    device_id,
    device_tag,
    drop_fields,
    encodable,
    encode,
    find_param,
    first_params,
    identity_of,
    mapped_properties,
    sanitise,
    text,
)
from plugin.context import Content, Context
from plugin.identity import Alias
from plugin.request import AdRequest, KeyValues

ParamName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.~\-]+$")
]
"""A parameter name made of characters that need no percent-encoding: raw and decoded agree."""
Prefix = Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[A-Za-z0-9_.~\-]*$")]
Separator = Annotated[str, msgspec.Meta(pattern=r"^[,;|:!*^]$")]
"""One character that ad servers split lists on and that never needs encoding in a query."""

GDPR, TC_STRING, US_PRIVACY, GPP, GPP_SID, COPPA = (
    "gdpr",
    "gdpr_consent",
    "us_privacy",
    "gpp",
    "gpp_sid",
    "coppa",
)
CONSENT_PARAMS = (GDPR, TC_STRING, US_PRIVACY, GPP, GPP_SID, COPPA)

_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")
"""Spaces and control characters: no request line carries them raw."""


def _default_aliases() -> dict[str, str]:
    return {"uid": "uid"}


class QuerySettings(AdapterSettings, frozen=True):
    """`[adapters.query]`."""

    separator: Separator = ","
    """Joins the values of one key: `permutive=1,2`."""
    prefix: Prefix = ""
    """Put before each key's name (`kv_` gives `kv_permutive=1,2`)."""
    names: dict[KeyName, ParamName] = {}
    """Our key → the parameter it is written as (no prefix added), for the keys an ad server
    names differently."""
    device_id: tuple[ParamName, ...] = ("ifa",)
    """Parameters holding the device's advertising id (when several are present they must
    agree, else no device id is used)."""
    device_id_type: tuple[ParamName, ...] = ("ifa_type",)
    """Parameters holding its type (`aaid`, `idfa`, `rida`, `tifa`, ...)."""
    limit_ad_tracking: tuple[ParamName, ...] = ("lmt", "is_lat")
    """Flags that, set in any copy, keep the device id out of the identity."""
    aliases: dict[ParamName, KeyName] = msgspec.field(default_factory=_default_aliases)
    """Parameter → Permutive alias tag, for the publisher's own ids (after the device id)."""
    content_url: tuple[ParamName, ...] = ("content_url", "url", "description_url")
    """Parameters holding the content's URL, the first one present wins."""

    def __post_init__(self) -> None:
        read = self.read_params()
        for key, param in self.names.items():
            if param in read:
                raise ValueError(
                    f"names.{key}: {param!r} is a parameter this adapter reads "
                    "(consent, identity or content); choose another name"
                )

    def read_params(self) -> frozenset[str]:
        """The parameters read for consent, identity and content: never written."""
        return frozenset(
            (
                *CONSENT_PARAMS,
                *self.device_id,
                *self.device_id_type,
                *self.limit_ad_tracking,
                *self.aliases,
                *self.content_url,
            )
        )


def valid_key(key: object) -> bool:
    return isinstance(key, str) and bool(key.strip()) and encodable(key)


def is_http_url(url: str) -> bool:
    """An absolute http(s) URL with a host, that could be sent as it is."""
    if not url[:8].lower().startswith(("http://", "https://")) or not encodable(url):
        return False
    if _UNSENDABLE.search(url) is not None:
        return False
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:  # a malformed authority, `http://[::1`
        return False


class QueryAdapter(UrlAdapter):
    name = "query"
    label = "query"
    shape = "GET ...?key=value... of any VAST ad server, when an upstream names platform query"
    Settings = QuerySettings
    auto_detect = False
    default_properties: ClassVar[Mapping[str, str]] = {
        "content_id": "video_id",
        "content_title": "title",
        "content_series": "series",
        "content_season": "season",
        "content_episode": "episode",
        "content_genre": "genre",
        "content_cat": "categories",
        "content_len": "duration_seconds",
    }
    default_content_ids = (ContentId("content_id", "content"),)

    def __init__(
        self, settings: AdapterSettings | None = None, *, on_error: ErrorHook | None = None
    ) -> None:
        super().__init__(settings, on_error=on_error)
        s = settings if isinstance(settings, QuerySettings) else QuerySettings()
        self.separator = s.separator
        self.prefix = s.prefix
        self.names: Mapping[str, str] = dict(s.names)
        self.device_id = s.device_id
        self.device_id_type = s.device_id_type
        self.limit_ad_tracking = s.limit_ad_tracking
        self.aliases: Mapping[str, str] = dict(s.aliases)
        self.content_url = s.content_url
        self.reserved = s.read_params()
        """Parameters this adapter reads: never written, whatever the key-values say."""

    def param_name(self, key: str) -> str:
        """The (raw, already encoded) parameter a key is written as."""
        renamed = self.names.get(key)
        return renamed if renamed is not None else self.prefix + encode(key)

    def _key_ok(self, key: object) -> bool:
        return (
            isinstance(key, str)
            and valid_key(key)
            and decode(self.param_name(key), plus=False) not in self.reserved
        )

    def _clean_value(self, value: object) -> str | None:
        if not isinstance(value, str) or not value or self.separator in value:
            return None
        return value if encodable(value) else None

    @classmethod
    def example(cls, e: Example) -> AdRequest:
        return AdRequest(
            f"https://vast.example.com/ads?ifa={e.device_id}&ifa_type={e.device_tag}&lmt=0"
            f"&gdpr=1&gdpr_consent={e.tc_string}&content_url={encode(e.content_url)}"
            f"&content_id={e.video_id}&content_len={e.duration_s}&pod={e.slot}&cb={e.correlator}"
        )

    def _url_unrecognised(self, split: SplitUrl) -> str | None:
        return None if is_http_url(split.url) else "url"

    def _parse_url(self, split: SplitUrl) -> Context:
        p = first_params(split.query or "")

        def first(names: tuple[str, ...]) -> str | None:
            for name in names:
                raw = p.get(name)
                if text(raw) is not None:
                    return raw
            return None

        reader = SignalReader(p)
        aliases: list[Alias] = []
        ifa = device_id(reader.same(*self.device_id))
        tag = device_tag(text(reader.same(*self.device_id_type)))
        lat = reader.any_set(*self.limit_ad_tracking) is True
        if ifa is not None and tag is not None and not lat:
            aliases.append(Alias(tag=tag, id=ifa))
        for param, alias_tag in self.aliases.items():
            ident = device_id(reader.same(param))
            if ident is not None:
                aliases.append(Alias(tag=alias_tag, id=ident))

        consent = reader.signals(
            gdpr=(GDPR,),
            tc_string=(TC_STRING,),
            us_privacy=(US_PRIVACY,),
            gpp=(GPP,),
            gpp_sid=(GPP_SID,),
            child_directed=(COPPA,),
        )
        return Context(
            identity=identity_of(aliases),
            consent=consent,
            content=Content(
                url=content_url(first(self.content_url)),
                properties=mapped_properties(self.properties, p),
            ),
            limit_ad_tracking=lat,
        )

    def _strip_query(self, query: str, keys: frozenset[str]) -> tuple[str, int]:
        names = {decode(self.param_name(k), plus=False).lower() for k in keys}
        return drop_fields(query, names)

    def _apply_url(self, split: SplitUrl, keyvalues: KeyValuesIn) -> tuple[str, KeyValues]:
        url, base, query, fragment = split
        ours = sanitise(keyvalues, self._key_ok, self._clean_value, self._skipped)
        if not ours:
            return url, {}
        q = "" if query is None else query
        sep = self.separator

        inserts: list[tuple[int, str]] = []  # (position in q, text) for parameters already there
        tail: list[str] = []  # new parameters
        written: KeyValues = {}
        for key, values in ours:
            name = self.param_name(key)
            bounds = find_param(q, name)
            if bounds is None:
                tail.append(f"{name}={sep.join(encode(v) for v in values)}")
                written[key] = list(values)
                continue
            start, end = bounds
            value_at = start + len(name)
            raw = q[value_at + 1 : end] if value_at < end else ""
            seen = set(decode(raw).split(sep)) if raw else set()
            fresh = [v for v in values if v not in seen]
            if not fresh:
                continue
            written[key] = fresh
            lead = sep if raw else ("" if value_at < end else "=")
            inserts.append((end, lead + sep.join(encode(v) for v in fresh)))
        if not written:
            return url, {}

        for at, insert in sorted(inserts, reverse=True):
            q = q[:at] + insert + q[at:]
        if tail:
            q += ("&" if q else "") + "&".join(tail)
        return f"{base}?{q}{fragment}", written
