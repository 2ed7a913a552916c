"""Google Ad Manager VAST ad tags (`/gampad/ads`, `/gampad/live/ads`, any host).

Key-values all live in the one `cust_params` parameter: `k=v1,v2&k2=v3` encoded once
(`=`→`%3D`, `&`→`%26`, `,`→`%2C`). Ours are spliced into it: existing entries stay byte for
byte, a value for a key already present is appended to that key's entry (`%2C<value>`) unless
the key already has it, new keys are appended (`%26<key>%3D<values>`). Without `cust_params`
one is appended at the end of the query, before any `#fragment`. No other byte of the URL moves.

GAM limits: keys ≤ 20 characters, values ≤ 40. Characters GAM forbids in values
(`" ' = ! + # * ~ ; ^ ( ) < > [ ] , &`, whitespace, other non-printables) are removed from our
values; a value left empty or too long is dropped, never truncated; an invalid key is dropped
with its values. The whole URL is kept within `max_url_length` by dropping our values from the
end (the last key's last value first), never anything that was already there. Each of our
values dropped or rewritten is told to `on_skip` (`keyvalue_*` reasons).

Parsing: `ppid` (alias `ppid`, priority 0) and `rdid` + `idtype` (priority 1; tag from
`params.DEVICE_ID_TAGS`, e.g. `adid`→`aaid`); `is_lat=1` or an all-zero id drops the device id,
and an id repeated with two different values names nobody.
Consent: `gdpr`, `gdpr_consent`, `us_privacy`, `gpp`, `gpp_sid`; `tfcd` (child-directed) or
`tfua` (under the age of consent) set to 1 is a child flag, and `rdp`, `npa` or `ltd`
(restricted processing, non-personalised or limited ads) restrict data use: both deny outright,
whatever else the request or the host says. A consent parameter repeated with different values
is a conflict, which denies too; a repeated flag counts when any copy sets it. Privacy
parameters are read in any letter case (`TFCD=1`) and inside `cust_params` too: a flag there
denies, and a consent value there that disagrees with the query's is a conflict.
Content: `description_url` (else `url`) as the content URL, decoded twice if a player encoded
it twice; `vid` → `video_id`, `cmsid` → `cms_id`. Without a content URL the video id is the
content: `gam://{cmsid}/{vid}` (`gam://video/{vid}` without `cmsid`). The stream correlator
`scor` (constant for one video stream) is the view id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec

from adapters.base import (
    AdapterSettings,
    ContentId,
    ErrorHook,
    Example,
    KeyValuesIn,
    SplitUrl,
    UrlAdapter,
)
from adapters.params import (
    Dropped,
    Params,
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
    keep,
    mapped_properties,
    sanitise,
    text,
    url_path,
)
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias
from plugin.request import AdRequest, KeyValues

DEFAULT_ACTIVATION_PLATFORMS: tuple[str, ...] = ("dfp", "gam", "target_dfp")
MAX_KEY_LENGTH = 20
MAX_VALUE_LENGTH = 40
FORBIDDEN_CHARS = frozenset("\"'=!+#*~;^()<>[],&")

_PARAM = "cust_params"
_CUST_PREFIX = _PARAM + "."
_AMP, _EQ, _COMMA = "%26", "%3D", "%2C"
_PATHS = ("/gampad/ads", "/gampad/live/ads")
_CHILD_FLAGS = ("tfcd", "tfua")
_RESTRICT_FLAGS = ("rdp", "npa", "ltd")
# What goes before the first value appended to an existing entry, by the entry's state:
# 0 `key` (no "="), 1 `key=` (no values yet), 2 `key=v…`.
_LEAD = (_EQ, "", _COMMA)


def clean_value(value: object) -> str | None:
    """Our value with GAM's forbidden characters removed; None when unusable."""
    if not isinstance(value, str):
        return None
    if not (value.isascii() and value.isalnum()):
        value = "".join(
            ch
            for ch in value
            if ch not in FORBIDDEN_CHARS and ch.isprintable() and not ch.isspace()
        )
    if not value or len(value) > MAX_VALUE_LENGTH:
        return None
    return value


def valid_key(key: object) -> bool:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        return False
    if key.isascii() and key.isalnum():
        return True
    return all(
        ch not in FORBIDDEN_CHARS and ch.isprintable() and not ch.isspace() for ch in key
    ) and encodable(key)


