"""Reserved `cohortkv_*` names however a lenient decoder would spell them (percent-encoded, any
ASCII case): read and removed on every way in (the proxy, `/v1/enrich`, the client middleware,
`Enricher.enrich`), each test an attacker's request with loopback fakes of the Permutive APIs and
the ad server.

Requests whose exact bytes matter go out with `yarl.URL(..., encoded=True)`: yarl would otherwise
decode `%5F` to `_` before the sidecar saw it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import pytest
import yarl
from hypothesis import given
from hypothesis import strategies as st

from plugin import ConsentSignals, Context, Enricher
from plugin.middleware import cohortkv_middleware
from plugin.reserved import PROPERTY_PREFIX, split_reserved, split_url
from tests.helpers.fake_adserver import FakeAdServer, Running, sidecar_config
from tests.helpers.fakes import FakePermutive

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
TAIL = (
    f"/gampad/ads?iu=/1/ctv&rdid={IDFA}&idtype=idfa&us_privacy=1YNN"
    "&description_url=https%3A%2F%2Fpub.example%2Fv%2F1"
)
"""A GAM ad request that is consented on its own (US Privacy, not opted out), with a device id."""
AD_HOST = "https://pubads.g.doubleclick.net"


def reserved_fields(query: str) -> list[str]:
    """The fields of `query` whose decoded name is reserved, in any case."""
    names = (f.partition("=")[0] for f in re.split("[&;]", query))
    return [n for n in names if unquote(n).lower().startswith("cohortkv_")]


async def get(side: Running, target: str, **kw: Any) -> aiohttp.ClientResponse:
    """GET `target` through the sidecar, byte for byte as written."""
    base = str(side.client.make_url("/")).rstrip("/")
    return await side.client.session.get(yarl.URL(base + target, encoded=True), **kw)


# -- attacks through every way in ----------------------------------------------

CONSENT_SPELLINGS = [
    "cohortkv%5Fconsent",
    "cohortkv%5fconsent",
    "%63ohortkv_consent",
    "%63%6F%68%6F%72%74%6B%76%5F%63%6F%6E%73%65%6E%74",
    "COHORTKV_CONSENT",
    "CohortKV%5FConsent",
]


@pytest.mark.parametrize("name", CONSENT_SPELLINGS)
async def test_an_encoded_denial_is_read_and_removed_by_the_proxy(
    fake: FakePermutive, ads: FakeAdServer, side: Running, name: str
) -> None:
    resp = await get(side, f"/proxy/gam{TAIL}&{name}=denied")
    assert resp.status == 200
    assert fake.calls["ccs"] == 0  # the host's denial counts, however it is spelled
    assert reserved_fields(ads.last.query) == []
    # The same request without it is consented: the denial was what stopped the CCS call.
    assert (await get(side, f"/proxy/gam{TAIL}")).status == 200
    assert fake.calls["ccs"] == 1


async def test_an_encoded_user_id_is_used_and_never_reaches_the_ad_server(
    fake: FakePermutive, ads: FakeAdServer, side: Running
) -> None:
    resp = await get(side, f"/proxy/gam{TAIL}&cohortkv%5Fuid={USER}")
    assert resp.status == 200
    assert fake.bodies["ccs"][-1]["body"]["user_id"] == USER
    assert USER not in ads.last.target and reserved_fields(ads.last.query) == []


@pytest.mark.parametrize("name", CONSENT_SPELLINGS[:3])
async def test_an_encoded_denial_counts_through_the_json_api(side: Running, name: str) -> None:
    url = f"{AD_HOST}{TAIL}&{name}=denied&cohortkv%5Fsid=s1"
    resp = await side.client.post("/v1/enrich", json={"url": url})
    doc = await resp.json()
    assert resp.status == 200, doc
    assert doc["consent"] == {"allowed": False, "reason": "override_denied"}
    assert reserved_fields(doc["url"].partition("?")[2]) == []


async def test_an_encoded_denial_counts_in_the_library_and_the_middleware(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = sidecar_config(fake, ads)
    async with Enricher(cfg) as e:
        r = await e.enrich(f"{AD_HOST}{TAIL}&cohortkv%5Fconsent=denied")
        assert (r.consent.allowed, r.consent.reason) == (False, "override_denied")
        assert reserved_fields(r.url.partition("?")[2]) == []
        async with aiohttp.ClientSession(middlewares=(cohortkv_middleware(e),)) as s:
            target = yarl.URL(f"{ads.url}{TAIL}&%63ohortkv_consent=denied&x=1", encoded=True)
            async with s.get(target) as resp:
                assert resp.status == 200
        assert fake.calls["ccs"] == 0
        assert reserved_fields(ads.last.query) == [] and "&x=1&" in ads.last.query


async def test_the_host_context_wins_over_the_url_but_never_over_a_denial(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with Enricher(sidecar_config(fake, ads)) as e:
        # The URL can deny what the host granted ...
        r = await e.enrich(
            f"{AD_HOST}{TAIL}&cohortkv_consent=denied",
            Context(consent=ConsentSignals(override=True)),
        )
        assert r.consent.reason == "override_denied"
        # ... and cannot grant what the host denied.
        r = await e.enrich(
            f"{AD_HOST}/gampad/ads?iu=/1&cohortkv_consent=granted&cohortkv_uid={USER}",
            Context(consent=ConsentSignals(override=False)),
        )
        assert r.consent.reason == "override_denied" and fake.calls["ccs"] == 0


# -- the parser on its own -----------------------------------------------------------


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """`name` as a lenient decoder still reads it: any letter in either case, any character
    percent-encoded with either case of hex digits."""
    out = []
    for ch in name:
        if ch.isalpha() and draw(st.booleans()):
            ch = ch.upper()
        if draw(st.booleans()):
            code = f"%{ord(ch):02X}"
            ch = code if draw(st.booleans()) else code.lower()
        out.append(ch)
    return "".join(out)


SUFFIXES = ["sid", "uid", "consent", "content_url", "vid", "client_type", "other"]
plain = st.text(alphabet="abxyz_=%2CF.-+[]|09", max_size=12)
reserved = st.sampled_from(SUFFIXES).flatmap(
    lambda suffix: st.tuples(st.just(suffix), spelled("cohortkv_" + suffix))
)
fields = st.lists(st.one_of(plain, reserved), max_size=6)


@given(st.lists(fields, min_size=1, max_size=3))
def test_a_reserved_name_is_removed_however_it_is_spelled(secs: list[list[object]]) -> None:
    query = ";".join("&".join(f if isinstance(f, str) else f"{f[1]}=v" for f in fs) for fs in secs)
    out, found = split_reserved(query)
    kept = ";".join("&".join(f for f in fs if isinstance(f, str)) for fs in secs)
    assert out == kept
    given = {f"cohortkv_{f[0]}" for fs in secs for f in fs if isinstance(f, tuple)}
    assert {name.lower() for name in found} == given
    # Known names are read under their own spelling (an unknown one is only removed).
    assert {n for n in found if n.lower() != "cohortkv_other"} == given - {"cohortkv_other"}


def test_a_property_keeps_the_case_of_its_own_name() -> None:
    _, found = split_reserved("COHORTKV%5FP.Title=a&cohortkv_p.title=b")
    assert found == {f"{PROPERTY_PREFIX}Title": "a", f"{PROPERTY_PREFIX}title": "b"}


@pytest.mark.parametrize(
    ("url", "out"),
    [
        ("https://a/x?cohortkv%5Fsid=1", "https://a/x"),
        ("https://a/x?a=1&COHORTKV_SID=1#f", "https://a/x?a=1#f"),
        ("https://a/x?cohortkv_sid=1#frag", "https://a/x#frag"),
        ("https://a/x?a=%41#cohortkv_sid=1", "https://a/x?a=%41#cohortkv_sid=1"),
    ],
)
def test_split_url_removes_reserved_fields_from_the_query_only(url: str, out: str) -> None:
    assert split_url(url)[0] == out


def test_split_url_returns_a_url_without_reserved_fields_as_is() -> None:
    url = "https://a/x?iu=%2F1&cust_params=a%3Db"
    assert split_url(url)[0] is url


# -- what a lenient reader still takes for a reserved name ---------------------------------


def lenient_reserved(query: str) -> list[str]:
    """The names in `query` a lenient reader may take for reserved: the name as written,
    percent-decoded once or twice, NUL removed, whitespace and `+` trimmed, in any case; at the
    top level and inside a value that is itself URL-encoded key-values (`cust_params`)."""

    def reserved(name: str) -> bool:
        once = unquote(name)
        for spelling in (name, once, unquote(once)):
            if spelling.replace("\x00", "").strip(" \t\n\r\f\v+").lower().startswith("cohortkv_"):
                return True
        return False

    out = []
    for field in re.split("[&;]", query):
        name, _, value = field.partition("=")
        inner = (
            [f.partition("=")[0] for f in unquote(value).split("&")]
            if "=" in unquote(value)
            else []
        )
        out.extend(n for n in [name, *inner] if reserved(n))
    return out


LENIENT_SPELLINGS = [
    "+cohortkv_consent",
    "%20cohortkv_consent",
    "%2Bcohortkv_consent",
    "cohortkv_consent+",
    "cohortkv%00_consent",
    "%00cohortkv_consent",
    "%2563ohortkv_consent",
    "cohortkv%255Fconsent",
    "%2563%256F%2568ortkv%255fCONSENT",
]


@pytest.mark.parametrize("name", LENIENT_SPELLINGS)
async def test_a_leniently_spelled_denial_is_read_and_removed_by_the_proxy(
    fake: FakePermutive, ads: FakeAdServer, side: Running, name: str
) -> None:
    resp = await get(side, f"/proxy/gam{TAIL}&{name}=denied&cohortkv%2500_uid={USER}")
    assert resp.status == 200
    assert fake.calls["ccs"] == 0  # the denial counts
    assert lenient_reserved(ads.last.query) == [] and USER not in ads.last.target


@pytest.mark.parametrize(
    "nested",
    [
        "cohortkv_consent%3Ddenied",
        "sect%3Dsport%26cohortkv_consent%3Ddenied",
        "sect%3Dsport%26COHORTKV%255Fconsent%3Ddenied%26x%3D1",
        "%2Bcohortkv_consent%3Ddenied",
    ],
)
async def test_a_denial_nested_in_cust_params_counts_and_is_removed(
    fake: FakePermutive, ads: FakeAdServer, side: Running, nested: str
) -> None:
    resp = await get(side, f"/proxy/gam{TAIL}&cust_params={nested}&cohortkv_uid={USER}")
    assert resp.status == 200
    assert fake.calls["ccs"] == 0
    assert lenient_reserved(ads.last.query) == [] and USER not in ads.last.target
    others = [f for f in unquote(nested).split("&") if "ohortkv" not in unquote(f).lower()]
    assert ("cust_params=" + "%26".join(o.replace("=", "%3D") for o in others)) in ads.last.query


async def test_a_reserved_name_in_a_freewheel_key_value_section_is_removed(
    fake: FakePermutive, ads: FakeAdServer, side: Running
) -> None:
    fw = f"/ad/g/1?nw=1&resp=vast4&_fw_did=idfa:{IDFA};%20cohortkv_uid={USER}&k=v;slid=pre"
    resp = await get(side, f"/proxy/freewheel{fw}")
    assert resp.status == 200
    assert lenient_reserved(ads.last.query) == [] and USER not in ads.last.target
    assert ads.last.query.endswith(";k=v;slid=pre")


@st.composite
def leniently_spelled(draw: st.DrawFn, name: str) -> str:
    """`name` as a lenient reader still reads it: letters in either case, characters
    percent-encoded once or twice, NUL inside, whitespace or `+` around."""
    out = []
    for ch in name:
        if ch.isalpha() and draw(st.booleans()):
            ch = ch.upper()
        how = draw(st.sampled_from(["plain", "once", "twice", "nul"]))
        if how == "once":
            ch = f"%{ord(ch):02X}"
        elif how == "twice":
            ch = f"%25{ord(ch):02X}"
        elif how == "nul":
            ch = draw(st.sampled_from(["%00", "%2500"])) + ch
        out.append(ch)
    around = st.sampled_from(["", "+", "%20", "%2B", "%09", "%00", "%2520"])
    return draw(around) + "".join(out) + draw(around)


lenient_reserved_field = st.sampled_from(SUFFIXES).flatmap(
    lambda suffix: leniently_spelled("cohortkv_" + suffix)
)
plain_name = st.text(alphabet="abxyz_.-", min_size=1, max_size=6)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("plain"), plain_name),
            st.tuples(st.just("reserved"), lenient_reserved_field),
            st.tuples(st.just("nested"), st.lists(st.one_of(plain_name, lenient_reserved_field))),
        ),
        max_size=6,
    )
)
def test_nothing_a_lenient_reader_takes_for_reserved_is_left(
    fields: list[tuple[str, Any]],
) -> None:
    def nested(names: list[str]) -> str:
        return "%26".join(f"{quote(n, safe='')}%3Dv" for n in names)

    parts = []
    for kind, what in fields:
        if kind == "nested":
            parts.append(f"cust_params={nested(what)}")
        else:
            parts.append(f"{what}=v")
    query = "&".join(parts)
    out, found = split_reserved(query)
    assert lenient_reserved(out) == []
    expected = [p for (kind, _), p in zip(fields, parts, strict=True) if kind == "plain"]
    kept = [p for p in out.split("&") if p and not p.startswith("cust_params=")]
    assert kept == expected
    reserved_given = any(k == "reserved" for k, _ in fields) or any(
        lenient_reserved(f"{n}=v") for k, w in fields if k == "nested" for n in w
    )
    assert bool(found) == reserved_given
