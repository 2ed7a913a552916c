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
from urllib.parse import unquote

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
