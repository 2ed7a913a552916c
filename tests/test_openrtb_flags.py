"""OpenRTB deny-only members (`regs.coppa`, `regs.ext.coppa`, `device.lmt`) with a value other
than the 0 or 1 the standard asks for: anything but absent, `null` or 0 sets them (a lenient
reader may take it so), and the odd value is counted as bad input."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from adapters import OpenRtbAdapter
from plugin import Config, ConsentSignals, Context, Enricher
from plugin.request import AdRequest
from tests.adapters.reading import context_of
from tests.helpers.fakes import API_KEY, FakePermutive

AUCTION = "https://pbs.example.com/openrtb2/auction"
BID: dict[str, Any] = {
    "id": "r1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}],
    "site": {"page": "https://example.com/v/1"},
    "device": {"ifa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "ext": {"ifa_type": "idfa"}},
}
ODD = [0.5, [1], {}, "1", True, 2, -1, "yes", [0], "0.0"]
UNSET = [0, 0.0, None]


def post(body: Any) -> AdRequest:
    return AdRequest(AUCTION, method="POST", body=msgspec.json.encode(body))


def with_coppa(place: str, value: Any) -> dict[str, Any]:
    regs = {"coppa": value} if place == "regs" else {"ext": {"coppa": value}}
    return {**BID, "regs": regs}


@pytest.mark.parametrize("place", ["regs", "regs.ext"])
@pytest.mark.parametrize("value", ODD, ids=repr)
async def test_an_odd_coppa_denies_and_is_counted(
    fake: FakePermutive, place: str, value: Any
) -> None:
    registry = CollectorRegistry()
    cfg = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        adapters={"openrtb": {"activation_platforms": ["dfp"]}},
    )
    async with Enricher(cfg, registry=registry) as e:
        r = await e.enrich(post(with_coppa(place, value)), Context(consent=ConsentSignals(True)))
    assert (r.consent.allowed, r.consent.reason) == (False, "child_directed")
    assert fake.calls.get("ccs", 0) == 0
    labels = {"source": "openrtb", "kind": "odd_coppa"}
    assert registry.get_sample_value("cohortkv_bad_input_total", labels) == 1


@pytest.mark.parametrize("value", UNSET, ids=repr)
def test_coppa_zero_or_null_leaves_it_unset(value: Any) -> None:
    skipped: list[str] = []
    adapter = OpenRtbAdapter(on_skip=lambda _, why: skipped.append(why))
    for place in ("regs", "regs.ext"):
        consent = context_of(adapter, post(with_coppa(place, value))).consent
        assert consent.child_directed is not True
    assert skipped == []


@pytest.mark.parametrize("value", ODD, ids=repr)
def test_an_odd_lmt_drops_the_device_id_and_is_counted(value: Any) -> None:
    skipped: list[str] = []
    adapter = OpenRtbAdapter(on_skip=lambda _, why: skipped.append(why))
    ctx = context_of(adapter, post({**BID, "device": {**BID["device"], "lmt": value}}))
    assert ctx.limit_ad_tracking is True and ctx.identity is None
    assert skipped == ["odd_lmt"]
    plain = context_of(adapter, post({**BID, "device": {**BID["device"], "lmt": 0}}))
    assert plain.identity is not None and plain.limit_ad_tracking is False
