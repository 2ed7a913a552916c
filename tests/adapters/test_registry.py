"""Adapter registry: built from configuration, chosen by URL or by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from adapters import (
    KNOWN_ADAPTERS,
    adapter_by_name,
    build_adapters,
    default_adapters,
    find_adapter,
)
from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter, FailOpen
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from plugin.config import ConfigError, adapter_settings, config_from_dict
from plugin.context import Context
from plugin.errors import CohortkvError
from plugin.request import AdRequest, Applied

GAM_URL = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&sz=640x480"
FW_URL = "https://5fd74.v.fwmrm.net/ad/g/1?nw=392564;k=1;slid=pre;"
AW_URL = "https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/demo_zone?a=1"


def test_defaults_cover_every_known_platform_in_order() -> None:
    adapters = default_adapters()
    assert tuple(a.name for a in adapters) == KNOWN_ADAPTERS
    assert KNOWN_ADAPTERS == ("gam", "freewheel", "adswizz", "query", "openrtb")
    assert [type(a) for a in adapters[:3]] == [GamAdapter, FreeWheelAdapter, AdsWizzAdapter]
    assert adapters[0].activation_platforms == ("dfp", "gam", "target_dfp")
    assert adapters[1].activation_platforms == ("freewheel",)
    assert adapters[2].activation_platforms == ("adswizz_keyvalue", "adswizz")


def test_configuration_reaches_the_adapters() -> None:
    cfg = config_from_dict(
        {
            "sandbox": True,
            "adapters": {
                "gam": {"activation_platforms": ["dfp_custom"], "max_url_length": 120},
                "adswizz": {"activation_platforms": [], "play_event": "Podcastplay"},
            },
        }
    )
    gam, fw, aw = build_adapters(adapter_settings(cfg))[:3]
    assert gam.activation_platforms == ("dfp_custom",)
    assert fw.activation_platforms == ("freewheel",)
    assert aw.activation_platforms == ()
    assert (aw.play_event, aw.content_section) == ("Podcastplay", "audio")
    assert (fw.play_event, fw.content_section) == ("Videoview", "video")
    # the configured budget is the one applied: a 150-character tag gets nothing added
    long_url = GAM_URL + "&x=" + "y" * (150 - len(GAM_URL) - 3)
    assert isinstance(gam, GamAdapter)
    assert gam.apply_url(long_url, {"permutive": ["1"]}) == long_url
    default_gam = default_adapters()[0]
    assert isinstance(default_gam, GamAdapter)
    assert default_gam.apply_url(long_url, {"permutive": ["1"]}) != long_url


def test_unknown_platform_section_and_unknown_setting_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"adapters\.dfp: expected a platform"):
        adapter_settings(config_from_dict({"sandbox": True, "adapters": {"dfp": {}}}))
    with pytest.raises(ConfigError, match=r"adapters\.freewheel"):
        adapter_settings(
            config_from_dict({"sandbox": True, "adapters": {"freewheel": {"max_url_length": 10}}})
        )


@pytest.mark.parametrize(
    ("url", "name"),
    [(GAM_URL, "gam"), (FW_URL, "freewheel"), (AW_URL, "adswizz"), ("https://x/ads?y=1", None)],
)
def test_find_adapter(url: str, name: str | None) -> None:
    found = find_adapter(default_adapters(), AdRequest(url))
    assert (found.name if found else None) == name


class _Broken(FailOpen):
    name = "broken"

    def _unrecognised(self, request: AdRequest) -> str | None:
        raise RuntimeError("boom")

    def _parse(self, request: AdRequest) -> Context:
        raise RuntimeError("boom")

    def _apply(self, request: AdRequest, keyvalues: Mapping[str, Sequence[str]]) -> Applied:
        raise RuntimeError("boom")


def test_an_adapter_that_raises_is_skipped_and_reported() -> None:
    seen: list[tuple[str, str, str]] = []
    broken = _Broken(on_error=lambda p, stage, e: seen.append((p, stage, str(e))))
    adapters: tuple[Adapter, ...] = (broken, *default_adapters())
    found = find_adapter(adapters, AdRequest(FW_URL))
    assert found is not None and found.name == "freewheel"
    request = AdRequest(FW_URL)
    assert broken.parse(request) == Context()
    assert broken.apply(request, {"permutive": ["1"]}) == Applied(request, {})
    assert seen == [
        ("broken", "recognise", "boom"),
        ("broken", "parse", "boom"),
        ("broken", "apply", "boom"),
    ]


def test_adapter_by_name() -> None:
    adapters = default_adapters()
    assert adapter_by_name(adapters, "adswizz") is adapters[2]
    with pytest.raises(CohortkvError, match=r"platform: expected one of: gam, freewheel.*'dfp'"):
        adapter_by_name(adapters, "dfp")


def test_a_configured_property_mapping_may_map_a_whole_prefix() -> None:
    cfg = config_from_dict(
        {
            "sandbox": True,
            "adapters": {"freewheel": {"properties": {"caid": "video_id", "_fw_content_*": "*"}}},
        }
    )
    fw = build_adapters(adapter_settings(cfg))[1]
    ctx = fw.parse(AdRequest("https://x.v.fwmrm.net/ad/g/1?nw=1&caid=a1;_fw_content_genre=drama;"))
    assert ctx.content.properties == {"video_id": "a1", "genre": "drama"}
    with pytest.raises(ConfigError, match="properties"):
        adapter_settings(
            config_from_dict({"sandbox": True, "adapters": {"gam": {"properties": {"vid": "a b"}}}})
        )
