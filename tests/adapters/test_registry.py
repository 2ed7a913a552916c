"""Adapter registry: built from configuration, chosen by looking at a request or by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from adapters import (
    KNOWN_ADAPTERS,
    adapter_by_name,
    build_adapters,
    default_adapters,
    detect,
)
from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter, CohortsFor, FailOpen, Parsed, Unrecognised
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from plugin.config import ConfigError, adapter_settings, config_from_dict
from plugin.context import Context
from plugin.errors import CohortkvError
from plugin.request import AdRequest, Applied
from tests.adapters.reading import context_of

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
def test_detect(url: str, name: str | None) -> None:
    request = AdRequest(url)
    found = detect(default_adapters(), request)
    if name is None:
        assert found == Unrecognised("no_adapter")
    else:
        assert isinstance(found, Parsed)
        assert (found.adapter.name, found.request) == (name, request)


class _Broken(FailOpen):
    """Raises in whichever stages `fails` names."""

    name = "broken"

    def __init__(self, fails: set[str], **hooks: Any) -> None:
        super().__init__(**hooks)
        self.fails = fails

    def _boom(self, stage: str) -> None:
        if stage in self.fails:
            raise RuntimeError("boom")

    def _recognise(self, request: AdRequest) -> object:
        self._boom("recognise")
        return "decoded"

    def _context(self, request: AdRequest, data: Any) -> Context:
        self._boom("parse")
        return Context(view_id="v")

    def _apply(
        self, parsed: Parsed, keyvalues: Mapping[str, Sequence[str]], cohorts_for: CohortsFor | None
    ) -> Applied:
        self._boom("apply")
        return Applied(parsed.request.with_url(parsed.request.url + "&k=v"), {"k": ["v"]})


def test_an_adapter_that_raises_is_skipped_and_reported() -> None:
    seen: list[tuple[str, str, str]] = []
    hooks: dict[str, Any] = {"on_error": lambda p, stage, e: seen.append((p, stage, str(e)))}
    broken = _Broken({"recognise"}, **hooks)
    adapters: tuple[Adapter, ...] = (broken, *default_adapters())
    found = detect(adapters, AdRequest(FW_URL))
    assert isinstance(found, Parsed) and found.adapter.name == "freewheel"
    assert broken.read(AdRequest(FW_URL)) == Unrecognised("error", "broken")
    assert seen == [("broken", "recognise", "boom")] * 2

    # a Context that cannot be read is an empty one; the request is still the adapter's
    seen.clear()
    request = AdRequest(FW_URL)
    parsed = _Broken({"parse", "apply"}, **hooks).read(request)
    assert isinstance(parsed, Parsed) and parsed.context == Context()
    assert parsed.data == "decoded"
    assert parsed.adapter.apply(parsed, {"permutive": ["1"]}) == Applied(request, {})
    assert seen == [("broken", "parse", "boom"), ("broken", "apply", "boom")]

    # nothing failed: what the adapter decoded reaches `apply`
    parsed = _Broken(set(), **hooks).read(request)
    assert isinstance(parsed, Parsed) and parsed.context == Context(view_id="v")
    assert parsed.adapter.apply(parsed, {"k": ["v"]}).written == {"k": ["v"]}


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
    ctx = context_of(
        fw, AdRequest("https://x.v.fwmrm.net/ad/g/1?nw=1&caid=a1;_fw_content_genre=drama;")
    )
    assert ctx.content.properties == {"video_id": "a1", "genre": "drama"}
    with pytest.raises(ConfigError, match="properties"):
        adapter_settings(
            config_from_dict({"sandbox": True, "adapters": {"gam": {"properties": {"vid": "a b"}}}})
        )
