"""Our cohorts an adapter leaves out or rewrites (GAM's length budget and forbidden characters,
a separator inside a value, an invalid key, OpenRTB's `max_cohorts`) are each told to the
adapter's `on_skip` hook, so the enricher counts and logs them; the metric end to end."""

from __future__ import annotations

from collections import Counter

import msgspec
from prometheus_client import CollectorRegistry

from adapters import AdsWizzAdapter, FreeWheelAdapter, OpenRtbAdapter, QueryAdapter
from adapters.gam import GamAdapter, GamSettings
from adapters.openrtb import OpenRtbSettings
from plugin import Config, ConsentSignals, Context, Enricher
from plugin.request import AdRequest
from tests.adapters.reading import applied
from tests.helpers.fakes import API_KEY, FakePermutive

GAM = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&cust_params=a%3D1"


class Told:
    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    def __call__(self, platform: str, reason: str) -> None:
        self.reasons[reason] += 1


def test_gam_tells_what_it_drops_or_rewrites_every_time() -> None:
    told = Told()
    gam = GamAdapter()
    gam.on_skip = told
    kvs = {"permutive": ["1", "x" * 41, "a(b)", ""], "bad key": ["2"]}
    for _ in range(2):  # told on every apply
        url = gam.apply_url(GAM, kvs)
    assert url == GAM + "%26permutive%3D1%2Cab"
    assert told.reasons == {
        "keyvalue_bad_value": 4,  # too long, and empty: twice each
        "keyvalue_rewritten": 2,  # `a(b)` written as `ab`
        "keyvalue_bad_key": 2,
    }


def test_gam_tells_each_value_dropped_for_the_url_length() -> None:
    told = Told()
    gam = GamAdapter(GamSettings(max_url_length=len(GAM) + 20))
    gam.on_skip = told
    written = applied(gam, AdRequest(GAM), {"permutive": ["11111", "22222", "33333", "44444"]})
    assert written.written == {"permutive": ["11111"]}
    assert told.reasons == {"keyvalue_over_max_url_length": 3}


def test_url_adapters_tell_values_their_separators_cannot_carry() -> None:
    told = Told()
    aw, fw, q = AdsWizzAdapter(), FreeWheelAdapter(), QueryAdapter()
    aw.on_skip = fw.on_skip = q.on_skip = told
    url = "https://x.adswizz.com/vast/4.0/request/alias/z?a=1"
    assert aw.apply_url(url, {"permutive": ["1", "2,3"]}) == url + "&aw_0_1st.permutive=1"
    fw.apply_url("https://a.fwmrm.net/ad/g/1?nw=1;k=v;slid=pre", {"": ["1"], "p": ["\ud800"]})
    assert q.apply_url("https://v.example/vast?a=1", {"p": ["1,2"]}) == "https://v.example/vast?a=1"
    assert told.reasons == {"keyvalue_bad_value": 3, "keyvalue_bad_key": 1}


def test_openrtb_tells_cohorts_over_max_cohorts() -> None:
    told = Told()
    ortb = OpenRtbAdapter(OpenRtbSettings(max_cohorts=2))
    ortb.on_skip = told
    body = {"id": "r", "imp": [{"id": "1", "video": {}}], "site": {"page": "https://e.x/"}}
    req = AdRequest("https://pbs.example/openrtb2/auction", "POST", body=msgspec.json.encode(body))
    written = applied(ortb, req, {"permutive": ["1", "2", "3", "4"]})
    assert written.written == {"permutive": ["1", "2"]}
    assert told.reasons == {"keyvalue_over_max_cohorts": 2}


async def test_the_enricher_counts_dropped_cohorts(fake: FakePermutive) -> None:
    registry = CollectorRegistry()
    url = GAM + "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        adapters={"gam": {"max_url_length": len(url) + 5}},
    )
    async with Enricher(cfg, registry=registry) as e:
        r = await e.enrich(url, Context(consent=ConsentSignals(override=True)))
    assert r.contextual.cohorts and r.keyvalues == {} and r.url == url  # no room for one
    labels = {"source": "gam", "kind": "keyvalue_over_max_url_length"}
    assert registry.get_sample_value("cohortkv_bad_input_total", labels) == 1
