"""The `query` and `openrtb` adapters as the rest of cohortkv sees them: in the registry, in
the configuration, and end to end through the enricher against the local Permutive stand-in."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from adapters import (
    KNOWN_ADAPTERS,
    OpenRtbAdapter,
    OpenRtbSettings,
    Parsed,
    QueryAdapter,
    QuerySettings,
    Unrecognised,
    adapter_by_name,
    build_adapters,
    default_adapters,
    detect,
)
from plugin import ConsentSignals, Context, Enricher
from plugin.config import ConfigError, KeysConfig, adapter_settings, config_from_dict
from plugin.request import AdRequest
from tests.adapters.reading import applied, context_of, reason
from tests.helpers.fakes import FakePermutive, config

VAST = "https://vast.example-ads.com/vast/7?w=1920&ifa=abc-1&ifa_type=rida&cb=1"
AUCTION = "https://pbs.example.com/openrtb2/auction"
BID = {
    "id": "r1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"]}}],
    "site": {"page": "https://example.com/v/1", "ext": {"data": {"section": "sport"}}},
    "device": {"ifa": "abc-1", "ext": {"ifa_type": "rida"}},
    "tmax": 500,
}


def post(body: Any, url: str = AUCTION) -> AdRequest:
    return AdRequest(url, method="POST", body=msgspec.json.encode(body))


def test_both_are_in_the_registry_in_order() -> None:
    assert KNOWN_ADAPTERS[3:] == ("query", "openrtb")
    names = [type(a) for a in default_adapters()]
    assert names[3:] == [QueryAdapter, OpenRtbAdapter]


def test_query_is_only_used_when_named() -> None:
    adapters = default_adapters()
    assert detect(adapters, AdRequest(VAST)) == Unrecognised("no_adapter")
    assert isinstance(adapter_by_name(adapters, "query").read(AdRequest(VAST)), Parsed)


def test_openrtb_is_found_by_its_body() -> None:
    adapters = default_adapters()
    found = detect(adapters, post(BID, "https://ssp.example.com/bid"))
    assert isinstance(found, Parsed) and found.adapter.name == "openrtb"
    assert detect(adapters, AdRequest("https://ssp.example.com/bid")) == Unrecognised("no_adapter")
    # a URL platform's request stays that platform's, whatever the method
    gam = AdRequest("https://h/gampad/ads?iu=/1/x", method="POST", body=msgspec.json.encode(BID))
    found = detect(adapters, gam)
    assert isinstance(found, Parsed) and found.adapter.name == "gam"


def test_configuration_reaches_both() -> None:
    cfg = config_from_dict(
        {
            "sandbox": True,
            "adapters": {
                "query": {"activation_platforms": ["dfp"], "separator": "|", "prefix": "p_"},
                "openrtb": {"contextual_key": "ctx", "user_id_tag": "", "play_event": "Pageview"},
            },
        }
    )
    settings = adapter_settings(cfg)
    assert settings["query"] == QuerySettings(
        activation_platforms=("dfp",), separator="|", prefix="p_"
    )
    assert settings["openrtb"] == OpenRtbSettings(
        contextual_key="ctx", user_id_tag="", play_event="Pageview"
    )
    query, rtb = build_adapters(settings)[3:]
    assert query.activation_platforms == ("dfp",)
    assert (rtb.play_event, rtb.content_section) == ("Pageview", "video")
    assert applied(query, AdRequest(VAST), {"permutive": ["1", "2"]}).request.url == (
        VAST + "&p_permutive=1|2"
    )


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"query": {"separator": "&"}}, "separator"),
        ({"query": {"names": {"permutive": "a b"}}}, "names"),
        ({"query": {"names": {"permutive": "gdpr"}}}, "names.permutive"),
        ({"query": {"bogus": 1}}, "bogus"),
        ({"openrtb": {"contextual_key": ""}}, "contextual_key"),
        ({"openrtb": {"user_id_tag": "no spaces"}}, "user_id_tag"),
    ],
)
def test_bad_settings_name_the_field(table: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"adapters\.\w+.*{field}"):
        config_from_dict({"sandbox": True, "adapters": table})


def test_openrtb_contextual_key_follows_its_setting() -> None:
    rtb = OpenRtbAdapter(OpenRtbSettings(contextual_key="ctx"))
    done = applied(rtb, post(BID), {"ctx": ["c1"], "prmtvctx": ["u1"]})
    out = msgspec.json.decode(done.request.body)
    assert out["site"]["ext"]["data"] == {"section": "sport", "ctx": ["c1"]}
    assert out["site"]["content"] == {"data": [{"name": "ctx", "segment": [{"id": "c1"}]}]}
    assert out["user"]["ext"]["data"] == {"prmtvctx": ["u1"]}


def test_openrtb_properties_map_paths_and_prefixes() -> None:
    rtb = OpenRtbAdapter(
        OpenRtbSettings(properties={"ext.data.*": "site_*", "content.language": "language"})
    )
    body = {**BID, "site": {**BID["site"], "content": {"language": "en", "id": "x"}}}
    assert context_of(rtb, post(body)).content.properties == {
        "site_section": "sport",
        "language": "en",
    }


def test_openrtb_user_id_tag_empty_means_unread() -> None:
    body = {"id": "r", "imp": [], "user": {"id": "u-1"}}
    assert context_of(OpenRtbAdapter(), post(body)).identity is not None
    unread = OpenRtbAdapter(OpenRtbSettings(user_id_tag=""))
    assert context_of(unread, post(body)).identity is None


def test_json_too_deep_to_decode_is_not_recognised() -> None:
    seen: list[tuple[str, str]] = []
    rtb = OpenRtbAdapter(on_error=lambda p, stage, e: seen.append((p, stage)))
    deep = b'{"id":"x","imp":[],"user":' + b"[" * 5000 + b"]" * 5000 + b"}"
    request = AdRequest(AUCTION, method="POST", body=deep)
    assert reason(rtb, request) == "json"
    assert seen == []


# ---------------------------------------------------------------------------------------------
# end to end: the enricher picks the adapter, asks the APIs, writes the answer


GRANTED = Context(consent=ConsentSignals(override=True))


async def test_enricher_writes_a_bid_request(fake: FakePermutive) -> None:
    cfg = config(
        fake,
        keys=KeysConfig(mode="split"),
        adapters={"openrtb": {"activation_platforms": ["dfp"]}},
    )
    async with Enricher(cfg) as e:
        r = await e.enrich(post(BID), GRANTED)
    assert r.platform == "openrtb"
    assert r.keyvalues == {"permutive": ["12345", "67890"], "prmtvctx": ["99999"]}
    out = msgspec.json.decode(r.request.body)
    assert out["user"] == {
        "data": [{"name": "permutive", "segment": [{"id": "12345"}, {"id": "67890"}]}],
        "ext": {"data": {"permutive": ["12345", "67890"]}},
    }
    assert out["site"] == {
        "page": "https://example.com/v/1",
        "ext": {"data": {"section": "sport", "prmtvctx": ["99999"]}},
        "content": {"data": [{"name": "prmtvctx", "segment": [{"id": "99999"}]}]},
    }
    assert {k: v for k, v in out.items() if k not in ("user", "site")} == {
        k: v for k, v in BID.items() if k != "site"
    }
    ccs = fake.bodies["ccs"][0]["body"]
    assert ccs["alias"] == {"tag": "rida", "id": "abc-1"}
    assert fake.bodies["contextual"][0]["body"]["url"] == "https://example.com/v/1"


async def test_enricher_coppa_bid_request_gets_contextual_only(fake: FakePermutive) -> None:
    cfg = config(fake, adapters={"openrtb": {"activation_platforms": ["dfp"]}})
    body = {**BID, "regs": {"coppa": 1}}
    async with Enricher(cfg) as e:
        r = await e.enrich(post(body), GRANTED)
    assert (r.consent.allowed, r.consent.reason) == (False, "child_directed")
    assert fake.calls["ccs"] == 0
    assert r.keyvalues == {"permutive": ["99999"]}  # merged mode: one key, to the user


async def test_enricher_query_tag_by_name(fake: FakePermutive) -> None:
    cfg = config(fake, adapters={"query": {"activation_platforms": ["dfp"]}})
    url = VAST + "&content_url=https%3A%2F%2Fexample.com%2Fv%2F1"
    async with Enricher(cfg) as e:
        r = await e.enrich(url, GRANTED, platform="query")
        unnamed = await e.enrich(url, GRANTED)
    assert r.url == url + "&permutive=12345,67890,99999"
    assert r.platform == "query"
    assert unnamed.url == url and unnamed.keyvalues == {}


async def test_enricher_counts_what_an_adapter_leaves_out(fake: FakePermutive) -> None:
    """A device id of an OS without a known id type, and a bidder whose bidderconfig entry it
    shares with another: left out, counted as bad input and logged, the request still goes."""
    registry = CollectorRegistry()
    cfg = config(
        fake,
        adapters={"openrtb": {"scope": "bidders", "bidders": {"appnexus": ["dfp"], "ix": ["dfp"]}}},
    )
    body = {
        **BID,
        "device": {"ifa": "abc-1", "os": "Windows"},
        "ext": {"prebid": {"bidderconfig": [{"bidders": ["appnexus", "x"], "config": {}}]}},
    }
    async with Enricher(cfg, registry=registry) as e:
        r = await e.enrich(post(body), GRANTED)
    assert fake.calls["ccs"] == 0  # no identity: the device id was not used
    assert list(r.keyvalues) == ["ix.permutive"]

    def bad(kind: str) -> float | None:
        return registry.get_sample_value(
            "cohortkv_bad_input_total", {"source": "openrtb", "kind": kind}
        )

    assert bad("ifa_os_unknown") == 1
    assert bad("bidderconfig_shared") == 1
