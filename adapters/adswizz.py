"""AdsWizz ad requests (`/vast/{version}/request/…`, e.g. `/vast/4.0/request/alias/{zone}`, and
the legacy `afr.php`).

Custom targeting travels as query parameters prefixed `aw_0_1st.`, values as a comma list:
`aw_0_1st.permutive=1,2`. A parameter already there gets our new values appended (`,<value>`)
in place, values it already has are not repeated; otherwise it is appended at the end of the
query, before any `#fragment`. Those parameters are the only bytes that change. A value holding
a comma cannot be carried in the list and is dropped.

Parsing:
- identity: `aw_0_1st.ifa` typed by `aw_0_1st.ifaType` (`params.DEVICE_ID_TAGS`, e.g. `fireOS` →
  `afai`; without a type the id is not used), dropped when `aw_0_req.lmt=1` (or `lmt=1`) or
  all zeros, then
  the listener id (`listenerId`, `listenerid` or `aw_0_awz.listenerid`) under the tag
  `listener_id`. With both, the device id has priority 0: it reaches across apps, the listener id
  only across one publisher's players;
- consent: `aw_0_req.gdpr` or `gdpr`, `aw_0_req.userConsentV2` or `gdpr_consent` (TC string),
  `aw_0_req.usPrivacy` or `us_privacy`, `aw_0_req.gpp` or `gpp`, `aw_0_req.gppSid` /
  `aw_0_req.gpp_sid` or `gpp_sid`; two names (or copies) that disagree are a conflict and deny;
  `aw_0_req.coppa=1` or `coppa=1` is a child flag and denies outright. Each is read in any
  letter case (`AW_0_REQ.COPPA=1`), and in the `aw_0_1st.` targeting too (`aw_0_1st.coppa=1`,
  `aw_0_1st.usPrivacy`, `aw_0_1st.gppSid`, `aw_0_1st.userConsentV2`: every spelling above);
  an id (device or listener) given twice with different values names nobody;
- content: `aw_0_1st.contentUrl` (or `aw_0_1st.url`, `url`) when present, else the episode id
  (`aw_0_1st.episode_id`: `adswizz://episode/{id}`), else the content id
  (`aw_0_1st.content_id`: `adswizz://content/{id}`). A zone is an ad placement, never content:
  every episode of a show may share one, so a request with only a zone has no content (no
  play event, no Contextual call). Properties for the `AudioPlay` event come through the
  `properties` mapping (default: `aw_0_1st.episode_id`, `.content_id`, `.show`, `.title`,
  `.categories`, `.duration` → `duration_seconds`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from adapters.base import ContentId, Example, KeyValuesIn, SplitUrl, UrlAdapter
from adapters.params import (
    SignalReader,
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
    url_path,
)
from plugin.context import Content, Context
from plugin.identity import Alias
from plugin.request import AdRequest, KeyValues

DEFAULT_ACTIVATION_PLATFORMS: tuple[str, ...] = ("adswizz_keyvalue", "adswizz")
PREFIX = "aw_0_1st."
LISTENER_ID_TAG = "listener_id"

_LISTENER_PARAMS = ("listenerId", "listenerid", "aw_0_awz.listenerid")
_CONTENT_URL_PARAMS = ("aw_0_1st.contentUrl", "aw_0_1st.contenturl", "aw_0_1st.url", "url")
_LMT_PARAMS = ("aw_0_req.lmt", "lmt")
_CHILD_PARAMS = ("aw_0_req.coppa", "coppa")


def valid_key(key: object) -> bool:
    return isinstance(key, str) and bool(key.strip()) and encodable(key)


def clean_value(value: object) -> str | None:
    if not isinstance(value, str) or not value or "," in value or not encodable(value):
        return None
    return value


def _is_adswizz_path(path: str) -> bool:
    if path.endswith("/afr.php"):
        return True
    at = path.find("/vast/")
    if at < 0:
        return False
    parts = path[at + 1 :].split("/", 3)
    return len(parts) >= 3 and bool(parts[1]) and parts[2] == "request"


class AdsWizzAdapter(UrlAdapter):
    name = "adswizz"
    label = "AdsWizz"
    shape = "GET .../vast/<version>/request/... or .../afr.php (AdsWizz audio ad request)"
    default_activation_platforms = DEFAULT_ACTIVATION_PLATFORMS
    default_play_event = "AudioPlay"
    default_content_section = "audio"
    default_properties: ClassVar[Mapping[str, str]] = {
        "aw_0_1st.episode_id": "episode_id",
        "aw_0_1st.content_id": "content_id",
        "aw_0_1st.show": "show",
        "aw_0_1st.title": "title",
        "aw_0_1st.categories": "categories",
        "aw_0_1st.duration": "duration_seconds",
    }
    default_content_ids = (
        ContentId("aw_0_1st.episode_id", "episode"),
        ContentId("aw_0_1st.content_id", "content"),
    )

    @classmethod
    def example(cls, e: Example) -> AdRequest:
        return AdRequest(
            f"https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/ctv-{e.section}"
            f"?aw_0_1st.ifa={e.device_id}&aw_0_1st.ifaType={e.device_tag}"
            f"&aw_0_req.lmt=0&aw_0_req.gdpr=1&aw_0_req.userConsentV2={e.tc_string}"
            f"&aw_0_1st.contentUrl={encode(e.content_url)}&aw_0_1st.section={e.section}"
            f"&aw_0_1st.slot={e.slot}&cb={e.correlator}"
        )

    def _url_unrecognised(self, split: SplitUrl) -> str | None:
        return None if _is_adswizz_path(url_path(split.base)) else "path"

    def _parse_url(self, split: SplitUrl) -> Context:
        p = first_params(split.query or "")

        def first(names: tuple[str, ...]) -> str | None:
            for name in names:
                value = text(p.get(name))
                if value is not None:
                    return value
            return None

        # Privacy parameters count in the `aw_0_1st.` targeting too (`aw_0_1st.coppa=1`).
        reader = SignalReader(p, p.nested(PREFIX))
        ids = SignalReader(p)
        aliases: list[Alias] = []
        ifa = device_id(ids.same("aw_0_1st.ifa"))
        tag = device_tag(text(ids.same("aw_0_1st.ifaType")))
        lat = reader.any_set(*_LMT_PARAMS) is True
        if ifa is not None and tag is not None and not lat:
            aliases.append(Alias(tag=tag, id=ifa))
        listener = device_id(ids.same(*_LISTENER_PARAMS))
        if listener is not None:
            aliases.append(Alias(tag=LISTENER_ID_TAG, id=listener))

        # The bare camelCase names are how `aw_0_1st.usPrivacy` & co. read in the targeting.
        consent = reader.signals(
            gdpr=("aw_0_req.gdpr", "gdpr"),
            tc_string=("aw_0_req.userConsentV2", "gdpr_consent", "userConsentV2"),
            us_privacy=("aw_0_req.usPrivacy", "us_privacy", "usPrivacy"),
            gpp=("aw_0_req.gpp", "gpp"),
            gpp_sid=("aw_0_req.gppSid", "aw_0_req.gpp_sid", "gpp_sid", "gppSid"),
            child_directed=_CHILD_PARAMS,
        )

        return Context(
            identity=identity_of(aliases),
            consent=consent,
            content=Content(
                url=first(_CONTENT_URL_PARAMS), properties=mapped_properties(self.properties, p)
            ),
            limit_ad_tracking=lat,
        )

    def _strip_query(self, query: str, keys: frozenset[str]) -> tuple[str, int]:
        return drop_fields(query, {PREFIX.lower() + k for k in keys})

    def _apply_url(self, split: SplitUrl, keyvalues: KeyValuesIn) -> tuple[str, KeyValues]:
        url, base, query, fragment = split
        ours = sanitise(keyvalues, valid_key, clean_value, self._skipped)
        if not ours:
            return url, {}

        q = "" if query is None else query
        inserts: list[tuple[int, str]] = []  # (position in q, text), existing parameters
        tail: list[str] = []  # new parameters
        written: KeyValues = {}
        for key, values in ours:
            name = PREFIX + encode(key)
            bounds = find_param(q, name)
            if bounds is None:
                tail.append(f"{name}={','.join(encode(v) for v in values)}")
                written[key] = list(values)
                continue
            start, end = bounds
            value_at = start + len(name)
            raw = q[value_at + 1 : end] if value_at < end else ""
            seen = set(decode(raw).split(",")) if raw else set()
            fresh = [v for v in values if v not in seen]
            if not fresh:
                continue
            written[key] = fresh
            lead = "," if raw else ("" if value_at < end else "=")
            inserts.append((end, lead + ",".join(encode(v) for v in fresh)))
        if not inserts and not tail:
            return url, {}

        for at, insert in sorted(inserts, reverse=True):
            q = q[:at] + insert + q[at:]
        if tail:
            q = q + ("&" if q else "") + "&".join(tail)
        return f"{base}?{q}{fragment}", written