class GamSettings(AdapterSettings, frozen=True):
    """`[adapters.gam]`."""

    max_url_length: Annotated[int, msgspec.Meta(gt=0)] = 8000
    """Our cohorts are dropped (never truncated) to keep the whole tag within this."""


class GamAdapter(UrlAdapter):
    name = "gam"
    label = "GAM"
    shape = "GET .../gampad/ads?... or .../gampad/live/ads?... (Google Ad Manager VAST tag)"
    Settings = GamSettings
    default_activation_platforms = DEFAULT_ACTIVATION_PLATFORMS
    default_properties: ClassVar[Mapping[str, str]] = {
        "vid": "video_id",
        "cmsid": "cms_id",
        "cust_params.title": "title",
        "cust_params.categories": "categories",
    }
    default_content_ids = (ContentId("vid", "video", namespace_param="cmsid"),)

    def __init__(
        self, settings: AdapterSettings | None = None, *, on_error: ErrorHook | None = None
    ) -> None:
        super().__init__(settings, on_error=on_error)
        self.max_url_length = (
            settings.max_url_length
            if isinstance(settings, GamSettings)
            else GamSettings().max_url_length
        )
        self._cust_properties = any(k.startswith(_CUST_PREFIX) for k in self.properties)
        self._plans = RememberedPlans()
        self._cust = KnownCustParams()

    @classmethod
    def example(cls, e: Example) -> AdRequest:
        content_url = encode(e.content_url)
        return AdRequest(
            "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/ctv/"
            f"{e.section}&sz=1920x1080&gdfp_req=1&output=vast&env=vp&impl=s"
            f"&unviewed_position_start=1&vpos={e.slot}&vid={e.video_id}&cmsid=2553"
            f"&description_url={content_url}&rdid={e.device_id}&idtype={e.device_tag}"
            f"&is_lat=0&gdpr=1&gdpr_consent={e.tc_string}&cust_params=section%3D{e.section}"
            f"&correlator={e.correlator}"
        )

    def _url_unrecognised(self, split: SplitUrl) -> str | None:
        return None if url_path(split.base).endswith(_PATHS) else "path"

    def _parse_url(self, split: SplitUrl) -> Context:
        if split.query is None:
            return Context()
        p = first_params(split.query)
        every_raw = _cust_raws(p)
        every_cust = self._cust.params(every_raw)

        aliases: list[Alias] = []
        same = p.get if not p.repeats else SignalReader(p).same  # one copy: nothing to disagree
        ppid = device_id(same("ppid"))
        if ppid is not None:
            aliases.append(Alias(tag="ppid", id=ppid))
        rdid = device_id(same("rdid"))
        tag = device_tag(text(same("idtype")))
        privacy = SignalReader(p, every_cust)
        lat = privacy.any_set("is_lat") is True
        if rdid is not None and tag is not None and not lat:
            aliases.append(Alias(tag=tag, id=rdid))

        return Context(
            identity=identity_of(aliases),
            consent=_consent(privacy),
            content=self._content(p),
            view_id=text(p.get("scor")),
            limit_ad_tracking=lat,
        )

    def _content(self, p: Params) -> Content:
        """The content URL and the play event's properties (those in `cust_params` from its
        first copy only)."""
        props = mapped_properties(self.properties, p)
        if self._cust_properties and _PARAM in p:
            for name, value in self._cust.properties((p[_PARAM],), self.properties).items():
                props.setdefault(name, value)
        url = content_url(p.get("description_url")) or content_url(p.get("url"))
        return Content(url=url, properties=props)

    def _apply_url(self, split: SplitUrl, keyvalues: KeyValuesIn) -> tuple[str, KeyValues]:
        url, base, query, fragment = split
        q = "" if query is None else query
        bounds = find_param(q, _PARAM)
        if bounds is None:
            raw, value_at, end = "", -1, -1
        else:
            start, end = bounds
            value_at = start + len(_PARAM)
            raw = q[value_at + 1 : end] if value_at < end else ""
        plan = self._plans.plan(raw, keyvalues, self._skipped)
        if plan is None:
            return url, {}

        if bounds is None:  # "?" when there was no query, "&" when it was not empty
            extra = len(_PARAM) + 1 + (1 if query is None or q else 0)
        else:  # "=" after a bare "cust_params"
            extra = 0 if value_at < end else 1
        total = len(url) + extra + plan.cost
        if total <= self.max_url_length:
            raw, written = plan.raw, {key: list(values) for key, values in plan.written.items()}
        else:
            # Over the length budget: drop our values from the end, the last key's last first.
            items = list(plan.items)
            while items and total > self.max_url_length:
                total -= items.pop()[3]
                self._skipped("keyvalue_over_max_url_length")
            if not items:
                return url, {}
            raw, written = _assemble(items, plan.entries, plan.present)

        if bounds is None:
            amp = "&" if q else ""
            return f"{base}?{q}{amp}{_PARAM}={raw}{fragment}", written
        return f"{base}?{q[:value_at]}={raw}{q[end:]}{fragment}", written

    def _strip_query(self, query: str, keys: frozenset[str]) -> tuple[str, int]:
        fields = query.split("&")
        dropped = 0
        for i, field in enumerate(fields):  # every copy of `cust_params`, in any case
            name, eq, value = field.partition("=")
            if eq and decode(name).strip().lower() == _PARAM:
                value, n = drop_fields(value, keys, _AMP)
                if n:
                    fields[i], dropped = name + eq + value, dropped + n
        return ("&".join(fields), dropped) if dropped else (query, 0)


