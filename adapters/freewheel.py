"""FreeWheel ad requests (`/ad/g/1`, e.g. on `*.v.fwmrm.net`).

The query is `;`-separated sections: global parameters `;` key-values `;` slot parameters
(slot sections repeat). It is split on `;` first and only then on `&`; generic query parsers
break this format. Key-values go in the second section, one `key=value` pair per value
(`permutive=1&permutive=2`), appended after the pairs already there; a value the key already
has is not added again. Without a key-value section one is added after the global section.
Whether the query ends with `;` never changes: `global;` (an empty key-value section followed by
nothing) becomes `global;permutive=1;`. Every other byte of the URL stays as it was. Reserved keys
(`_fw_*`, `gpp`, `gpp_sid`) are never written.

Identity and privacy parameters are read from every section (global, key-value and each slot
section), because a `;` in a player value can move a template's parameter into a slot section:
- identity: `_fw_did` (`idfa:…`, `aaid:…`, `rida:…`, … typed by `params.DEVICE_ID_TAGS`; an id
  without a known type prefix is sent whole under the tag `device_id`), dropped when
  `_fw_is_lat=1` (any section, any case) or all zeros; two different `_fw_did`s name nobody;
- consent: `_fw_gdpr`, `_fw_gdpr_consent`, `_fw_us_privacy` (or `us_privacy`), `gpp`, `gpp_sid`:
  a parameter whose copies disagree (across sections, or in another letter case) is a conflict
  and denies; `_fw_coppa=1` in any copy denies outright, whatever the host says.
Everything else is read from the key-value section first and the global section as a fallback:
- content: the `properties` mapping (default: every `_fw_content_<name>` pair becomes property
  `<name>`, a list when repeated; `caid` → `video_id`, `vdur` → `duration_seconds`); the URL is
  `_fw_content_url` when given, else `freewheel://{nw}/asset/{caid}` (without `nw`:
  `freewheel://asset/{caid}`);
- `vprn` (video view random number, one per video view) is the view id, raw; the enricher turns
  non-UUID ids into uuid5 ones. `pvrn` (page view random number, shared by all the videos of one
  page or app screen) is `ssai_session_id`, the string session and view ids are derived from.
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
    first_params,
    identity_of,
    mapped_properties,
    sanitise,
    text,
    url_path,
)
from plugin.context import Content, Context
from plugin.identity import DEVICE_ID_TAGS, Alias
from plugin.request import AdRequest, KeyValues

DEFAULT_ACTIVATION_PLATFORMS: tuple[str, ...] = ("freewheel",)
BARE_DEVICE_ID_TAG = "device_id"
RESERVED_PREFIX = "_fw_"
RESERVED_KEYS = frozenset(("gpp", "gpp_sid"))

_PATH = "/ad/g/1"
_CONTENT_PREFIX = "_fw_content_"
_CONTENT_URL = _CONTENT_PREFIX + "url"


_PRIVACY_STEMS = ("_fw_", "us_privacy", "gpp")
"""Every identity and privacy parameter read contains one of these (in its lowercase form)."""


def _may_hold_privacy(section: str) -> bool:
    """Whether a slot section may hold a parameter the reader looks for, in any case or
    encoding: sections of plain ASCII names without one of the stems are not parsed."""
    if not section:
        return False
    if not section.isascii() or "%" in section:
        return True
    lowered = section.lower()
    return any(stem in lowered for stem in _PRIVACY_STEMS)


def valid_key(key: object) -> bool:
    return (
        isinstance(key, str)
        and bool(key.strip())
        and not key.startswith(RESERVED_PREFIX)
        and key not in RESERVED_KEYS
        and encodable(key)
    )


def clean_value(value: object) -> str | None:
    if not isinstance(value, str) or not value or not encodable(value):
        return None
    return value


class FreeWheelAdapter(UrlAdapter):
    name = "freewheel"
    label = "FreeWheel"
    shape = "GET .../ad/g/1?globals;key-values;slots (FreeWheel ad request)"
    default_activation_platforms = DEFAULT_ACTIVATION_PLATFORMS
    default_properties: ClassVar[Mapping[str, str]] = {
        "caid": "video_id",
        "vdur": "duration_seconds",
        "_fw_content_*": "*",
    }
    default_content_ids = (ContentId("caid", "asset"),)

    @classmethod
    def example(cls, e: Example) -> AdRequest:
        return AdRequest(
            "https://5fd74.v.fwmrm.net/ad/g/1?nw=381747&prof=381747%3Actv_live"
            f"&csid=ctv_{e.section}&caid={e.video_id}&vdur={e.duration_s}"
            f"&resp=vast4&flag=+scpv+emcr+slcb+aeti"
            f";_fw_did={e.device_tag}%3A{e.device_id}&_fw_is_lat=0&_fw_gdpr=1"
            f"&_fw_gdpr_consent={e.tc_string}&_fw_content_url={encode(e.content_url)}"
            f"&section={e.section};slid={e.slot}&tpos={e.position_s}&ptgt=a&slau={e.slot}"
            "&mind=30&maxd=120;"
        )

    def _url_unrecognised(self, split: SplitUrl) -> str | None:
        return None if url_path(split.base).endswith(_PATH) else "path"

    def _parse_url(self, split: SplitUrl) -> Context:
        query = split.query
        if query is None:
            return Context()
        glob_section, _, rest = query.partition(";")
        kv_section, _, slot_sections = rest.partition(";")
        glob = first_params(glob_section)
        kv = first_params(kv_section)
        # Privacy and identity parameters count in every section: a `;` slipped into a
        # player value would otherwise move the template's `_fw_us_privacy=1YYN`, `_fw_gdpr=1`
        # or `_fw_coppa=1` into a slot section, out of sight.
        slots = [first_params(s) for s in slot_sections.split(";") if _may_hold_privacy(s)]
        reader = SignalReader(kv, glob, *slots)

        def get(name: str) -> str | None:
            value = kv.get(name)
            return glob.get(name) if value is None else value

        aliases: list[Alias] = []
        did = text(reader.same("_fw_did"))
        lat = reader.any_set("_fw_is_lat") is True
        if did is not None and not lat:
            kind, sep, ident = did.partition(":")
            tag = device_tag(kind) if sep and kind.strip().lower() in DEVICE_ID_TAGS else None
            if tag is None:
                tag, ident = BARE_DEVICE_ID_TAG, did
            ident_ok = device_id(ident)
            if ident_ok is not None:
                aliases.append(Alias(tag=tag, id=ident_ok))

        consent = reader.signals(
            gdpr=("_fw_gdpr",),
            tc_string=("_fw_gdpr_consent",),
            us_privacy=("_fw_us_privacy", "us_privacy"),
            gpp=("gpp",),
            gpp_sid=("gpp_sid",),
            child_directed=("_fw_coppa",),
        )

        props = mapped_properties(self.properties, kv)
        for name, value in mapped_properties(self.properties, glob).items():
            props.setdefault(name, value)
        given_url = text(get(_CONTENT_URL))
        props.pop(_CONTENT_URL[len(_CONTENT_PREFIX) :], None)
        content_url = given_url
        caid = text(get("caid"))
        if caid is not None and content_url is None:
            nw = text(get("nw"))
            where = f"{encode(nw)}/asset" if nw is not None else "asset"
            content_url = f"freewheel://{where}/{encode(caid)}"

        return Context(
            identity=identity_of(aliases),
            consent=consent,
            content=Content(url=content_url, properties=props),
            view_id=text(get("vprn")),
            ssai_session_id=text(get("pvrn")),
            limit_ad_tracking=lat,
        )

    def _strip_query(self, query: str, keys: frozenset[str]) -> tuple[str, int]:
        """Our keys out of the key-value section (the second)."""
        sections = query.split(";")
        if len(sections) < 2:
            return query, 0
        sections[1], dropped = drop_fields(sections[1], keys)
        return (";".join(sections), dropped) if dropped else (query, 0)

    def _apply_url(self, split: SplitUrl, keyvalues: KeyValuesIn) -> tuple[str, KeyValues]:
        url, base, query, fragment = split
        if query is None:
            return url, {}
        ours = sanitise(keyvalues, valid_key, clean_value, self._skipped)
        if not ours:
            return url, {}

        first = query.find(";")
        if first < 0:
            kv, second = "", -1
        else:
            second = query.find(";", first + 1)
            kv = query[first + 1 :] if second < 0 else query[first + 1 : second]

        present: dict[str, set[str]] = {}
        for pair in kv.split("&"):
            if pair:
                name, _, value = pair.partition("=")
                present.setdefault(decode(name), set()).add(decode(value))

        added: list[str] = []
        written: KeyValues = {}
        for key, values in ours:
            seen = present.get(key, set())
            enc_key = encode(key)
            fresh = [v for v in values if v not in seen]
            if fresh:
                written[key] = fresh
                added.extend(f"{enc_key}={encode(v)}" for v in fresh)
        if not added:
            return url, {}

        new_kv = kv + ("&" if kv else "") + "&".join(added)
        if first < 0:
            new_query = f"{query};{new_kv}"
        elif second < 0:
            # `global;kv` keeps its shape; `global;` (empty kv, trailing `;`) keeps the `;`.
            new_query = query[: first + 1] + new_kv + ("" if kv else ";")
        else:
            new_query = query[: first + 1] + new_kv + query[second:]
        return f"{base}?{new_query}{fragment}", written
