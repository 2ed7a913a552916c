"""OpenRTB 2.5 / 2.6 bid requests: POST JSON, e.g. Prebid Server's `/openrtb2/auction`.

Recognised: a POST whose body is a JSON object with an `id` string and an `imp` array, or any
JSON object POSTed to a path ending in `/openrtb2/auction` (Prebid Server fills `imp` from stored
requests). Otherwise the reason is `method`, `encoding` (a compressed body), `json` (not JSON)
or `body` (JSON, but not a bid request), and the request goes out unchanged.

Writing follows Prebid.js's Permutive RTD module, so bidders that read its output read ours:
- the contextual key (`contextual_key`, `[keys] contextual`) goes to the inventory object (`site`,
  else `app`, else `dooh`): `{site|app}.content.data[]` gets `{"name": <key>, "segment":
  [{"id": ...}, ...]}` and `{site|app}.ext.data.<key>` the list of ids;
- every other key (behavioral, or both signals merged) goes to the user:
  `user.data[]` gets the same kind of entry, `user.ext.data.<key>` the list.
An entry of the same name is replaced where it stands (later ones of that name are dropped);
every other member, array element and order is kept. Objects on the way are created when
missing; a member that is there but is not an object (or array) is never overwritten, and what
would go in it is not written. The body is decoded to plain values, changed along those paths
only (copy on write) and encoded again; the caller recomputes Content-Length. Unchanged values
come back equal, not byte-identical (whitespace and number spelling are msgspec's).

Parsing:
- identity: a Permutive id in `user.eids` / `user.ext.eids` (source `permutive.com`, a UUIDv4)
  is the `user_id`; otherwise `device.ifa` typed by `device.ext.ifa_type`
  (`params.DEVICE_ID_TAGS`; no usable type, `sessionid` or all zeros: not used) and then
  `user.id` under the alias tag `user_id_tag`. With `device.lmt=1` neither the device id nor
  `user.id` is used (Prebid Server drops both then too);
- consent: `regs.gdpr` / `regs.ext.gdpr`, `user.consent` / `user.ext.consent`, `regs.gpp` /
  `regs.ext.gpp` with `regs.gpp_sid` / `regs.ext.gpp_sid`, `regs.us_privacy` /
  `regs.ext.us_privacy`; two places (or duplicate JSON keys) that disagree are a conflict and
  deny; `regs.coppa=1` (or `regs.ext.coppa`) is a child flag and denies outright;
- content: `site.page`, else `site.content.url`, else `app.content.url`, else the deterministic
  `app://{app.bundle}/{app.content.id}`, else the content id alone (`openrtb://content/{id}`);
  `content.title` as the title; play-event properties from the inventory object through the
  `properties` mapping (dotted paths under `site`, `app` or `dooh`; default: the content's id,
  series, season, episode, genre, categories, length).

Duplicate keys in a JSON object are read by most parsers as the last one, by some as the first.
Where consent, device or user keys may be repeated (a name occurs in the body more often than
in the decoded objects we read, or a key could hide behind a `\\u` escape), the body is decoded
again keeping every copy: all of them count (a conflict or a child flag in any copy denies),
and the body is not rewritten, since whichever copy a bidder reads would no longer be ours to
choose.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar

import msgspec

from adapters.base import (
    AdapterSettings,
    ContentId,
    ErrorHook,
    Example,
    FailOpen,
    KeyName,
    KeyValuesIn,
)
from adapters.params import (
    Params,
    SignalReader,
    device_id,
    device_tag,
    encodable,
    encode,
    identity_of,
    sanitise,
    split_url,
    text,
    url_path,
)
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity, is_uuid4
from plugin.request import AdRequest, Applied, KeyValues

AUCTION_PATH = "/openrtb2/auction"
PERMUTIVE_EID_SOURCES = frozenset(("permutive.com",))
INVENTORY = ("site", "app", "dooh")

Tag = Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9_\-]*$")]

_DECODE_ERRORS = (msgspec.DecodeError, RecursionError, ValueError)

# The values read for consent and identity, as (object path, member): their synthetic names
# (`regs.ext.gdpr`) are what conflicts report.
_REGS, _REGS_EXT = ("regs",), ("regs", "ext")
_USER, _USER_EXT = ("user",), ("user", "ext")
_DEVICE, _DEVICE_EXT = ("device",), ("device", "ext")
_GDPR = ((_REGS, "gdpr"), (_REGS_EXT, "gdpr"))
_TC_STRING = ((_USER, "consent"), (_USER_EXT, "consent"))
_US_PRIVACY = ((_REGS, "us_privacy"), (_REGS_EXT, "us_privacy"))
_GPP = ((_REGS, "gpp"), (_REGS_EXT, "gpp"))
_GPP_SID = ((_REGS, "gpp_sid"), (_REGS_EXT, "gpp_sid"))
_COPPA = ((_REGS, "coppa"), (_REGS_EXT, "coppa"))
_LMT = ((_DEVICE, "lmt"),)
_IFA = ((_DEVICE, "ifa"),)
_IFA_TYPE = ((_DEVICE_EXT, "ifa_type"),)
_WATCHED: tuple[tuple[tuple[str, ...], str], ...] = (
    *_GDPR,
    *_TC_STRING,
    *_US_PRIVACY,
    *_GPP,
    *_GPP_SID,
    *_COPPA,
    *_LMT,
    *_IFA,
    *_IFA_TYPE,
)
_WATCHED_NAMES: dict[str, bytes] = {member: b'"' + member.encode() + b'"' for _, member in _WATCHED}


def _synthetic(where: tuple[tuple[str, ...], str]) -> str:
    return ".".join((*where[0], where[1]))


class OpenRtbSettings(AdapterSettings, frozen=True):
    """`[adapters.openrtb]`."""

    contextual_key: KeyName = "prmtvctx"
    """The key-value that carries contextual cohorts (keep it equal to `[keys] contextual`):
    written to the site / app content. Every other key is written to the user."""
    user_id_tag: Tag = "openrtb_user_id"
    """The alias tag `user.id` is sent under; empty: `user.id` is not read."""


def valid_key(key: object) -> bool:
    return isinstance(key, str) and bool(key.strip()) and encodable(key)


def clean_value(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip() or not encodable(value):
        return None
    return value


class _Obj(dict[str, Any]):
    """A JSON object that remembers every value of a repeated key (the dict keeps the last,
    as msgspec and most parsers do)."""

    __slots__ = ("repeats",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.repeats: dict[str, list[Any]] = {}
        for key, value in pairs:
            if key in self:
                self.repeats.setdefault(key, [self[key]]).append(value)
            self[key] = value


def _every(obj: Mapping[str, Any], key: str) -> list[Any]:
    repeats = obj.repeats if isinstance(obj, _Obj) else None
    if repeats:
        found = repeats.get(key)
        if found is not None:
            return found
    return [obj[key]] if key in obj else []


def _nodes(root: Any, path: Iterable[str]) -> list[Any]:
    """Every value at `path`, through every copy of a repeated key on the way."""
    nodes = [root]
    for key in path:
        nodes = [v for n in nodes if isinstance(n, dict) for v in _every(n, key)]
    return nodes


def _values(root: Any, where: tuple[tuple[str, ...], str]) -> list[Any]:
    return _nodes(root, (*where[0], where[1]))


def _suspicious(body: bytes, tree: dict[str, Any]) -> bool:
    """Whether a consent, device or user key might be repeated in one object: its name occurs
    in the body more often than in the decoded objects we read, or a key could be spelt with
    a `\\u` escape. False positives only cost a second, slower decode."""
    if b"\\u" in body:
        return True
    seen: dict[str, int] = {}
    for where in _WATCHED:
        seen[where[1]] = seen.get(where[1], 0) + len(_values(tree, where))
    return any(body.count(quoted) > seen[name] for name, quoted in _WATCHED_NAMES.items())


def _with_every_copy(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=_Obj)


def _raw(value: Any) -> str | None:
    """A JSON scalar as the percent-encoded text `params` readers take; None for the rest."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        return encode(value) if encodable(value) else None
    return None


