"""Play-event content properties in proxy mode: `cohortkv_p.*`, `X-Cohortkv-Properties` and the
adapters' own content parameters, typed by `[events.properties]`. They come from the player, so
they change event properties only, never consent or identity."""

from __future__ import annotations

import json
from typing import Any

import yarl

from plugin.config import Config, EventsConfig, ServeConfig
from tests.helpers.fake_adserver import FakeAdServer, Running, running
from tests.helpers.fakes import API_KEY, FakePermutive

USER = "2008c38f-dece-4570-976d-87593ed001c3"
CONSENTED = {"X-Cohortkv-Consent": "granted", "X-Cohortkv-User-Id": USER}


def config(fake: FakePermutive, ads: FakeAdServer) -> Config:
    return Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        serve=ServeConfig(upstreams={"gam": ads.url, "freewheel": ads.url, "adswizz": ads.url}),
        events=EventsConfig(properties={"season": "number", "live": "boolean"}),
    )


async def get(side: Running, target: str, headers: dict[str, str] | None = None) -> int:
    base = str(side.client.make_url("/")).rstrip("/")
    url = yarl.URL(f"{base}{target}", encoded=True)
    async with side.client.session.get(url, headers={**CONSENTED, **(headers or {})}) as resp:
        return resp.status


def play_event(fake: FakePermutive) -> dict[str, Any]:
    (call,) = fake.bodies["ccs"]
    (event,) = call["body"]["events"]
    result: dict[str, Any] = event
    return result


async def test_reserved_parameters_become_typed_properties_and_are_not_forwarded(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(config(fake, ads)) as side:
        target = (
            "/proxy/gam/gampad/ads?iu=/1/x&output=vast"
            "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
            "&cohortkv_p.title=Cup%20final&cohortkv_p.categories=sports,%20football,"
            "&cohortkv_p.season=2026&cohortkv_p.live=yes&cohortkv_p.duration_seconds=ninety"
            "&cohortkv_p.empty="
        )
        assert await get(side, target) == 200
        props = play_event(fake)["properties"]
        client = props.pop("client")
        assert props == {
            "title": "Cup final",
            "categories": ["sports", "football"],
            "season": 2026,
            "live": True,
        }  # "ninety" does not parse as a number: dropped and counted; "" is left out
        assert client == {
            "url": "https://example.com/v/1",
            "domain": "example.com",
            "title": "Cup final",
        }
        assert side.sample("cohortkv_bad_input_total", source="property", kind="untyped") == 1
        assert "cohortkv_p." not in ads.last.target
        (ctx_call,) = fake.bodies["contextual"]
        assert ctx_call["body"]["page_properties"] == {"client": client, "video": props}


async def test_the_header_gives_json_properties_and_parameters_win(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    header = json.dumps({"title": "From header", "genre": "drama", "episode": {"number": 3}})
    async with running(config(fake, ads)) as side:
        target = (
            "/proxy/gam/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F2"
            "&cohortkv_p.title=From%20URL"
        )
        assert await get(side, target, {"X-Cohortkv-Properties": header}) == 200
        assert play_event(fake)["properties"] == {
            "title": "From URL",
            "genre": "drama",
            "episode": {"number": 3},
            "client": {
                "url": "https://example.com/v/2",
                "domain": "example.com",
                "title": "From URL",
            },
        }
        assert await get(side, target, {"X-Cohortkv-Properties": "[1, 2]"}) == 200
        assert side.sample("cohortkv_bad_input_total", source="proxy", kind="properties") == 1


async def test_properties_never_change_consent_or_identity(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(config(fake, ads)) as side:
        target = (
            "/proxy/gam/gampad/ads?iu=/1/x&tfcd=1"
            "&description_url=https%3A%2F%2Fexample.com%2Fv%2F3"
            "&cohortkv_p.consent=granted&cohortkv_p.tfcd=0&cohortkv_p.user_id=" + USER
        )
        header = json.dumps({"gdpr": 0, "consent": True})
        assert await get(side, target, {"X-Cohortkv-Properties": header}) == 200
        assert fake.calls["ccs"] == 0  # child-directed (tfcd=1) still denies
        assert fake.calls["contextual"] == 1


async def test_adapter_content_parameters_map_to_properties(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(config(fake, ads)) as side:
        target = (
            "/proxy/freewheel/ad/g/1?nw=1&caid=episode-9&vdur=1800"
            "&_fw_content_genre=drama;_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F4;slid=pre"
        )
        assert await get(side, target) == 200
        props = play_event(fake)["properties"]
        assert props["video_id"] == "episode-9"
        assert props["duration_seconds"] == 1800
        assert props["genre"] == "drama"
