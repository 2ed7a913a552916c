"""Property tests for the adapters: they never raise, never touch what is not theirs, and what
they write reads back as written.

The number of examples comes from the hypothesis profile loaded in `conftest.py`
(`HYPOTHESIS_PROFILE=long` for ≥ 10,000 per target). The oracles (below, and
`tests/adapters/url_oracles.py`) split URLs with their own plain code, not the adapters' helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, unquote_plus

from hypothesis import given
from hypothesis import strategies as st

from adapters import (
    AdsWizzAdapter,
    FreeWheelAdapter,
    GamAdapter,
    Parsed,
    Unrecognised,
    UrlAdapter,
    default_adapters,
)
from adapters.gam import GamSettings
from adapters.params import decode, encode
from plugin.context import Context
from plugin.request import AdRequest
from tests.adapters.url_oracles import (
    assert_only_ours_changed,
    dedup,
    named,
    segments,
    split,
    utf8,
)

ADAPTERS = tuple(a for a in default_adapters() if isinstance(a, UrlAdapter))
"""The URL-shaped platforms (bid requests are fuzzed in `tests/adapters/test_fuzz.py`)."""
BIG = 10**7

# ---------------------------------------------------------------------------------------------
# strategies

ATOMS = [*"&=;,%#?+/ :.~_-", "%2", "%zz", "%26", "%3D", "%3d", "%2C", "%2c", "%25", "%ff"]
ATOMS += ["%C3%A9", "%E2%82", "\ud800", "\x00", "\u00e9", "\U0001f600", "a", "Z", "0", "9"]
atom = st.one_of(st.sampled_from(ATOMS), st.characters(exclude_categories=()))
piece = st.lists(atom, max_size=8).map("".join)

VALUE = st.one_of(st.sampled_from(["1", "2", "123", "a b", "x=y", "a,b", "", "é", "b" * 41]), piece)
KEY = st.one_of(
    st.sampled_from(["permutive", "p", "k"]),
    st.sampled_from(["permutive", "prmtvctx", "p", "k", "_fw_gdpr", "gpp", "k" * 21, "", " "]),
    piece,
)
keyvalues = st.dictionaries(KEY, st.lists(VALUE, max_size=5), max_size=3)


def _query(names: list[str], special: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    name = st.one_of(st.sampled_from(names), piece)
    segment = st.one_of(
        st.tuples(name, piece).map(lambda t: f"{t[0]}={t[1]}"),
        name,
        st.just(""),
        special,
    )
    return st.lists(segment, max_size=6).map("&".join)


def _url(prefixes: list[str], query: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(t: tuple[str, str | None, str | None]) -> str:
        prefix, q, frag = t
        return prefix + ("" if q is None else "?" + q) + ("" if frag is None else "#" + frag)

    return st.tuples(
        st.sampled_from(prefixes), st.one_of(st.none(), query), st.one_of(st.none(), piece)
    ).map(build)


cust_entry = st.tuples(
    st.one_of(st.sampled_from(["permutive", "prmtvctx", "p", "k"]), piece),
    st.one_of(
        st.none(), st.lists(st.one_of(st.sampled_from(["1", "2", "123"]), piece), max_size=3)
    ),
).map(lambda t: t[0] if t[1] is None else t[0] + "%3D" + "%2C".join(t[1]))
gam_urls = _url(
    ["https://pubads.g.doubleclick.net/gampad/ads", "http://h/gampad/live/ads", "/gampad/ads"],
    _query(
        ["cust_params", "cust_paramsx", "iu", "ppid", "rdid", "idtype", "gdpr", "url"],
        st.lists(cust_entry, max_size=3).map(lambda es: "cust_params=" + "%26".join(es)),
    ),
)
# cust_params made of entries for the very keys being written: bare, empty, with values
focused_entry = st.tuples(
    st.sampled_from(["p", "k", ""]),
    st.one_of(st.none(), st.lists(st.sampled_from(["1", "2", "3"]), max_size=2)),
).map(lambda t: t[0] if t[1] is None else t[0] + "%3D" + "%2C".join(t[1]))
gam_focused_urls = st.lists(focused_entry, max_size=4).map(
    lambda es: "https://h/gampad/ads?a=1&cust_params=" + "%26".join(es) + "&z=2"
)
focused_keyvalues = st.dictionaries(
    st.sampled_from(["p", "k", "q"]), st.lists(st.sampled_from(["1", "2", "3", "4"]), max_size=3)
)
fw_query = st.lists(
    _query(["nw", "caid", "_fw_did", "_fw_gdpr", "permutive", "p", "k", "vprn"], piece),
    max_size=5,
).map(";".join)
fw_urls = _url(["https://5fd74.v.fwmrm.net/ad/g/1", "http://127.0.0.1/ad/g/1"], fw_query)
aw_urls = _url(
    ["https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/z", "http://h/afr.php"],
    _query(
        ["aw_0_1st.permutive", "aw_0_1st.p", "aw_0_1st.k", "listenerId", "aw_0_req.gdpr"],
        st.tuples(
            st.sampled_from(["permutive", "p", "k"]),
            st.one_of(
                st.none(), st.lists(st.one_of(st.sampled_from(["1", "2"]), piece), max_size=3)
            ),
        ).map(lambda t: f"aw_0_1st.{t[0]}" + ("" if t[1] is None else "=" + ",".join(t[1]))),
    ),
)
any_text = st.one_of(st.text(), piece, gam_urls, fw_urls, aw_urls)

# ---------------------------------------------------------------------------------------------
# plain oracles


GAM_FORBIDDEN = set("\"'=!+#*~;^()<>[],&")


def gam_ok(ch: str) -> bool:
    return ch not in GAM_FORBIDDEN and ch.isprintable() and not ch.isspace()


def gam_expected(kvs: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    out = []
    for key, values in kvs.items():
        if not key or len(key) > 20 or not all(gam_ok(c) for c in key):
            continue
        cleaned = ["".join(c for c in v if gam_ok(c)) for v in values]
        kept = dedup([v for v in cleaned if 0 < len(v) <= 40])
        if kept:
            out.append((key, kept))
    return out


def cust_values(raw: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in unquote_plus(raw, errors="replace").split("&"):
        key, eq, vals = entry.partition("=")
        if key or eq:
            out.setdefault(key, []).extend(vals.split(",") if vals else [])
    return out


def plain_expected(
    kvs: dict[str, list[str]], key_ok: Callable[[str], bool], value_ok: Callable[[str], bool]
) -> list[tuple[str, list[str]]]:
    out = []
    for key, values in kvs.items():
        if key_ok(key):
            kept = dedup([v for v in values if v and utf8(v) and value_ok(v)])
            if kept:
                out.append((key, kept))
    return out


# ---------------------------------------------------------------------------------------------
# every adapter


# what a buggy caller might pass despite the annotations: apply must still not raise
junk_keyvalues = st.dictionaries(
    st.one_of(st.text(), st.integers()),
    st.one_of(st.lists(st.one_of(st.text(), st.integers(), st.none())), st.text(), st.none()),
    max_size=3,
)


@given(any_text, st.one_of(keyvalues, junk_keyvalues))
def test_never_raises(url: str, kvs: dict[str, list[str]]) -> None:
    for adapter in ADAPTERS:
        assert isinstance(adapter.read(AdRequest(url)), Parsed | Unrecognised)
        assert isinstance(adapter.parse_url(url), Context)
        assert isinstance(adapter.apply_url(url, kvs), str)


@given(st.one_of(st.text(), piece), keyvalues)
def test_url_no_adapter_recognises_comes_back_unchanged(
    url: str, kvs: dict[str, list[str]]
) -> None:
    for adapter in ADAPTERS:
        if isinstance(adapter.read(AdRequest(url)), Unrecognised):
            assert adapter.apply_url(url, kvs) == url
            assert adapter.parse_url(url) == Context()


@given(st.sampled_from(["", "not a url", "http://[::1", "%%%", "?&;#", "\ud800"]), keyvalues)
def test_garbage_comes_back_unchanged(url: str, kvs: dict[str, list[str]]) -> None:
    for adapter in ADAPTERS:
        assert adapter.apply_url(url, kvs) == url
        assert adapter.parse_url(url) == Context()


@given(st.one_of(gam_urls, fw_urls, aw_urls), keyvalues)
def test_applying_twice_adds_nothing_more(url: str, kvs: dict[str, list[str]]) -> None:
    for adapter in (
        GamAdapter(GamSettings(max_url_length=BIG)),
        FreeWheelAdapter(),
        AdsWizzAdapter(),
    ):
        once = adapter.apply_url(url, kvs)
        assert adapter.apply_url(once, kvs) == once


@given(st.text())
def test_decode_encode_round_trip(s: str) -> None:
    decode(s)
    decode(s, plus=False)
    if utf8(s):
        assert decode(encode(s)) == s


# ---------------------------------------------------------------------------------------------
# GAM


@given(st.one_of(gam_urls, gam_focused_urls), st.one_of(keyvalues, focused_keyvalues))
def test_gam_touches_only_cust_params_and_writes_what_it_means(
    url: str, kvs: dict[str, list[str]]
) -> None:
    out = GamAdapter(GamSettings(max_url_length=BIG)).apply_url(url, kvs)
    base, query, frag = split(url)
    obase, oquery, ofrag = split(out)
    assert (obase, ofrag) == (base, frag)

    before, after = segments(query), segments(oquery)
    at = next((i for i, s in enumerate(before) if named(s, "cust_params")), None)
    if at is None:
        if out == url:
            old_raw = None
        else:
            assert after[:-1] == before and after[-1].startswith("cust_params=")
            old_raw = ""
        new_raw = after[-1][len("cust_params=") :] if out != url else ""
    else:
        assert len(after) == len(before)
        assert after[:at] == before[:at] and after[at + 1 :] == before[at + 1 :]
        assert named(after[at], "cust_params")
        old_raw = before[at][len("cust_params=") :]
        new_raw = after[at][len("cust_params=") :]

    old = cust_values(old_raw or "")
    expected = {k: list(v) for k, v in old.items()}
    for key, values in gam_expected(kvs):
        have = set(old.get(key, []))
        fresh = [v for v in values if v not in have]
        if fresh:
            expected.setdefault(key, []).extend(fresh)
    if expected == old:
        assert out == url
    else:
        assert cust_values(new_raw) == expected


@given(
    st.one_of(gam_urls, gam_focused_urls),
    st.one_of(keyvalues, focused_keyvalues),
    st.integers(min_value=1, max_value=400),
)
def test_gam_length_budget_keeps_a_prefix_of_our_values(
    url: str, kvs: dict[str, list[str]], budget: int
) -> None:
    out = GamAdapter(GamSettings(max_url_length=budget)).apply_url(url, kvs)
    full = GamAdapter(GamSettings(max_url_length=BIG)).apply_url(url, kvs)
    if out != url:
        assert len(out) <= budget
    # the budget is tight: exactly the full length keeps everything, one less does not
    assert GamAdapter(GamSettings(max_url_length=len(full))).apply_url(url, kvs) == full
    if full != url:
        assert GamAdapter(GamSettings(max_url_length=len(full) - 1)).apply_url(url, kvs) != full
    kept, everything = _added(url, out, kvs), _added(url, full, kvs)
    assert kept == everything[: len(kept)]


def _cust_raw(url: str) -> str:
    found = [s for s in segments(split(url)[1]) if named(s, "cust_params")]
    return found[0][len("cust_params=") :] if found else ""


def _added(url: str, out: str, kvs: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Our (key, value) pairs in `out` that `url` did not have, in key-values order."""
    old, new = cust_values(_cust_raw(url)), cust_values(_cust_raw(out))
    return [(k, v) for k in kvs for v in new.get(k, [])[len(old.get(k, [])) :]]


