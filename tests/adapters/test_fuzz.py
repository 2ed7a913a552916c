"""Property tests for the `query` and `openrtb` adapters: they never raise (nor report an
internal error), never touch what is not theirs, write what they say they wrote, and a second
pass changes nothing.

The oracles are plain code of their own: the URL is split with `str.partition`, the bid
request is changed with `copy.deepcopy` and in-place edits rather than the adapter's copy on
write. The number of examples comes from the hypothesis profile (`tests/conftest.py`).
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import Unrecognised
from adapters.openrtb import INVENTORY, OpenRtbAdapter, OpenRtbSettings
from adapters.query import QueryAdapter, QuerySettings
from plugin.context import Context
from plugin.request import AdRequest
from tests.adapters.reading import applied, context_of, reason
from tests.adapters.url_oracles import assert_only_ours_changed, dedup, segments, split, utf8
from tests.helpers.jsonbytes import outside

Failure = tuple[str, str, BaseException]

# ---------------------------------------------------------------------------------------------
# shared strategies and oracles

ATOMS = [*"&=;,|%#?+/ :.~_-", "%2", "%zz", "%26", "%3D", "%2C", "%25", "%ff", "%C3%A9"]
ATOMS += ["\ud800", "\x00", "\u00e9", "\U0001f600", "a", "Z", "0", "9", "\\u0063", '"']
atom = st.one_of(st.sampled_from(ATOMS), st.characters(exclude_categories=()))
piece = st.lists(atom, max_size=8).map("".join)

VALUE = st.one_of(
    st.sampled_from(["1", "2", "123", "c1", "a b", "a,b", "a|b", "", " ", "é"]), piece
)
KEY = st.one_of(
    st.sampled_from(["permutive", "prmtvctx", "p", "puid", "gdpr", "uid", "", " "]), piece
)
keyvalues = st.dictionaries(KEY, st.lists(VALUE, max_size=4), max_size=3)
junk_keyvalues = st.dictionaries(
    st.one_of(st.text(), st.integers()),
    st.one_of(st.lists(st.one_of(st.text(), st.integers(), st.none())), st.text(), st.none()),
    max_size=3,
)
"""What a buggy caller might pass despite the annotations: apply must still not raise (an
internal error may be reported for it, as for any adapter)."""
any_keyvalues = st.one_of(
    keyvalues.map(lambda kv: (kv, True)), junk_keyvalues.map(lambda kv: (kv, False))
)


def recording() -> tuple[list[Failure], Any]:
    failures: list[Failure] = []
    return failures, lambda *a: failures.append(a)


# ---------------------------------------------------------------------------------------------
# query


def _query(names: list[str]) -> st.SearchStrategy[str]:
    name = st.one_of(st.sampled_from(names), piece)
    segment = st.one_of(
        st.tuples(name, piece).map(lambda t: f"{t[0]}={t[1]}"),
        st.tuples(
            st.sampled_from(["permutive", "prmtvctx", "p"]),
            st.lists(st.sampled_from(["1", "2", "c1", ""]), max_size=3),
        ).map(lambda t: f"{t[0]}=" + ",".join(t[1])),
        name,
        st.just(""),
    )
    return st.lists(segment, max_size=6).map("&".join)


QUERY_NAMES = ["permutive", "prmtvctx", "p", "ifa", "ifa_type", "lmt", "uid", "gdpr", "coppa"]
query_urls = st.tuples(
    st.sampled_from(["https://ads.example.com/vast", "http://127.0.0.1:8081/a/b", "HTTPS://h"]),
    st.one_of(st.none(), _query(QUERY_NAMES)),
    st.one_of(st.none(), piece),
).map(lambda t: t[0] + ("" if t[1] is None else "?" + t[1]) + ("" if t[2] is None else "#" + t[2]))
any_url = st.one_of(query_urls, st.text(), piece)

READ = {"gdpr", "gdpr_consent", "us_privacy", "gpp", "gpp_sid", "coppa"}
READ |= {"ifa", "ifa_type", "lmt", "is_lat", "uid", "content_url", "url", "description_url"}


@given(any_url, any_keyvalues)
def test_query_never_raises(url: str, given_kvs: tuple[dict[str, Any], bool]) -> None:
    kvs, typed = given_kvs
    failures, hook = recording()
    adapter = QueryAdapter(on_error=hook)
    request = AdRequest(url)
    why = reason(adapter, request)
    assert why in (None, "url")
    assert isinstance(context_of(adapter, request), Context)
    done = applied(adapter, request, kvs)
    if why is not None:
        assert done.request == request and context_of(adapter, request) == Context()
    assert failures == [] or not typed


@given(query_urls, keyvalues)
def test_query_touches_only_its_parameters(url: str, kvs: dict[str, list[str]]) -> None:
    out = QueryAdapter().apply_url(url, kvs)
    if not utf8(url) or any(ch <= " " or ch == "\x7f" for ch in url):
        assert out == url  # no request line carries these: not a URL to rewrite
        return
    base, query, frag = split(url)
    obase, oquery, ofrag = split(out)
    assert (obase, ofrag) == (base, frag)

    ours = []
    for key, values in kvs.items():
        if key.strip() and utf8(key) and key not in READ:
            kept = dedup([v for v in values if v and "," not in v and utf8(v)])
            if kept:
                ours.append((quote(key, safe=""), kept))
    assert_only_ours_changed(url, out, ours, segments(query), segments(oquery))


@given(query_urls, keyvalues)
def test_query_applying_twice_adds_nothing_more(url: str, kvs: dict[str, list[str]]) -> None:
    adapter = QueryAdapter(QuerySettings(separator="|", prefix="kv_"))
    once = adapter.apply_url(url, kvs)
    assert adapter.apply_url(once, kvs) == once


# ---------------------------------------------------------------------------------------------
# openrtb

CTX = "prmtvctx"
text = st.one_of(
    st.sampled_from(["permutive", "prmtvctx", "gdpr", "coppa", "1", "", "consent"]),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=12,
)


def _members(fixed: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of the `fixed` members and random others, in random order."""
    return st.tuples(
        st.fixed_dictionaries({}, optional=fixed),
        st.dictionaries(text, json_value, max_size=3),
        st.randoms(use_true_random=False),
    ).map(_shuffled)


