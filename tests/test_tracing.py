"""OpenTelemetry spans (the `otel` extra): off by default, and when on, spans around enrich
and both API calls, continuing the caller's trace, with nothing identifying in them."""

from __future__ import annotations

import json

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from plugin import ConsentSignals, Content, Context, Enricher
from plugin.config import ServeConfig, TracingConfig
from plugin.httpclient import HttpClient
from plugin.serve.app import make_app
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import API_KEY, FakePermutive, config
from tests.helpers.samples import DEVICE, GAM_SAMPLE

CTX = Context(
    identity=DEVICE,
    consent=ConsentSignals(override=True),
    content=Content(url="https://example.com/v/secret-show", properties={"video_id": "v1"}),
)


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_off_by_default_no_tracer_and_no_trace_configs(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        assert e.tracer is None
        assert e.backends.ccs.tracer is None
        # Off: the lean client, which has no tracing hooks at all (aiohttp's is used when on)
        assert isinstance(e.backends._session, HttpClient)
        await e.enrich(GAM_SAMPLE, CTX)


async def test_spans_around_enrich_and_both_calls_without_identifying_data(
    fake: FakePermutive,
) -> None:
    provider, exporter = traced()
    cfg = config(fake, tracing=TracingConfig(enabled=True))
    async with Enricher(cfg, tracer_provider=provider) as e:
        r = await e.enrich(GAM_SAMPLE, CTX)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"cohortkv.enrich", "permutive.ccs", "permutive.contextual"} <= set(spans)
    enrich = spans["cohortkv.enrich"]
    assert enrich.attributes is not None
    assert enrich.attributes["cohortkv.platform"] == "gam"
    assert enrich.attributes["cohortkv.behavioral.reason"] == "live"
    assert enrich.attributes["cohortkv.keyvalues.written"] == len(r.keyvalues["permutive"])
    for name in ("permutive.ccs", "permutive.contextual"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == enrich.context.span_id
    # the standard aiohttp client instrumentation adds the HTTP spans, URLs without query
    http = [s for s in exporter.get_finished_spans() if s.name == "POST"]
    assert len(http) == 2
    dump = json.dumps([dict(s.attributes or {}) for s in exporter.get_finished_spans()])
    for secret in (API_KEY, DEVICE.alias.id if DEVICE.alias else "", "secret-show"):
        assert secret not in dump


async def test_a_failed_call_marks_its_span(fake: FakePermutive) -> None:
    provider, exporter = traced()
    fake.status["ccs"] = 503
    cfg = config(fake, tracing=TracingConfig(enabled=True))
    async with Enricher(cfg, tracer_provider=provider) as e:
        await e.enrich(GAM_SAMPLE, CTX)
    (ccs,) = [s for s in exporter.get_finished_spans() if s.name == "permutive.ccs"]
    assert ccs.attributes is not None and ccs.attributes["cohortkv.error"] == "http_5xx"
    assert not ccs.status.is_ok


async def test_the_sidecar_continues_the_callers_trace(fake: FakePermutive) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    provider, exporter = traced()
    async with FakeAdServer() as ads:
        cfg = config(
            fake,
            tracing=TracingConfig(enabled=True),
            serve=ServeConfig(upstreams={"gam": ads.url}),
        )
        enricher = Enricher(cfg, tracer_provider=provider)
        client = TestClient(TestServer(make_app(cfg, enricher=enricher)))
        await client.start_server()
        try:
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            parent = f"00-{trace_id}-00f067aa0ba902b7-01"
            resp = await client.get(
                "/proxy/gam/gampad/ads?iu=/1/x&rdid=SECRET-DEVICE&idtype=idfa",
                headers={"traceparent": parent},
            )
            assert resp.status == 200
            assert ads.last.headers.get("traceparent") == parent  # forwarded as it came
        finally:
            await client.close()
            await enricher.close()
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name.startswith("GET /proxy")]
    assert len(server) == 1 and format(server[0].context.trace_id, "032x") == trace_id
    dump = json.dumps([dict(s.attributes or {}) for s in spans] + [s.name for s in spans])
    assert "SECRET-DEVICE" not in dump