def _cust_raws(p: Params) -> tuple[str, ...]:
    """Every copy of `cust_params` (repeated, or in another letter case): privacy reads them
    all, since a deny flag in any of them is a denial a lenient reader could act on."""
    if not p.repeats and p.lowercase():  # the usual query: one copy at most, this spelling
        raw = p.get(_PARAM)
        return () if raw is None else (raw,)
    return (*p.every(_PARAM), *p.other_cases(_PARAM))


def _params(raws: tuple[str, ...]) -> Params:
    """The key-values inside these `cust_params` values, decoded."""
    return first_params("&".join(decode(raw) for raw in raws)) if raws else Params()


class KnownCustParams:
    """What the `cust_params` values lately seen say, by their raw values: a player sends the
    same `cust_params` with every ad break. `params` gives the key-values inside them (shared:
    nothing may change them), `properties` the play-event properties that a mapping (the
    adapter's) reads there, each kept with the mapping object it was read with."""

    __slots__ = ("_known", "_properties")
    MAX = 512
    MAX_LENGTH = 1024
    """Longer values are read every time."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, ...], Params] = {}
        self._properties: dict[tuple[str, ...], tuple[Mapping[str, str], dict[str, object]]]
        self._properties = {}

    def params(self, raws: tuple[str, ...]) -> Params:
        known = self._known.get(raws)
        if known is None:
            known = _params(raws)
            if raws and sum(map(len, raws)) <= self.MAX_LENGTH:
                keep(self._known, raws, known, self.MAX)
        return known

    def properties(self, raws: tuple[str, ...], mapping: Mapping[str, str]) -> Mapping[str, object]:
        known = self._properties.get(raws)
        if known is not None and known[0] is mapping:
            return known[1]
        inner = self.params(raws)
        found = mapped_properties(mapping, inner, _CUST_PREFIX)
        # kept when every value is text: a list (a repeated key) would be shared
        if not inner.repeats and raws and sum(map(len, raws)) <= self.MAX_LENGTH:
            keep(self._properties, raws, (mapping, found), self.MAX)
        return found


def _consent(privacy: SignalReader) -> ConsentSignals:
    return privacy.signals(
        gdpr=("gdpr",),
        tc_string=("gdpr_consent",),
        us_privacy=("us_privacy",),
        gpp=("gpp",),
        gpp_sid=("gpp_sid",),
        child_directed=_CHILD_FLAGS,
        restricted=_RESTRICT_FLAGS,
    )


class _Plan:
    """Our values as they go into one `cust_params` value, before the URL's length budget:
    `items` (key, value, encoded value, length it adds), the entries and keys already there,
    and the value with every item written (`raw`, `written`, `cost` = the length it adds)."""

    __slots__ = ("cost", "entries", "items", "present", "raw", "written")

    def __init__(
        self,
        items: list[tuple[str, str, str, int]],
        entries: list[str],
        present: dict[str, tuple[int, set[str], int]],
    ) -> None:
        self.items = items
        self.entries = entries
        self.present = present
        self.cost = sum(item[3] for item in items)
        self.raw, self.written = _assemble(items, entries, present)


class RememberedPlans:
    """The write plan of each (`cust_params` value, key-values) pair lately seen, with the
    reasons of what it dropped: a VAST tag's `cust_params` and a view's cohorts repeat from
    ad break to ad break, and planning (encoding every value, checking every key) is the
    adapter's dearest step. Keyed by what the plan is made of, never by the request: a hit is
    the plan `_make_plan` would make, and its drops are reported again, once per use."""

    __slots__ = ("_plans",)
    MAX = 2048

    def __init__(self) -> None:
        self._plans: dict[tuple[str, tuple[object, ...]], tuple[_Plan | None, tuple[str, ...]]]
        self._plans = {}

    def plan(self, raw: str, keyvalues: KeyValuesIn, dropped: Dropped) -> _Plan | None:
        key = (raw, tuple((k, v if isinstance(v, str) else tuple(v)) for k, v in keyvalues.items()))
        known = self._plans.get(key)
        if known is None:
            reasons: list[str] = []
            known = (_make_plan(raw, keyvalues, reasons.append), tuple(reasons))
            if len(self._plans) >= self.MAX:
                self._plans.clear()  # a burst of new pairs: start over rather than track age
            self._plans[key] = known
        for reason in known[1]:
            dropped(reason)
        return known[0]


def _make_plan(raw: str, keyvalues: KeyValuesIn, dropped: Dropped) -> _Plan | None:
    """`dropped` is told why each of our values was dropped or rewritten."""
    ours = sanitise(keyvalues, valid_key, clean_value, dropped)
    if not ours:
        return None
    entries = raw.split(_AMP)
    present = _present(entries)

    # One item per value to add, in the order of `keyvalues`: (key, value, encoded value,
    # length it adds to the URL with its separator). Dropping from the end keeps costs exact.
    items: list[tuple[str, str, str, int]] = []
    need_amp = bool(raw) and not raw.endswith(_AMP)
    for key, values in ours:
        found = present.get(key)
        if found is not None:
            _, seen, state = found
            lead = _LEAD[state]
            for n, v in enumerate(v for v in values if v not in seen):
                enc = encode(v)
                items.append((key, v, enc, len(_COMMA if n else lead) + len(enc)))
        else:
            head = len(_AMP if need_amp else "") + len(encode(key)) + len(_EQ)
            need_amp = True
            for n, v in enumerate(values):
                enc = encode(v)
                items.append((key, v, enc, (len(_COMMA) if n else head) + len(enc)))
    if not items:
        return None
    return _Plan(items, entries, present)


def _assemble(
    items: list[tuple[str, str, str, int]],
    entries: list[str],
    present: dict[str, tuple[int, set[str], int]],
) -> tuple[str, KeyValues]:
    """The new `cust_params` value with `items` written, and the key-values written."""
    kept: dict[str, list[str]] = {}
    written: KeyValues = {}
    for key, value, enc, _ in items:
        kept.setdefault(key, []).append(enc)
        written.setdefault(key, []).append(value)
    appended: dict[int, str] = {}
    tail: list[str] = []
    for key, encoded in kept.items():
        found = present.get(key)
        if found is None:
            tail.append(encode(key) + _EQ + _COMMA.join(encoded))
        else:
            idx, _, state = found
            appended[idx] = _LEAD[state] + _COMMA.join(encoded)
    raw = _AMP.join(entries)
    if appended:
        raw = _AMP.join(e + appended[i] if i in appended else e for i, e in enumerate(entries))
    if tail:
        raw += (_AMP if raw and not raw.endswith(_AMP) else "") + _AMP.join(tail)
    return raw, written


def _present(entries: list[str]) -> dict[str, tuple[int, set[str], int]]:
    """Decoded key → (index of its last entry, every value it has, that entry's state)."""
    present: dict[str, tuple[int, set[str], int]] = {}
    for i, entry in enumerate(entries):
        key, eq, vals = decode(entry).partition("=")
        state = 0 if not eq else (1 if not vals else 2)
        values = vals.split(",") if eq else []
        found = present.get(key)
        if found is None:
            present[key] = (i, set(values), state)
        else:
            found[1].update(values)
            present[key] = (i, found[1], state)
    return present