def _sid_raw(value: Any) -> str | None:
    """`gpp_sid` as an array of ints (the standard) or a comma list (seen in the wild)."""
    if isinstance(value, list):
        ids = [str(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return encode(",".join(ids)) if ids else None
    return _raw(value)


def _params(root: Any, groups: Iterable[tuple[tuple[str, ...], str]], sid: bool = False) -> Params:
    """The values at each place as one `Params` set, named `regs.ext.gdpr` and so on, every
    copy of a repeated key kept, so that `SignalReader` applies its rules to JSON as to URLs."""
    out = Params()
    for where in groups:
        name = _synthetic(where)
        for value in _values(root, where):
            raw = _sid_raw(value) if sid else _raw(value)
            if raw is None:
                continue
            if name not in out:
                out[name] = raw
            else:
                out.repeats.setdefault(name, [out[name]]).append(raw)
    return out


def _names(groups: Iterable[tuple[tuple[str, ...], str]]) -> tuple[str, ...]:
    return tuple(_synthetic(w) for w in groups)


def _the(values: list[Any]) -> Any:
    """The one value all copies agree on; None when absent or they differ."""
    if not values or any(v != values[0] for v in values[1:]):
        return None
    return values[0]


def _string(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and encodable(value) else None


def _property(value: Any) -> Any:
    """JSON scalars and arrays of them, as play-event properties; None for anything else."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int):  # bool included
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        items = [
            p for p in (_property(v) for v in value if not isinstance(v, list)) if p is not None
        ]
        return items or None
    return None


def _permutive_id(user: Any) -> str | None:
    for eids in (*_nodes(user, ("eids",)), *_nodes(user, ("ext", "eids"))):
        if not isinstance(eids, list):
            continue
        for eid in eids:
            if not isinstance(eid, dict) or not isinstance(eid.get("source"), str):
                continue
            if eid["source"].strip().lower() not in PERMUTIVE_EID_SOURCES:
                continue
            uids = eid.get("uids")
            for uid in uids if isinstance(uids, list) else ():
                ident = uid.get("id") if isinstance(uid, dict) else None
                if isinstance(ident, str) and is_uuid4(ident.strip().lower()):
                    return ident.strip().lower()
    return None


_MISSING: Any = object()


def _cow(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    """`parent[key]` as a fresh object that may be changed (created when missing); None when
    the member is there but is not an object."""
    current = parent.get(key, _MISSING)
    if current is _MISSING:
        fresh: dict[str, Any] = {}
    elif isinstance(current, dict):
        fresh = dict(current)
    else:
        return None
    parent[key] = fresh
    return fresh


def _put_entry(parent: dict[str, Any], name: str, ids: list[str]) -> bool:
    """`parent.data[]` with our `{name, segment}` entry in place of the first one of that name
    (later ones dropped), or appended."""
    entry = {"name": name, "segment": [{"id": v} for v in ids]}
    current = parent.get("data", _MISSING)
    if current is _MISSING:
        parent["data"] = [entry]
        return True
    if not isinstance(current, list):
        return False
    out: list[Any] = []
    placed = False
    for item in current:
        if isinstance(item, dict) and item.get("name") == name:
            if not placed:
                out.append(entry)
                placed = True
            continue
        out.append(item)
    if not placed:
        out.append(entry)
    parent["data"] = out
    return True


def _put_ext_data(parent: dict[str, Any], key: str, ids: list[str]) -> bool:
    """`parent.ext.data.<key>` = the list of ids."""
    ext = _cow(parent, "ext")
    data = _cow(ext, "data") if ext is not None else None
    if data is None:
        return False
    data[key] = list(ids)
    return True


def _auction_path(url: str) -> bool:
    return url_path(split_url(url)[0]).rstrip("/").endswith(AUCTION_PATH)


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
        self, settings: AdapterSettings | None = None, *, on_error: ErrorHook | None = None
    ) -> None:
        super().__init__(settings, on_error=on_error)
        s = settings if isinstance(settings, OpenRtbSettings) else OpenRtbSettings()
        self.contextual_key = s.contextual_key
        self.user_id_tag = s.user_id_tag

    # -- recognising -------------------------------------------------------------------------

    def _bid_request(self, request: AdRequest) -> tuple[dict[str, Any] | None, str | None]:
        """The decoded body, or None and why it is not a bid request."""
        if request.method.upper() != "POST":
            return None, "method"
        encoding = request.header("content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            return None, "encoding"
        try:
            tree = msgspec.json.decode(request.body)
        except _DECODE_ERRORS:
            return None, "json"
        if not isinstance(tree, dict):
            return None, "body"
        if isinstance(tree.get("id"), str) and isinstance(tree.get("imp"), list):
            return tree, None
        if _auction_path(request.url):
            return tree, None
        return None, "body"

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

    def _unrecognised(self, request: AdRequest) -> str | None:
        return self._bid_request(request)[1]

    # -- reading -----------------------------------------------------------------------------

    def _parse(self, request: AdRequest) -> Context:
        tree = self._bid_request(request)[0]
        if tree is None:
            return Context()
        root: Any = _with_every_copy(request.body) if _suspicious(request.body, tree) else tree

        return Context(
            identity=self._identity(root),
            consent=self._consent(root),
            content=self._content(root),
            limit_ad_tracking=SignalReader(_params(root, _LMT)).any_set(*_names(_LMT)) is True,
        )

    @staticmethod
    def _consent(root: Any) -> ConsentSignals:
        groups = (*_GDPR, *_TC_STRING, *_US_PRIVACY, *_GPP, *_COPPA)
        reader = SignalReader(_params(root, groups), _params(root, _GPP_SID, sid=True))
        return reader.signals(
            gdpr=_names(_GDPR),
            tc_string=_names(_TC_STRING),
            us_privacy=_names(_US_PRIVACY),
            gpp=_names(_GPP),
            gpp_sid=_names(_GPP_SID),
            child_directed=_names(_COPPA),
        )

    def _identity(self, root: Any) -> Identity | None:
        users = _nodes(root, _USER)
        for user in users:
            permutive = _permutive_id(user)
            if permutive is not None:
                return Identity(user_id=permutive)
        lmt = SignalReader(_params(root, _LMT)).any_set(*_names(_LMT))
        if lmt:
            return None
        aliases: list[Alias] = []
        ifa = device_id(_raw(_the(_values(root, _IFA[0]))))
        tag = device_tag(text(_raw(_the(_values(root, _IFA_TYPE[0])))))
        if ifa is not None and tag is not None:
            aliases.append(Alias(tag=tag, id=ifa))
        if self.user_id_tag:
            user_id = device_id(_raw(_the(_values(root, (_USER, "id")))))
            if user_id is not None:
                aliases.append(Alias(tag=self.user_id_tag, id=user_id))
        return identity_of(aliases)

    def _content(self, root: Any) -> Content:
        inventory = next(
            (obj for name in INVENTORY if isinstance(obj := root.get(name), dict)), None
        )
        url = (
            _string(_first(root, ("site", "page")))
            or _string(_first(root, ("site", "content", "url")))
            or _string(_first(root, ("app", "content", "url")))
        )
        if url is None:
            bundle = _string(_first(root, ("app", "bundle")))
            content_id = _first(root, ("app", "content", "id"))
            cid = str(content_id) if isinstance(content_id, int) else _string(content_id)
            if bundle is not None and cid is not None:
                url = f"app://{encode(bundle)}/{encode(cid)}"
        if inventory is None:
            return Content(url=url)
        title = _string(_first(inventory, ("content", "title")))
        return Content(url=url, title=title, properties=self._properties(inventory))

    def _properties(self, inventory: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for source, prop in self.properties.items():
            path = source.split(".")
            if path[-1].endswith("*"):
                stem = path[-1][:-1]
                parent = _first(inventory, path[:-1])
                if not isinstance(parent, dict):
                    continue
                for member, value in parent.items():
                    if member.startswith(stem) and len(member) > len(stem):
                        found = _property(value)
                        if found is not None:
                            out.setdefault(prop.replace("*", member[len(stem) :]), found)
            else:
                found = _property(_first(inventory, path))
                if found is not None:
                    out[prop] = found
        return out

    # -- writing -----------------------------------------------------------------------------

    def _apply(self, request: AdRequest, keyvalues: KeyValuesIn) -> Applied:
        tree = self._bid_request(request)[0]
        if tree is None:
            return Applied(request, {})
        ours = sanitise(keyvalues, valid_key, clean_value)
        if not ours or (_suspicious(request.body, tree) and _repeated(request.body, tree)):
            return Applied(request, {})

        root = dict(tree)
        written: KeyValues = {}
        for key, ids in ours:
            if key == self.contextual_key:
                done = self._put_contextual(root, key, ids)
            else:
                done = self._put_user(root, key, ids)
            if done:
                written[key] = ids
        if not written:
            return Applied(request, {})
        if root == tree:  # already there: the body stays byte for byte
            return Applied(request, written)
        return Applied(request.with_body(msgspec.json.encode(root)), written)

    @staticmethod
    def _put_user(root: dict[str, Any], key: str, ids: list[str]) -> bool:
        user = _cow(root, "user")
        if user is None:
            return False
        in_data = _put_entry(user, key, ids)
        in_ext = _put_ext_data(user, key, ids)
        return in_data or in_ext

    @staticmethod
    def _put_contextual(root: dict[str, Any], key: str, ids: list[str]) -> bool:
        name = next((n for n in INVENTORY if isinstance(root.get(n), dict)), None)
        if name is None:  # no site, app or dooh: one is not made up for us
            return False
        inventory = _cow(root, name)
        assert inventory is not None
        content = _cow(inventory, "content")
        in_data = content is not None and _put_entry(content, key, ids)
        in_ext = _put_ext_data(inventory, key, ids)
        return in_data or in_ext


def _first(root: Any, path: Iterable[str]) -> Any:
    """The value at `path` (the last copy of a repeated key), or None."""
    node = root
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _repeated(body: bytes, tree: dict[str, Any]) -> bool:
    """Whether decoding with every copy finds more consent / device / user values than the
    plain decode did: a key we read is repeated somewhere on its path."""
    every = _with_every_copy(body)
    return any(len(_values(every, w)) != len(_values(tree, w)) for w in _WATCHED)
