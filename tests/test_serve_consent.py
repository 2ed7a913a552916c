"""Unconsented traffic through every route of the sidecar: no CCS call, contextual still flows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import yarl

from tests.helpers.fake_adserver import FakeAdServer, Running
from tests.helpers.fakes import FakePermutive
from tests.helpers.times import recent

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"

# Each ad request identifies its user and denies consent the platform's own way.
UNCONSENTED = {
    "gam": (
        "/gampad/ads?iu=/1/x&output=vast&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
        f"&rdid={IDFA}&idtype=idfa&is_lat=0&gdpr=1",
        "cust_params=permutive%3D99999",
    ),
    "freewheel": (
        f"/ad/g/1?nw=1&caid=a1&_fw_did=idfa:{IDFA}&_fw_gdpr=1"
        ";_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F2;slid=pre",
        "permutive=88888",
    ),
    "adswizz": (
        f"/vast/4.0/request/alias/zone1?aw_0_1st.ifa={IDFA}&aw_0_1st.ifaType=idfa"
        "&aw_0_req.gdpr=1&aw_0_1st.contentUrl=https%3A%2F%2Fexample.com%2Fp%2F3",
        "aw_0_1st.permutive=77777",
    ),
}


@pytest.fixture
async def fake() -> AsyncIterator[FakePermutive]:
    async with FakePermutive() as f:
        f.ctx_default["activations"]["adswizz_keyvalue"] = ["77777"]
        yield f


async def test_unconsented_traffic_on_every_route_makes_no_ccs_call(
    side: Running, fake: FakePermutive, ads: FakeAdServer
) -> None:
    base = str(side.client.make_url("/")).rstrip("/")
    for upstream, (target, contextual_kv) in UNCONSENTED.items():
        resp = await side.client.session.get(
            yarl.URL(f"{base}/proxy/{upstream}{target}", encoded=True)
        )
        assert resp.status == 200
        assert contextual_kv in ads.last.target
        # An explicit denial wins over a URL that would have granted (gdpr=0).
        resp = await side.client.session.get(
            yarl.URL(f"{base}/proxy/{upstream}{target.replace('gdpr=1', 'gdpr=0')}", encoded=True),
            headers={"X-Cohortkv-Consent": "denied"},
        )
        assert resp.status == 200
        assert contextual_kv in ads.last.target

    identity = {"user_id": USER}
    for consent in ({"granted": False}, {"gdpr": True}, {"us_privacy": "1YYN"}, None):
        body = {
            "url": "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x"
            "&description_url=https%3A%2F%2Fexample.com%2Fv%2F4",
            "context": {"identity": identity, "consent": consent},
        }
        resp = await side.client.post("/v1/enrich", data=json.dumps(body))
        doc = await resp.json()
        assert resp.status == 200
        assert doc["consent"]["allowed"] is False
        assert doc["behavioral"] == {"source": "skipped", "cohorts": [], "reason": "consent_denied"}
        assert doc["keyvalues"] == {"permutive": ["99999"]}

        events = {
            "identity": identity,
            "consent": consent,
            "events": [{"name": "VideoCompletion", "time": recent(7, 30)}],
        }
        resp = await side.client.post("/v1/events", data=json.dumps(events))
        assert resp.status == 202
        assert (await resp.json())["accepted"] == 0

    assert fake.calls["ccs"] == 0
    assert fake.calls["contextual"] >= 4
    assert side.sample("cohortkv_events_total", state="unconsented") == 4
    assert side.sample("cohortkv_events_total", state="queued") == 0
    assert side.sidecar.queue.depth == 0

    # The header cannot upgrade the request's own denial (gdpr=1 without a TC string)...
    target, _ = UNCONSENTED["gam"]
    resp = await side.client.session.get(
        yarl.URL(f"{base}/proxy/gam{target}", encoded=True),
        headers={"X-Cohortkv-Consent": "granted"},
    )
    assert resp.status == 200
    assert fake.calls["ccs"] == 0
    # ...but grants where the request carries no consent signal of its own (control).
    resp = await side.client.session.get(
        yarl.URL(f"{base}/proxy/gam{target.replace('&gdpr=1', '')}", encoded=True),
        headers={"X-Cohortkv-Consent": "granted"},
    )
    assert resp.status == 200
    assert fake.calls["ccs"] == 1
