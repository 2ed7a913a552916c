"""Health, readiness, metrics, OpenAPI, the access log, and the API key staying secret."""

from __future__ import annotations

import json
import logging
import re

import pytest
import yarl

from adapters.registry import KNOWN_ADAPTERS
from plugin.config import ConfigError
from plugin.serve.app import make_app
from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.times import recent

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
CONSENTED = {"X-Cohortkv-Consent": "granted", "X-Cohortkv-User-Id": USER}
TARGETS = {
    "gam": "/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F1",
    "freewheel": "/ad/g/1?nw=1&caid=a1;_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F2;",
    "adswizz": "/vast/4.0/request/alias/z1?aw_0_1st.contentUrl=https%3A%2F%2Fexample.com%2Fp",
}


async def test_health_readiness_metrics_openapi(fake: FakePermutive, ads: FakeAdServer) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        resp = await side.client.get("/healthz")
        assert (resp.status, await resp.json()) == (200, {"status": "alive"})

        resp = await side.client.get("/readyz")
        doc = await resp.json()
        assert resp.status == 200
        assert doc["ready"] is True and doc["degraded"] == [] and doc["sandbox"] is False
        assert sorted(doc["upstreams"]) == ["adswizz", "freewheel", "gam"]
        assert doc["permutive"] == {"ccs": "closed", "contextual": "closed"}

        await side.client.get("/proxy/gam/gampad/ads?iu=/1/x", headers=CONSENTED)
        resp = await side.client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        for line in (
            'cohortkv_events_total{state="queued"} 0.0',
            "cohortkv_events_queue_depth 0.0",
            'cohortkv_proxy_requests_total{outcome="2xx",upstream="gam"} 1.0',
            'cohortkv_enrich_seconds_count{platform="gam"} 1.0',
        ):
            assert line in text

        resp = await side.client.get("/openapi.json")
        doc = await resp.json()
        assert doc["openapi"] == "3.1.0"
        assert set(doc["paths"]) == {"/v1/enrich", "/v1/events", "/healthz", "/readyz"}
        schemas = doc["components"]["schemas"]
        # the registry's platforms, every one of them
        assert schemas["EnrichBody"]["properties"]["platform"]["enum"] == sorted(
            ("auto", *KNOWN_ADAPTERS)
        )
        assert schemas["EventsBody"]["required"] == ["identity", "events"]


async def test_readiness_goes_when_shutdown_begins(fake: FakePermutive, ads: FakeAdServer) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        side.sidecar.begin_shutdown()
        resp = await side.client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["ready"] is False


async def test_without_api_key_it_refuses_unless_the_sandbox_is_asked_for(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    with pytest.raises(ConfigError, match="COHORTKV_API_KEY"):
        async with running(sidecar_config(fake, ads, api_key=None)):
            pass
    cfg = sidecar_config(fake, ads, api_key=None).with_overrides(sandbox=True)
    async with running(cfg) as side:
        assert side.sidecar.enricher.sandbox is not None
        doc = await (await side.client.get("/readyz")).json()
        assert doc["sandbox"] is True
        resp = await side.client.post(
            "/v1/enrich",
            data=json.dumps(
                {"url": "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&url=https://e.com/1"}
            ),
        )
        assert resp.status == 200
        assert (await resp.json())["contextual"]["source"] in ("live", "none")
    assert sum(fake.calls.values()) == 0


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ({"gam": "pubads.g.doubleclick.net"}, "serve.upstreams.gam: expected an http(s) URL"),
        ({"gam": "https://h.example/?x=1"}, "serve.upstreams.gam: expected an http(s) URL"),
        ({"gam": "ftp://h.example"}, "serve.upstreams.gam: expected an http(s) URL"),
        ({"g/x": "https://h.example"}, "serve.upstreams.g/x: expected a name of letters"),
    ],
)
def test_bad_upstream_config_is_named(
    upstreams: dict[str, str], message: str, fake: FakePermutive, ads: FakeAdServer
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_app(sidecar_config(fake, ads, upstreams=upstreams))


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"ad_tls_cert_file": "/nonexistent/cert.pem"}, "serve.ad_tls_cert_file: expected a"),
        ({"ad_tls_key_file": "/k.pem"}, "serve.ad_tls_key_file: given without"),
    ],
)
def test_bad_client_certificate_config_is_named(
    tls: dict[str, str], message: str, fake: FakePermutive, ads: FakeAdServer
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(sidecar_config(fake, ads, **tls))


async def test_access_log_is_json_with_the_request_id_and_no_query(
    fake: FakePermutive, ads: FakeAdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cohortkv.access")
    async with running(sidecar_config(fake, ads, access_log=True)) as side:
        resp = await side.client.get(
            "/proxy/gam/gampad/ads?iu=/1/x&rdid=SECRET-DEVICE", headers={"X-Request-Id": "abc-1"}
        )
        assert resp.headers["X-Request-Id"] == "abc-1"
        made = await side.client.get("/healthz")
        generated = made.headers["X-Request-Id"]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "cohortkv.access"]
    assert [(line["request_id"], line["path"], line["status"]) for line in lines] == [
        ("abc-1", "/proxy/gam/gampad/ads", 200),
        (generated, "/healthz", 200),
    ]
    assert ads.last.headers["X-Request-Id"] == "abc-1"
    assert "SECRET-DEVICE" not in caplog.text


async def test_the_api_key_never_leaves(
    fake: FakePermutive, ads: FakeAdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with running(sidecar_config(fake, ads, access_log=True)) as side:
        base = str(side.client.make_url("/")).rstrip("/")
        for upstream, target in TARGETS.items():
            resp = await side.client.session.get(
                yarl.URL(f"{base}/proxy/{upstream}{target}", encoded=True), headers=CONSENTED
            )
            seen += [await resp.text(), str(resp.headers)]
        fake.status["contextual"] = 401  # errors are where keys tend to leak
        ads.status = 500
        for path, body in (
            ("/v1/enrich", {"url": "https://pubads.g.doubleclick.net/gampad/ads?url=https://e/2"}),
            ("/v1/enrich", {"url": 1}),
            (
                "/v1/events",
                {
                    "identity": {"user_id": USER},
                    "consent": {"granted": True},
                    "events": [{"name": "Videoview", "time": recent(0)}],
                },
            ),
        ):
            resp = await side.client.post(path, data=json.dumps(body))
            seen += [await resp.text(), str(resp.headers)]
        for path in ("/proxy/gam/gampad/ads?url=https://e/3", "/proxy/nope/x", "/readyz"):
            resp = await side.client.get(path)
            seen += [await resp.text(), str(resp.headers)]
        for path in ("/metrics", "/openapi.json"):
            seen.append(await (await side.client.get(path)).text())
    seen += [f"{r.target} {dict(r.headers)}" for r in ads.requests]
    # aiohttp.access lines come from the fake servers (whose URLs do carry the key); the
    # sidecar's own access log is cohortkv.access.
    fmt = logging.Formatter("%(name)s %(message)s")
    seen += [fmt.format(r) for r in caplog.records if r.name != "aiohttp.access"]
    assert fake.calls["ccs"] >= 3  # the key was in use all along
    assert len(ads.requests) >= 4
    for text in seen:
        assert API_KEY not in text
