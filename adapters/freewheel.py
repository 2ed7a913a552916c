"""FreeWheel ad requests (`/ad/g/1`, e.g. on `*.v.fwmrm.net`).

The query is `;`-separated sections: global parameters `;` key-values `;` slot parameters
(slot sections repeat). It is split on `;` first and only then on `&`; generic query parsers
break this format. Key-values go in the second section, one `key=value` pair per value
(`permutive=1&permutive=2`), appended after the pairs already there; a value the key already
has is not added again. Without a key-value section one is added after the global section.
Whether the query ends with `;` never changes: `global;` (an empty key-value section followed by
nothing) becomes `global;permutive=1;`. Every other byte of the URL stays as it was. Reserved keys
(`_fw_*`, `gpp`, `gpp_sid`) are never written.

Parsing reads the key-value section first and the global section as a fallback:
- identity: `_fw_did` (`idfa:…`, `aaid:…`, `rida:…`, … typed by `params.DEVICE_ID_TAGS`; an id
  without a known type prefix is sent whole under the tag `device_id`), dropped when
  `_fw_is_lat=1` or all zeros;
- consent: `_fw_gdpr`, `_fw_gdpr_consent`, `_fw_us_privacy` (or `us_privacy`), `gpp`, `gpp_sid`,
  read from both sections: a parameter whose copies disagree is a conflict and denies;
  `_fw_coppa=1` in any copy denies outright, whatever the host says;
- content: every `_fw_content_<name>` pair becomes property `<name>` (a list when repeated);
  the URL is `_fw_content_url` when given, else `freewheel://{nw}/asset/{caid}` (without `nw`:
  `freewheel://asset/{caid}`); `caid` → `video_id`, `vdur` → `duration_seconds`;
- `vprn` (video view random number, one per video view) is the view id, raw; the enricher turns
  non-UUID ids into uuid5 ones. `pvrn` (page view random number, shared by all the videos of one
  page or app screen) is `ssai_session_id`, the string session and view ids are derived from.
"""

from __future__ import annotations

from adapters.base import FailOpen, KeyValues
from adapters.params import (
    DEVICE_ID_TAGS,
    SignalReader,
    decode,
    device_id,
    device_tag,
    encodable,
    encode,
    first_params,
    identity_of,
    number,
    sanitise,
    split_url,
    text,
    url_path,
)
from plugin.context import Content, Context
from plugin.identity import Alias

DEFAULT_ACTIVATION_PLATFORMS: tuple[str, ...] = ("freewheel",)
BARE_DEVICE_ID_TAG = "device_id"
RESERVED_PREFIX = "_fw_"
RESERVED_KEYS = frozenset(("gpp", "gpp_sid"))

_PATH = "/ad/g/1"
_CONTENT_PREFIX = "_fw_content_"
_CONTENT_URL = "url"


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


class FreeWheelAdapter(FailOpen):
    name: str = "freewheel"

    default_activation_platforms = DEFAULT_ACTIVATION_PLATFORMS

    def __repr__(self) -> str:
        return "FreeWheelAdapter()"

    def _matches(self, url: str) -> bool:
        return url_path(split_url(url)[0]).endswith(_PATH)

    def _parse(self, url: str) -> Context:
        base, query, _ = split_url(url)
        if query is None or not url_path(base).endswith(_PATH):
            return Context()
        glob_section, _, rest = query.partition(";")
        kv_section = rest.partition(";")[0]
        glob = first_params(glob_section)
        kv = first_params(kv_section)

        def get(name: str) -> str | None:
            value = kv.get(name)
            return glob.get(name) if value is None else value

        reader = SignalReader(kv, glob)
        aliases: list[Alias] = []
        did = text(get("_fw_did"))
        if did is not None and reader.any_set("_fw_is_lat") is not True:
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

        props = _content_properties(kv_section)
        for name, value in _content_properties(glob_section).items():
            props.setdefault(name, value)
        given_url = props.pop(_CONTENT_URL, None)
        if isinstance(given_url, list):
            given_url = given_url[0]
        content_url = given_url if isinstance(given_url, str) else None
        caid = text(get("caid"))
        if caid is not None:
            props["video_id"] = caid
            if content_url is None:
                nw = text(get("nw"))
                where = f"{encode(nw)}/asset" if nw is not None else "asset"
                content_url = f"freewheel://{where}/{encode(caid)}"
        duration = number(get("vdur"))
        if duration is not None:
            props["duration_seconds"] = duration

        return Context(
            identity=identity_of(aliases),
            consent=consent,
            content=Content(url=content_url, properties=props),
            view_id=text(get("vprn")),
            ssai_session_id=text(get("pvrn")),
        )

    def _apply(self, url: str, keyvalues: KeyValues) -> str:
        if not keyvalues:
            return url
        base, query, fragment = split_url(url)
        if query is None or not url_path(base).endswith(_PATH):
            return url
        ours = sanitise(keyvalues, valid_key, clean_value)
        if not ours:
            return url

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
        for key, values in ours:
            seen = present.get(key, set())
            enc_key = encode(key)
            added.extend(f"{enc_key}={encode(v)}" for v in values if v not in seen)
        if not added:
            return url

        new_kv = kv + ("&" if kv else "") + "&".join(added)
        if first < 0:
            new_query = f"{query};{new_kv}"
        elif second < 0:
            # `global;kv` keeps its shape; `global;` (empty kv, trailing `;`) keeps the `;`.
            new_query = query[: first + 1] + new_kv + ("" if kv else ";")
        else:
            new_query = query[: first + 1] + new_kv + query[second:]
        return f"{base}?{new_query}{fragment}"


def _content_properties(section: str) -> dict[str, object]:
    props: dict[str, object] = {}
    if _CONTENT_PREFIX not in section:
        return props
    for pair in section.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        name = decode(raw_name)
        if not name.startswith(_CONTENT_PREFIX) or len(name) == len(_CONTENT_PREFIX):
            continue
        value = text(raw_value)
        if value is None:
            continue
        prop = name[len(_CONTENT_PREFIX) :]
        existing = props.get(prop)
        if existing is None:
            props[prop] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            props[prop] = [existing, value]
    return props