# ---------------------------------------------------------------------------------------------
# FreeWheel


def _fw_key_ok(key: str) -> bool:
    return bool(key.strip()) and not key.startswith("_fw_") and key not in ("gpp", "gpp_sid")


@given(fw_urls, keyvalues)
def test_freewheel_touches_only_the_key_value_section(url: str, kvs: dict[str, list[str]]) -> None:
    out = FreeWheelAdapter().apply_url(url, kvs)
    base, query, frag = split(url)
    obase, oquery, ofrag = split(out)
    assert (obase, ofrag) == (base, frag)
    if query is None:
        assert out == url
        return
    assert oquery is not None
    assert oquery.endswith(";") == query.endswith(";")

    before, after = query.split(";"), oquery.split(";")
    kv = before[1] if len(before) > 1 else ""
    present: dict[str, set[str]] = {}
    for pair in kv.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            present.setdefault(unquote_plus(name), set()).add(unquote_plus(value))
    wanted = [
        (k, v)
        for k, vs in plain_expected(kvs, lambda k: _fw_key_ok(k) and utf8(k), lambda v: True)
        for v in vs
        if v not in present.get(k, set())
    ]
    if not wanted:
        assert out == url
        return

    if len(before) == 1:
        assert after[0] == before[0] and len(after) == 2
        added = after[1]
    elif len(before) == 2 and before[1] == "":
        assert after == [before[0], after[1], ""]
        added = after[1]
    else:
        assert len(after) == len(before)
        assert after[0] == before[0] and after[2:] == before[2:]
        prefix = before[1] + ("&" if before[1] else "")
        assert after[1].startswith(prefix)
        added = after[1][len(prefix) :]
    pairs = [p.partition("=") for p in added.split("&")]
    assert [(unquote_plus(n), unquote_plus(v)) for n, _, v in pairs] == wanted


# ---------------------------------------------------------------------------------------------
# AdsWizz


@given(aw_urls, keyvalues)
def test_adswizz_touches_only_its_parameters(url: str, kvs: dict[str, list[str]]) -> None:
    out = AdsWizzAdapter().apply_url(url, kvs)
    base, query, frag = split(url)
    obase, oquery, ofrag = split(out)
    assert (obase, ofrag) == (base, frag)

    ours = plain_expected(kvs, lambda k: bool(k.strip()) and utf8(k), lambda v: "," not in v)
    named_ours = [("aw_0_1st." + quote(k, safe=""), values) for k, values in ours]
    assert_only_ours_changed(url, out, named_ours, segments(query), segments(oquery))