def _shuffled(t: tuple[dict[str, Any], dict[str, Any], Any]) -> dict[str, Any]:
    fixed, extra, rnd = t
    items = list({**extra, **fixed}.items())
    rnd.shuffle(items)
    return dict(items)


entry = st.one_of(
    _members(
        {
            "name": st.one_of(st.sampled_from(["permutive", "prmtvctx", "p", "x.com"]), text),
            "segment": st.lists(st.fixed_dictionaries({"id": text}), max_size=3),
        }
    ),
    json_value,
)
data_list = st.one_of(st.lists(entry, max_size=4), json_value)
ext = st.one_of(
    _members({"data": st.one_of(st.dictionaries(text, json_value, max_size=3), json_value)}),
    json_value,
)
content = st.one_of(_members({"data": data_list, "url": text, "id": text}), json_value)
inventory = st.one_of(_members({"content": content, "ext": ext, "page": text}), json_value)
user = st.one_of(_members({"data": data_list, "ext": ext, "id": text, "consent": text}), json_value)
regs = st.one_of(
    _members(
        {
            "gdpr": st.one_of(st.sampled_from([0, 1]), json_value),
            "coppa": st.one_of(st.sampled_from([0, 1]), json_value),
            "ext": json_value,
        }
    ),
    json_value,
)
bid_request = _members(
    {
        "id": st.one_of(text, json_value),
        "imp": st.one_of(st.lists(json_value, max_size=2), json_value),
        "user": user,
        "site": inventory,
        "app": inventory,
        "dooh": inventory,
        "regs": regs,
        "device": json_value,
    }
)
URLS = ["https://pbs.example.com/openrtb2/auction", "https://ssp.example.com/bid"]


def post(url: str, body: bytes, method: str = "POST") -> AdRequest:
    return AdRequest(url, method=method, headers=(("Content-Type", "application/json"),), body=body)


