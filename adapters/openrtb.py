"""OpenRTB 2.5 / 2.6 bid requests: POST JSON, e.g. Prebid Server's `/openrtb2/auction`.

Recognised: a POST whose body is a JSON object with an `id` string and an `imp` array, or any
JSON object POSTed to a path ending in `/openrtb2/auction` (Prebid Server fills `imp` from stored
requests). Otherwise the reason is `method`, `encoding` (a body still compressed), `json` (not
JSON), `body` (JSON, but not a bid request) or `duplicate_keys` (an object the adapter writes
into holds a member name twice, in any case: which copy a bidder reads is not ours to choose),
and the request goes out unchanged. A body the host decoded is read whatever
`Content-Encoding` still says.

Writing: the body's bytes are kept; the written members are spliced in (`openrtb_write`), so
number spellings, key order, whitespace and escapes stay byte for byte everywhere else.
Objects on the way are made when missing; a member that is there but is not an object (or
array) is never overwritten, and what would go in it is not written. A `data` entry of our name
is replaced where it stands (later ones of that name dropped); each list holds at most
`max_cohorts` ids (Prebid.js's `maxSegs`, 500).

Where cohorts go (`[adapters.openrtb]`):
- `scope = "request"` (default), `names = "keys"` (default): the contextual key
  (`contextual_key`, keep it equal to `[keys] contextual`) goes to the inventory object (`site`,
  else `app`, else `dooh`): `{site|app|dooh}.content.data[]` gets `{"name": <key>, "segment":
  [{"id": ...}, ...]}` and `{site|app|dooh}.ext.data.<key>` the ids. Every other key goes to the
  user: `user.data[]` gets the same kind of entry, `user.ext.data.<key>` the ids.
- `names = "prebid"`: as Prebid.js's Permutive RTD module places them. Cohorts activated for
  `activation_platforms` (custom cohorts) go to `user.data[{"name": "permutive"}]` and
  `user.ext.data.permutive`; cohorts activated for `standard_activation_platforms` (Audience
  Connector) to `user.data[{"name": "permutive.com"}]` and `user.ext.data.p_standard`. The
  contextual key keeps its own place above: that is cohortkv's, not Prebid's (Prebid.js writes
  nothing to the content). `keys.puid` is not written.
- `scope = "bidders"`: nothing request-wide. `bidders` maps Prebid bidder codes to the
  activation names whose cohorts each may receive; each bidder with cohorts gets them in
  `ext.prebid.bidderconfig`, in an entry `{"bidders": [code], "config": {"ortb2": {"user":
  {"data": [...], "ext": {"data": {...}}}}}}` (an entry for exactly that bidder is written into;
  other entries and their order are kept). Its `data` starts from the request's `user.data`
  (other providers' entries), since Prebid Server gives a bidder the config's array instead of
  the request's. With `names = "prebid"`, a bidder's names that are in
  `standard_activation_platforms` give its `permutive.com` / `p_standard` cohorts. Split
  contextual cohorts go to the bidder's `ortb2.site` / `ortb2.app` content the same way
  (Prebid Server's bidderconfig has no `dooh`). A bidder named in an entry shared with other
  bidders is skipped (Prebid Server rejects a second config for one bidder), counted
  (`bidderconfig_shared`).

Parsing (member names match in any case, and every copy of a repeated name counts, as Go's
`encoding/json` in Prebid Server reads them: see `openrtb_read`):
- identity: a Permutive id in `user.eids` / `user.ext.eids` (source `permutive.com`, a UUIDv4)
  is the `user_id` (two different ones: no identity at all); otherwise `device.ifa`, typed by
  `device.ext.ifa_type` (`params.DEVICE_ID_TAGS`; `sessionid` or all zeros: not used) or, when
  that is absent, by `device.os` (below), then `user.id` under the alias tag `user_id_tag`.
  With `device.lmt=1` neither the device id nor `user.id` is used (Prebid Server drops both
  then too). Copies of one of these members that disagree give no identity from it;
- consent: `regs.gdpr` / `regs.ext.gdpr`, `user.consent` / `user.ext.consent`, `regs.gpp` /
  `regs.ext.gpp` with `regs.gpp_sid` / `regs.ext.gpp_sid`, `regs.us_privacy` /
  `regs.ext.us_privacy`; two places or copies that disagree are a conflict and deny;
  `regs.coppa=1` (or `regs.ext.coppa`) in any copy is a child flag and denies outright;
- content: `site.page`, else `site.content.url`, else `app.content.url`, else
  `dooh.content.url`, else the deterministic `app://{app.bundle}/{app.content.id}`, else the
  content id alone (`openrtb://content/{id}`);
  `content.title` as the title; play-event properties from the inventory object through the
  `properties` mapping (dotted paths under `site`, `app` or `dooh`; default: the content's id,
  series, season, episode, genre, categories, length).

A device id without `device.ext.ifa_type` (no Prebid Server sets it) is typed by `device.os`
(lower-case, without spaces, dashes, dots or a trailing version number) and, where the OS name
is ambiguous, `device.make`:

| `device.os` | `device.make` | type |
| --- | --- | --- |
| `ios`, `ipados`, `iphoneos`, `tvos` | any | `idfa` |
| `android`, `androidtv`, `googletv` | `amazon…` | `afai` |
| `android`, `androidtv`, `googletv` | `huawei…`, `honor…` | not used: OAID or AAID? |
| `android`, `androidtv`, `googletv` | any other | `aaid` |
| `fireos`, `firetv`, `amazonfireos` | any | `afai` |
| `roku`, `rokuos` | any | `rida` |
| `tizen`, `tizenos` | any | `tifa` |
| `webos`, `web0s`, `lgwebos` | any | `lgudid` |
| `xbox…` | any | `msai` |
| `vizio`, `smartcast`, `vizioos`, `smartcastos` | any | `vida` |
| `linux` | `vizio…` | `vida` |
| `linux` | `lg`, `lge…` | `lgudid` |
| `linux` | `samsung…` | `tifa` |
| `linux` | `roku…` | `rida` |

Any other OS (or none): the device id is not used, counted as `ifa_os_unknown` (`ifa_untyped`
without `device.os`, `ifa_os_ambiguous` for the makes above). `device.lmt=1`, all zeros and
`sessionid` still exclude it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, NamedTuple

import msgspec

from adapters.base import (
    AdapterSettings,
    CohortsFor,
    ContentId,
    ErrorHook,
    Example,
    FailOpen,
    KeyName,
    KeyValuesIn,
    Name,
    Parsed,
    SkipHook,
    Unrecognised,
)
from adapters.jsonspan import Obj, SpanError
from adapters.openrtb_place import INVENTORY, Placement
from adapters.openrtb_read import (
    Reader,
    Where,
    first,
    odd_flag,
    prop,
    raw,
    string,
    synthetic,
    the,
    with_every_copy,
)
from adapters.openrtb_write import Duplicate, write
from adapters.params import (
    SignalReader,
    device_id,
    device_tag,
    encode,
    identity_of,
    split_url,
    text,
    url_path,
)
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity
from plugin.request import AdRequest, Applied

AUCTION_PATH = "/openrtb2/auction"
PERMUTIVE_EID_SOURCES = frozenset(("permutive.com",))

Tag = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9_\-]*$")]
BidderCode = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
]

_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, ValueError)
_COMPRESSED = ("gzip", "deflate", "br", "zstd", "compress", "x-gzip")

_REGS, _REGS_EXT = ("regs",), ("regs", "ext")
_USER, _USER_EXT = ("user",), ("user", "ext")
_DEVICE, _DEVICE_EXT = ("device",), ("device", "ext")
_GDPR: tuple[Where, ...] = ((_REGS, "gdpr"), (_REGS_EXT, "gdpr"))
_TC_STRING: tuple[Where, ...] = ((_USER, "consent"), (_USER_EXT, "consent"))
_US_PRIVACY: tuple[Where, ...] = ((_REGS, "us_privacy"), (_REGS_EXT, "us_privacy"))
_GPP: tuple[Where, ...] = ((_REGS, "gpp"), (_REGS_EXT, "gpp"))
_GPP_SID: tuple[Where, ...] = ((_REGS, "gpp_sid"), (_REGS_EXT, "gpp_sid"))
_COPPA: tuple[Where, ...] = ((_REGS, "coppa"), (_REGS_EXT, "coppa"))
_LMT: tuple[Where, ...] = ((_DEVICE, "lmt"),)
_IFA: Where = (_DEVICE, "ifa")
_IFA_TYPE: Where = (_DEVICE_EXT, "ifa_type")
_OS: Where = (_DEVICE, "os")
_MAKE: Where = (_DEVICE, "make")
_WATCHED: tuple[Where, ...] = (
    *_GDPR,
    *_TC_STRING,
    *_US_PRIVACY,
    *_GPP,
    *_GPP_SID,
    *_COPPA,
    *_LMT,
    _IFA,
    _IFA_TYPE,
    _OS,
    _MAKE,
    (_USER, "eids"),
    (_USER_EXT, "eids"),
)

IFA_TYPE_BY_OS: dict[str, str] = {
    **dict.fromkeys(("ios", "ipados", "iphoneos", "tvos"), "idfa"),
    **dict.fromkeys(("android", "androidtv", "googletv"), "aaid"),
    **dict.fromkeys(("fireos", "firetv", "amazonfireos"), "afai"),
    **dict.fromkeys(("roku", "rokuos"), "rida"),
    **dict.fromkeys(("tizen", "tizenos"), "tifa"),
    **dict.fromkeys(("webos", "web0s", "lgwebos"), "lgudid"),
    **dict.fromkeys(("vizio", "smartcast", "vizioos", "smartcastos"), "vida"),
}
"""`device.os` (normalised) → the IAB `ifa_type` of its advertising id (see the table above)."""
_ANDROID_MAKES = (("amazon", "afai"), ("huawei", None), ("honor", None))
_LINUX_MAKES = (("vizio", "vida"), ("lge", "lgudid"), ("samsung", "tifa"), ("roku", "rida"))
_TRAILING_VERSION = re.compile(r"[0-9]+$")


def _normal(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    name = "".join(c for c in value.lower() if c.isascii() and c.isalnum())
    return _TRAILING_VERSION.sub("", name)


def ifa_type_of(os: Any, make: Any) -> tuple[str | None, str | None]:
    """(the device id's type, None) from `device.os` and `device.make`, or (None, why not)."""
    name = _normal(os)
    if not name:
        return None, "ifa_untyped"
    brand = _normal(make) or ""
    if name.startswith("xbox"):
        return "msai", None
    found = IFA_TYPE_BY_OS.get(name)
    if found == "aaid":
        for prefix, tag in _ANDROID_MAKES:
            if brand.startswith(prefix):
                return tag, (None if tag else "ifa_os_ambiguous")
    if name == "linux":
        brand = "lge" if brand in ("lg", "lgelectronics") else brand
        found = next((tag for prefix, tag in _LINUX_MAKES if brand.startswith(prefix)), None)
    return (found, None) if found else (None, "ifa_os_unknown")


class OpenRtbSettings(AdapterSettings, frozen=True):
    """`[adapters.openrtb]`."""

    contextual_key: KeyName = "prmtvctx"
    """The key-value that carries contextual cohorts (keep it equal to `[keys] contextual`):
    written to the site / app / dooh content. Every other key is written to the user."""
    user_id_tag: Tag = "openrtb_user_id"
    """The alias tag `user.id` is sent under; empty: `user.id` is not read."""
    scope: Literal["request", "bidders"] = "request"
    """`request`: cohorts go into the request, for every bidder. `bidders`: into
    `ext.prebid.bidderconfig`, per bidder in `bidders`, nothing request-wide."""
    bidders: dict[BidderCode, tuple[Name, ...]] = {}
    """With `scope = "bidders"`: Prebid bidder code → the activation names whose cohorts it
    may receive (`appnexus = ["appnexus"]`)."""
    names: Literal["keys", "prebid"] = "keys"
    """`keys`: under the `[keys]` names. `prebid`: Prebid.js's names (`permutive`,
    `permutive.com` / `p_standard`)."""
    standard_activation_platforms: tuple[Name, ...] = ()
    """With `names = "prebid"`: the activation names of standard (Audience Connector)
    cohorts, written as `permutive.com` / `p_standard`."""
    max_cohorts: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    """At most this many ids in each list written (Prebid.js's `maxSegs`)."""

    def __post_init__(self) -> None:
        if self.scope == "bidders" and not self.bidders:
            raise ValueError('bidders: expected at least one bidder code with scope = "bidders"')
        if self.scope == "request" and self.bidders:
            raise ValueError('bidders: only read with scope = "bidders"')
        if self.scope == "bidders" and self.activation_platforms is not None:
            raise ValueError(
                'activation_platforms: not read with scope = "bidders" (each bidder\'s'
                " activation names are in [adapters.openrtb.bidders])"
            )
        if self.standard_activation_platforms and self.names != "prebid":
            raise ValueError('standard_activation_platforms: only read with names = "prebid"')


def decode_body(body: bytes) -> Any:
    """The body as JSON: a bid request's one full decode."""
    return msgspec.json.decode(body)


class BidRequest(NamedTuple):
    """What reading a bid request decoded: the tree, and the spans of the objects found on
    the way to every place it may be written (by offset), which writing it reuses."""

    tree: dict[str, Any]
    spans: dict[int, Obj]


def _auction_path(url: str) -> bool:
    return url_path(split_url(url)[0]).rstrip("/").endswith(AUCTION_PATH)


def _names(groups: Sequence[Where]) -> tuple[str, ...]:
    return tuple(synthetic(w) for w in groups)


class OpenRtbAdapter(FailOpen):
    name = "openrtb"
    label = "OpenRTB"
    shape = "POST of an OpenRTB 2.5/2.6 bid request (JSON body), e.g. /openrtb2/auction"
    Settings = OpenRtbSettings
    default_properties: ClassVar[Mapping[str, str]] = {
        "content.id": "video_id",
        "content.series": "series",
        "content.season": "season",
        "content.episode": "episode",
        "content.genre": "genre",
        "content.cat": "categories",
        "content.len": "duration_seconds",
    }
    default_content_ids = (ContentId("content.id", "content"),)

    def __init__(
        self,
        settings: AdapterSettings | None = None,
        *,
        on_error: ErrorHook | None = None,
        on_skip: SkipHook | None = None,
    ) -> None:
        super().__init__(settings, on_error=on_error, on_skip=on_skip)
        s = settings if isinstance(settings, OpenRtbSettings) else OpenRtbSettings()
        self.contextual_key = s.contextual_key
        self.user_id_tag = s.user_id_tag
        self.placement = Placement(
            contextual_key=s.contextual_key,
            scope=s.scope,
            names=s.names,
            bidders=tuple(s.bidders.items()),
            custom=self.activation_platforms,
            standard=tuple(s.standard_activation_platforms),
            max_cohorts=s.max_cohorts,
        )
        self.placement.dropped = self._skipped
        every = (
            [n for names in s.bidders.values() for n in names]
            if s.scope == "bidders"
            else [*self.activation_platforms, *s.standard_activation_platforms]
        )
        self.activation_platforms = tuple(dict.fromkeys(every))

    # -- recognising -------------------------------------------------------------------------

    def _recognise(self, request: AdRequest) -> BidRequest | Unrecognised:
        """The body decoded once, with the spans of the objects it may be written into (found
        checking that none of them repeats a name); or why it is not one we can write."""
        if request.method.upper() != "POST":
            return self._not_mine("method")
        body = request.body
        try:
            tree = decode_body(body)
        except _DECODE_ERRORS:
            encoding = (request.header("content-encoding") or "").strip().lower()
            return self._not_mine("encoding" if encoding in _COMPRESSED else "json")
        if not isinstance(tree, dict):
            return self._not_mine("body")
        shaped = isinstance(tree.get("id"), str) and isinstance(tree.get("imp"), list)
        if not shaped and not _auction_path(request.url):
            return self._not_mine("body")
        bid = BidRequest(tree, {})
        anything = {"-": ["-"], self.contextual_key: ["-"]}
        try:  # the plan that writes into every place it may: is any of them ambiguous?
            plan = self.placement.plan(tree, anything, lambda _: anything)[0]
            write(body, tree, plan, bid.spans)
        except Duplicate:
            return self._not_mine("duplicate_keys")
        except SpanError:
            return self._not_mine("json")
        return bid

    @classmethod
    def example(cls, e: Example) -> AdRequest:
        """A CTV app's bid request as Prebid Server receives it."""
        body = {
            "id": f"auction-{e.correlator}",
            "imp": [
                {
                    "id": e.slot,
                    "video": {"mimes": ["video/mp4"], "startdelay": e.position_s},
                }
            ],
            "app": {
                "bundle": "com.example.ctv",
                "content": {"id": e.video_id, "url": e.content_url, "len": e.duration_s},
            },
            "device": {"ifa": e.device_id, "lmt": 0, "ext": {"ifa_type": e.device_tag}},
            "user": {"ext": {"consent": e.tc_string}},
            "regs": {"ext": {"gdpr": 1}},
        }
        return AdRequest(
            "https://pbs.example.com/openrtb2/auction",
            method="POST",
            headers=(("Content-Type", "application/json"),),
            body=msgspec.json.encode(body),
        )

    # -- reading -----------------------------------------------------------------------------

    def _context(self, request: AdRequest, data: Any) -> Context:
        tree = data.tree
        read = Reader(tree)
        if read.suspicious(request.body, _WATCHED):
            read = Reader(with_every_copy(request.body))
        lmt = SignalReader(read.params(_LMT, deny=True)).any_set(*_names(_LMT)) is True
        for where in (*_COPPA, *_LMT):
            if any(odd_flag(v) for v in read.values(where)):
                self._skipped(f"odd_{where[1]}")
        return Context(
            identity=self._identity(read, lmt),
            consent=self._consent(read),
            content=self._content(tree),
            limit_ad_tracking=lmt,
        )

    @staticmethod
    def _consent(read: Reader) -> ConsentSignals:
        groups = (*_GDPR, *_TC_STRING, *_US_PRIVACY, *_GPP)
        reader = SignalReader(
            read.params(groups), read.params(_GPP_SID, sid=True), read.params(_COPPA, deny=True)
        )
        return reader.signals(
            gdpr=_names(_GDPR),
            tc_string=_names(_TC_STRING),
            us_privacy=_names(_US_PRIVACY),
            gpp=_names(_GPP),
            gpp_sid=_names(_GPP_SID),
            child_directed=_names(_COPPA),
        )

    def _identity(self, read: Reader, lmt: bool) -> Identity | None:
        found = read.permutive_ids(PERMUTIVE_EID_SOURCES)
        if len(found) > 1:  # copies that disagree: whichever a bidder reads is not ours to pick
            return None
        if found:
            return Identity(user_id=found.pop())
        if lmt:
            return None
        aliases: list[Alias] = []
        ifa = device_id(raw(the(read.values(_IFA))))
        tag = self._device_tag(read) if ifa is not None else None
        if ifa is not None and tag is not None:
            aliases.append(Alias(tag=tag, id=ifa))
        if self.user_id_tag:
            user_id = device_id(raw(the(read.values((_USER, "id")))))
            if user_id is not None:
                aliases.append(Alias(tag=self.user_id_tag, id=user_id))
        return identity_of(aliases)

    def _device_tag(self, read: Reader) -> str | None:
        """`device.ext.ifa_type` when sent (all copies agreeing), else typed by the OS."""
        given = read.values(_IFA_TYPE)
        if given:
            return device_tag(text(raw(the(given))))
        tag, why = ifa_type_of(the(read.values(_OS)), the(read.values(_MAKE)))
        if why is not None:
            self._skipped(why)
        return tag

    def _content(self, root: dict[str, Any]) -> Content:
        inventory = next(
            (obj for name in INVENTORY if isinstance(obj := root.get(name), dict)), None
        )
        url = (
            string(first(root, ("site", "page")))
            or string(first(root, ("site", "content", "url")))
            or string(first(root, ("app", "content", "url")))
            or string(first(root, ("dooh", "content", "url")))
        )
        if url is None:
            bundle = string(first(root, ("app", "bundle")))
            content_id = first(root, ("app", "content", "id"))
            cid = str(content_id) if isinstance(content_id, int) else string(content_id)
            if bundle is not None and cid is not None:
                url = f"app://{encode(bundle)}/{encode(cid)}"
        if inventory is None:
            return Content(url=url)
        title = string(first(inventory, ("content", "title")))
        return Content(url=url, title=title, properties=self._properties(inventory))

    def _properties(self, inventory: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for source, target in self.properties.items():
            path = source.split(".")
            if path[-1].endswith("*"):
                stem = path[-1][:-1]
                parent = first(inventory, path[:-1])
                if not isinstance(parent, dict):
                    continue
                for member, value in parent.items():
                    if member.startswith(stem) and len(member) > len(stem):
                        found = prop(value)
                        if found is not None:
                            out.setdefault(target.replace("*", member[len(stem) :]), found)
            else:
                found = prop(first(inventory, path))
                if found is not None:
                    out[target] = found
        return out

    # -- writing -----------------------------------------------------------------------------

    def _apply(
        self, parsed: Parsed, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None
    ) -> Applied:
        request, bid = parsed.request, parsed.data
        patch, planned = self.placement.plan(bid.tree, keyvalues, cohorts_for)
        if not patch:
            return Applied(request, {})
        try:
            done = write(request.body, bid.tree, patch, bid.spans)
        except Duplicate:  # in an object reading did not reach (it checked every place it may)
            return Applied(request, {})
        for _ in done.skipped:
            self._skipped("bidderconfig_shared")
        written = {label: ids for label, ids in planned.items() if label in done.labels}
        if not written:
            return Applied(request, {})
        body = done.body
        return Applied(request if body == request.body else request.with_body(body), written)
