"""Values a viewer puts under our keys before cohortkv writes: under the behavioral key they
could pass for cohorts, so a denied or child-directed request goes out without them; under a
contextual key of its own ours replace theirs. Each through the sidecar's proxy to a loopback ad
server that records what arrived, with the Permutive APIs faked on loopback."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from adapters import AdsWizzAdapter, FreeWheelAdapter, QueryAdapter
from adapters.base import Parsed
from adapters.gam import GamAdapter
from plugin import Config, ConsentSignals, Context, Enricher
from plugin.config import KeysConfig
from plugin.request import AdRequest
from tests.helpers.fake_adserver import FakeAdServer, Running
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.test_reserved_names import IDFA, get

GAM = (
    f"/proxy/gam/gampad/ads?iu=/1/ctv&rdid={IDFA}&idtype=idfa&us_privacy=1YNN"
    "&description_url=https%3A%2F%2Fpub.example%2Fv%2F1"
)
FW = (
    f"/proxy/freewheel/ad/g/1?nw=1&_fw_did=idfa:{IDFA}"
    "&_fw_content_url=https%3A%2F%2Fpub.example%2Fv%2F1"
)
AW = (
    f"/proxy/adswizz/vast/4.0/request/alias/z?aw_0_1st.ifa={IDFA}&aw_0_1st.ifaType=idfa"
    "&aw_0_1st.contentUrl=https%3A%2F%2Fpub.example%2Fv%2F1"
)

DENIED = [
    pytest.param(
        GAM + "&cust_params=sect%3Dsport%26permutive%3D123%2C456%26PERMUTIVE%3D7&tfcd=1",
        "cust_params=sect%3Dsport%26permutive%3D99999&tfcd=1",
        2,  # two entries: one with two values, one in capitals
        id="gam_child_directed",
    ),
    pytest.param(
        GAM + "&cohortkv_consent=denied&cust_params=permutive%3D123",
        "cust_params=permutive%3D99999",
        1,
        id="gam_denied",
    ),
    pytest.param(
        FW + ";permutive=123&k=v&Permutive=4;slid=pre&_fw_coppa=1",
        ";k=v&permutive=88888;slid=pre&_fw_coppa=1",
        2,
        id="freewheel_child_directed",
    ),
    pytest.param(
        AW + "&aw_0_1st.permutive=123&aw_0_req.coppa=1",
        f"/alias/z?aw_0_1st.ifa={IDFA}&aw_0_1st.ifaType=idfa&aw_0_1st.contentUrl=https%3A%2F%2Fpub.example%2Fv%2F1&aw_0_req.coppa=1",
        1,
        id="adswizz_child_directed",
    ),
]


@pytest.mark.parametrize(("target", "tail", "removed"), DENIED)
async def test_a_denied_request_goes_out_without_the_viewers_behavioral_values(
    fake: FakePermutive, ads: FakeAdServer, side: Running, target: str, tail: str, removed: int
) -> None:
    resp = await get(side, target)
    assert resp.status == 200
    assert fake.calls.get("ccs", 0) == 0
    assert ads.last.target.endswith(tail), ads.last.target
    assert "123" not in ads.last.target
    platform = target.split("/")[2]
    kind = "viewer_keyvalue_removed"
    assert side.sample("cohortkv_bad_input_total", source=platform, kind=kind) == removed


async def test_a_consented_request_keeps_the_values_already_there(
    fake: FakePermutive, ads: FakeAdServer, side: Running
) -> None:
    """Permutive's own client-side SDK may have put cohorts there: with consent they stay."""
    resp = await get(side, GAM + "&cust_params=permutive%3D123")
    assert resp.status == 200 and fake.calls["ccs"] == 1
    assert "cust_params=permutive%3D123%2C12345%2C67890%2C99999" in ads.last.target


async def test_a_viewers_contextual_value_is_replaced_when_ours_is_written(
    fake: FakePermutive,
) -> None:
    registry = CollectorRegistry()
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, keys=KeysConfig(mode="split"))
    url = (
        "https://pubads.g.doubleclick.net"
        + GAM.removeprefix("/proxy/gam")
        + "&cust_params=prmtvctx%3Dviewer%26permutive%3D1"
    )
    async with Enricher(cfg, registry=registry) as e:
        r = await e.enrich(url, Context(consent=ConsentSignals(override=True)))
        assert r.url.endswith("cust_params=permutive%3D1%2C12345%2C67890%26prmtvctx%3D99999")
        # Without content there is no contextual answer: nothing written there, theirs stays.
        bare = url.replace("&description_url=https%3A%2F%2Fpub.example%2Fv%2F1", "")
        r = await e.enrich(bare, Context(consent=ConsentSignals(override=True)))
    assert "prmtvctx%3Dviewer" in r.url
    labels = {"source": "gam", "kind": "viewer_keyvalue_removed"}
    assert registry.get_sample_value("cohortkv_bad_input_total", labels) == 1


def test_each_url_platform_removes_only_its_own_places_for_our_keys() -> None:
    gam, fw, aw, query = (
        cls() for cls in (GamAdapter, FreeWheelAdapter, AdsWizzAdapter, QueryAdapter)
    )
    keys = {"permutive"}
    cases = [
        (
            gam,
            "https://g.example/gampad/ads?permutive=1&cust_params=a%3D1%26permutive%3D2&CUST_PARAMS=Permutive%3D3",
            "https://g.example/gampad/ads?permutive=1&cust_params=a%3D1&CUST_PARAMS=",
            2,
        ),
        (
            fw,
            "https://f.example/ad/g/1?nw=1&permutive=1;permutive=2&k=v;slid=pre&permutive=3",
            "https://f.example/ad/g/1?nw=1&permutive=1;k=v;slid=pre&permutive=3",
            1,
        ),
        (
            aw,
            "https://a.example/vast/4.0/request/alias/z?permutive=1&aw_0_1st.permutive=2&AW_0_1ST.PERMUTIVE=3",
            "https://a.example/vast/4.0/request/alias/z?permutive=1",
            2,
        ),
        (
            query,
            "https://v.example/vast?a=1&permutive=2&b=3#f",
            "https://v.example/vast?a=1&b=3#f",
            1,
        ),
    ]
    for adapter, url, out, removed in cases:
        got = adapter.read(AdRequest(url))
        assert isinstance(got, Parsed), adapter.name
        stripped, n = adapter.strip_keys(got, keys)
        assert (stripped.request.url, n) == (out, removed), adapter.name
        # `apply` writes into what is left, as into that URL read afresh
        kvs = {"k": ["v"]}
        assert adapter.apply(stripped, kvs).request.url == adapter.apply_url(out, kvs)