def oracle(
    body: dict[str, Any], kvs: dict[str, list[str]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the adapter should make of a bid request: a deep copy changed in place."""
    out = copy.deepcopy(body)
    written: dict[str, Any] = {}
    for key, values in kvs.items():
        if not key.strip() or not utf8(key):
            continue
        ids = dedup([v for v in values if v.strip() and utf8(v)])
        if not ids:
            continue
        if key == CTX:
            where = next((n for n in ("site", "app", "dooh") if isinstance(out.get(n), dict)), None)
            if where is None:
                continue
            holder = out[where]
            holder.setdefault("content", {})
            done = (
                _entry(holder["content"], key, ids)
                if isinstance(holder["content"], dict)
                else False
            )
        else:
            out.setdefault("user", {})
            if not isinstance(out["user"], dict):
                continue
            holder = out["user"]
            done = _entry(holder, key, ids)
        holder.setdefault("ext", {})
        if isinstance(holder["ext"], dict):
            holder["ext"].setdefault("data", {})
            if isinstance(holder["ext"]["data"], dict):
                holder["ext"]["data"][key] = list(ids)
                done = True
        if done:
            written[key] = ids
    return out, written


def _entry(parent: dict[str, Any], key: str, ids: list[str]) -> bool:
    mine = {"name": key, "segment": [{"id": v} for v in ids]}
    data = parent.setdefault("data", [])
    if not isinstance(data, list):
        return False
    at = [i for i, e in enumerate(data) if isinstance(e, dict) and e.get("name") == key]
    if not at:
        data.append(mine)
        return True
    data[at[0]] = mine
    for i in reversed(at[1:]):
        del data[i]
    return True


def _is_bid_request(body: Any, url: str) -> bool:
    if not isinstance(body, dict):
        return False
    return (isinstance(body.get("id"), str) and isinstance(body.get("imp"), list)) or url.endswith(
        "/openrtb2/auction"
    )


@given(
    st.one_of(
        st.binary(max_size=40),
        st.text(max_size=40).map(lambda s: s.encode(errors="surrogatepass")),
        json_value.map(msgspec.json.encode),
        bid_request.map(msgspec.json.encode),
    ),
    st.sampled_from(URLS),
    st.sampled_from(["POST", "GET", "post", "PUT"]),
    any_keyvalues,
)
def test_openrtb_never_raises(
    body: bytes, url: str, method: str, given_kvs: tuple[dict[str, Any], bool]
) -> None:
    kvs, typed = given_kvs
    failures, hook = recording()
    adapter = OpenRtbAdapter(on_error=hook)
    request = post(url, body, method)
    why = reason(adapter, request)
    assert why in (None, "method", "json", "body", "duplicate_keys")
    assert isinstance(context_of(adapter, request), Context)
    done = applied(adapter, request, kvs)
    if why is not None:
        assert done.request == request and done.written == {}
    else:
        msgspec.json.decode(done.request.body)
    assert failures == [] or not typed


@given(bid_request, st.sampled_from(URLS), keyvalues)
def test_openrtb_changes_only_our_members(
    body: dict[str, Any], url: str, kvs: dict[str, list[str]]
) -> None:
    failures, hook = recording()
    adapter = OpenRtbAdapter(on_error=hook)
    raw = msgspec.json.encode(body)
    request = post(url, raw)
    done = applied(adapter, request, kvs)
    assert failures == []
    if not _is_bid_request(body, url):
        assert done.request == request
        return

    expected, written = oracle(body, kvs)
    assert done.written == written
    assert done.request.url == request.url and done.request.headers == request.headers
    if expected == body:  # nothing new: not even the formatting changes
        assert done.request.body == raw
    else:  # same values, same member order, same array order
        assert done.request.body == msgspec.json.encode(expected)

    again = applied(adapter, done.request, kvs)
    assert again.request == done.request


@given(bid_request, st.sampled_from(URLS), keyvalues)
def test_openrtb_parse_never_fails_on_bid_requests(
    body: dict[str, Any], url: str, kvs: dict[str, list[str]]
) -> None:
    failures, hook = recording()
    adapter = OpenRtbAdapter(OpenRtbSettings(user_id_tag="uid"), on_error=hook)
    request = post(url, msgspec.json.encode(body))
    context = context_of(adapter, request)
    # what the adapter writes never changes what it reads
    assert context_of(adapter, applied(adapter, request, kvs).request) == context
    assert failures == []


FLAGS = st.lists(st.sampled_from(["0", "1", "true", '"1"', "null", "2"]), min_size=1, max_size=3)


@given(FLAGS, FLAGS, st.booleans(), keyvalues)
def test_openrtb_duplicate_keys_count_every_copy(
    gdprs: list[str], coppas: list[str], escaped: bool, kvs: dict[str, list[str]]
) -> None:
    name = "copp\\u0061" if escaped else "coppa"
    members = [f'"gdpr":{g}' for g in gdprs] + [f'"{name}":{c}' for c in coppas]
    regs = ",".join(members)
    raw = f'{{"id":"x","imp":[],"site":{{"page":"https://e.example/"}},"regs":{{{regs}}}}}'.encode()
    adapter = OpenRtbAdapter()
    request = post(URLS[1], raw)
    consent = context_of(adapter, request).consent

    def flag(v: str) -> bool | None:
        return {"0": False, "1": True, "true": True, '"1"': True}.get(v)

    def gdpr_flag(v: str) -> bool | None:
        # a value that is there but not 0/1 fails closed: GDPR applies
        return flag(v) if v in ("0", "1", "true", '"1"', "null") else True

    def deny_flag(v: str) -> bool | None:
        # a deny-only flag that is there but neither set nor unset counts as set
        return flag(v) if v in ("0", "1", "true", '"1"', "null") else True

    assert consent.child_directed is (
        True
        if any(deny_flag(c) is True for c in coppas)
        else (False if any(deny_flag(c) is False for c in coppas) else None)
    )
    known = {gdpr_flag(g) for g in gdprs} - {None}
    if len(known) > 1:
        assert consent.gdpr is None and "regs.gdpr" in consent.conflicts
    else:
        assert consent.gdpr == (known.pop() if known else None)
    # regs is not written into: the body is, and the repeated keys stay as they were sent
    out = applied(adapter, request, kvs).request.body
    assert f'"regs":{{{regs}}}'.encode() in out
    assert outside(out, ["user", "site"]) == outside(raw, ["user", "site"])


WRITTEN_INTO = {
    "": '{"id":"x","imp":[],"site":{"page":"p"},%s}',
    "user": '{"id":"x","imp":[],"user":{%s}}',
    "user.ext": '{"id":"x","imp":[],"user":{"ext":{%s}}}',
    "user.ext.data": '{"id":"x","imp":[],"user":{"ext":{"data":{%s}}}}',
    "site": '{"id":"x","imp":[],"site":{"page":"p",%s}}',
    "site.content": '{"id":"x","imp":[],"site":{"page":"p","content":{%s}}}',
}
SPELLINGS = [str.lower, str.upper, str.title, lambda n: f"\\u{ord(n[0]):04x}{n[1:]}"]


@given(
    st.sampled_from(sorted(WRITTEN_INTO)),
    st.sampled_from(["user", "data", "ext", "consent", "id", "site"]),
    st.sampled_from(SPELLINGS),
    st.sampled_from(SPELLINGS),
)
def test_openrtb_a_repeated_name_where_we_write_is_not_recognised(
    where: str, name: str, first: Any, second: Any
) -> None:
    """Any object the adapter writes into (the root included) with a name twice, in any case
    or behind an escape, is left alone: which copy a bidder reads is not ours to choose."""
    raw = (WRITTEN_INTO[where] % f'"{first(name)}":{{}},"{second(name)}":{{}}').encode()
    adapter = OpenRtbAdapter()
    request = post(URLS[0], raw)
    assert adapter.read(request) == Unrecognised("duplicate_keys", "openrtb")


@given(bid_request, st.sampled_from(URLS), keyvalues, st.integers(0, 3), st.booleans())
def test_openrtb_formatting_survives_outside_what_it_writes(
    body: dict[str, Any], url: str, kvs: dict[str, list[str]], indent: int, ascii_only: bool
) -> None:
    """A body as a person or another encoder formats it: the written members go in, every
    other byte (whitespace, escapes) stays, and the values are the oracle's."""
    raw = json.dumps(body, indent=indent or None, ensure_ascii=ascii_only).encode()
    adapter = OpenRtbAdapter()
    request = post(url, raw)
    if reason(adapter, request) is not None:
        return
    done = applied(adapter, request, kvs)
    expected, written = oracle(body, kvs)
    assert done.written == written
    got = msgspec.json.decode(done.request.body)
    assert msgspec.json.encode(got) == msgspec.json.encode(expected)
    ours = ["user.data", "user.ext"] + [f"{n}.{m}" for n in INVENTORY for m in ("content", "ext")]
    if "user" not in body:
        ours.append("user")
    assert outside(done.request.body, ours) == outside(raw, ours)
