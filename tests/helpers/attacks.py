"""Attackers' ad requests to `cohortkv serve`, against loopback fakes of both Permutive APIs
and of the ad server: the sidecar, its upstreams, and what the tests read back."""

from __future__ import annotations

from typing import Any

from plugin import Config
from plugin.config import ServeConfig, UpstreamConfig
from tests.helpers.fake_adserver import FakeAdServer, Running
from tests.helpers.fakes import FakePermutive, config

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
OTHER = "0B3F8C12-1D2E-4A5B-9C8D-7E6F5A4B3C2D"
PAGE = "https%3A%2F%2Fpub.example%2Fv%2F1"
GAM = f"/proxy/gam/gampad/ads?iu=/1/ctv&description_url={PAGE}&output=vast"
FW = "/proxy/freewheel/ad/g/1?nw=1&caid=c1&resp=vast4"
AW = "/proxy/adswizz/vast/4.0/request/alias/zone1?aw_0_1st.ifa={idfa}&aw_0_1st.ifaType=idfa"
VAST = "/proxy/vast/ads?content_url=" + PAGE
"""The generic `query` adapter, as an upstream that names it."""
GRANT = "&cohortkv_consent=granted"
"""The stitcher's grant: it decides only where the request carries no consent signal."""


def sidecar(fake: FakePermutive, ads: FakeAdServer, **kw: Any) -> Config:
    """`config`, with every platform's ad server on the fake one."""
    upstreams: dict[str, str | UpstreamConfig] = {
        "gam": ads.url,
        "freewheel": ads.url,
        "adswizz": ads.url,
        "vast": UpstreamConfig(url=ads.url, platform="query"),
    }
    return config(fake, serve=ServeConfig(upstreams=upstreams), **kw)


async def get(side: Running, target: str) -> None:
    resp = await side.client.get(target)
    assert resp.status == 200  # the ad request always goes out
    await resp.read()


def decided(side: Running, reason: str) -> float:
    """How many requests the gate decided for `reason`, allowed or denied."""
    denied = side.sample("cohortkv_consent_decisions_total", decision="denied", reason=reason)
    allowed = side.sample("cohortkv_consent_decisions_total", decision="allowed", reason=reason)
    return denied + allowed
