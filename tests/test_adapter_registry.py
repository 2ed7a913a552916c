"""Adapter registry: built from configuration, chosen by URL or by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from adapters import KNOWN_ADAPTERS, adapter_by_name, default_adapters, find_adapter
from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from plugin.config import AdaptersConfig, config_from_dict
from plugin.context import Context

GAM_URL = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&sz=640x480"
FW_URL = "https://5fd74.v.fwmrm.net/ad/g/1?nw=392564;k=1;slid=pre;"
AW_URL = "https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/demo_zone?a=1"


def test_defaults_cover_every_known_platform_in_order() -> None:
    adapters = default_adapters(AdaptersConfig())
    assert tuple(a.name for a in adapters) == KNOWN_ADAPTERS == ("gam", "freewheel", "adswizz")
    assert [type(a) for a in adapters] == [GamAdapter, FreeWheelAdapter, AdsWizzAdapter]
    assert adapters[0].activation_platforms == ("dfp", "gam", "target_dfp")
    assert adapters[1].activation_platforms == ("freewheel",)
    assert adapters[2].activation_platforms == ("adswizz_keyvalue", "adswizz")


def test_configuration_reaches_the_adapters() -> None:
    cfg = config_from_dict(
        {
            "adapters": {
                "gam": {"activation_platforms": ["dfp_custom"], "max_url_length": 120},
                "adswizz": {"activation_platforms": []},
            }
        }
    ).adapters
    gam, fw, aw = default_adapters(cfg)
    assert gam.activation_platforms == ("dfp_custom",)
    assert fw.activation_platforms == ("freewheel",)
    assert aw.activation_platforms == ()
    # the configured budget is the one applied: a 150-character tag gets nothing added
    long_url = GAM_URL + "&x=" + "y" * (150 - len(GAM_URL) - 3)
    assert gam.apply(long_url, {"permutive": ["1"]}) == long_url
    assert default_adapters()[0].apply(long_url, {"permutive": ["1"]}) != long_url


@pytest.mark.parametrize(
    ("url", "name"),
    [(GAM_URL, "gam"), (FW_URL, "freewheel"), (AW_URL, "adswizz"), ("https://x/ads?y=1", None)],
)
def test_find_adapter(url: str, name: str | None) -> None:
    found = find_adapter(default_adapters(), url)
    assert (found.name if found else None) == name


class _Broken:
    name = "broken"
    activation_platforms: tuple[str, ...] = ()

    def matches(self, url: str) -> bool:
        raise RuntimeError("boom")

    def parse(self, url: str) -> Context:
        return Context()

    def apply(self, url: str, keyvalues: Mapping[str, Sequence[str]]) -> str:
        return url


def test_find_adapter_skips_an_adapter_that_raises() -> None:
    adapters: tuple[Adapter, ...] = (_Broken(), *default_adapters())
    found = find_adapter(adapters, FW_URL)
    assert found is not None and found.name == "freewheel"


def test_adapter_by_name() -> None:
    adapters = default_adapters()
    assert adapter_by_name(adapters, "adswizz") is adapters[2]
    with pytest.raises(
        ValueError, match="unknown name 'dfp'; expected one of: gam, freewheel, adswizz"
    ):
        adapter_by_name(adapters, "dfp")
