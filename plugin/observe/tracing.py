"""Optional OpenTelemetry spans: `pip install 'cohortkv[otel]'` and `[tracing] enabled = true`.

Off by default, and then free: the enricher and the API clients hold `None` instead of a
tracer and take a plain branch, so no span, context or attribute is ever built.

On, there are three spans per ad request: `cohortkv.enrich` (platform, consent decision, each
signal's source and reason, how many key-values were written) and one per Permutive API call
(`permutive.ccs`, `permutive.contextual`), under which the standard aiohttp client
instrumentation adds the HTTP span. Nothing identifying goes into a span: no identity, no
consent string, no content URL, and URLs lose their query (the Contextual API's key is in it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl
from aiohttp.typedefs import Handler, Middleware

from plugin.config import ConfigError, TracingConfig
from plugin.version import __version__

if TYPE_CHECKING:
    from plugin.result import EnrichResult

Tracer = Any
"""An `opentelemetry.trace.Tracer` (typed loosely: the package is an optional extra)."""
TracerProvider = Any
"""An `opentelemetry.trace.TracerProvider` (typed loosely, as `Tracer` is)."""

_MISSING = (
    "config: tracing.enabled: expected the OpenTelemetry packages installed with it"
    " (pip install 'cohortkv[otel]')"
)


def make_tracer(cfg: TracingConfig, provider: TracerProvider | None = None) -> Tracer | None:
    """The tracer for cohortkv's spans, or None when tracing is off. `provider` defaults to the
    global one (which the host, or `cohortkv serve`, sets up)."""
    if not cfg.enabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError(_MISSING, field="tracing.enabled") from None
    return trace.get_tracer("cohortkv", __version__, tracer_provider=provider)


def client_trace_configs(
    cfg: TracingConfig, provider: TracerProvider | None = None
) -> list[aiohttp.TraceConfig]:
    """The standard aiohttp client instrumentation for the API session, URLs without query."""
    if not cfg.enabled:
        return []
    try:
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config
    except ImportError:
        raise ConfigError(_MISSING, field="tracing.enabled") from None
    return [create_trace_config(url_filter=without_query, tracer_provider=provider)]


def without_query(url: yarl.URL) -> str:
    """A URL as a span may show it: the Contextual API's key travels in the query."""
    return str(url.with_query(None).with_fragment(None))


def result_attributes(result: EnrichResult) -> Mapping[str, str | bool | int]:
    return {
        "cohortkv.platform": result.platform or "none",
        "cohortkv.recognised": result.recognised,
        "cohortkv.consent.allowed": result.consent.allowed,
        "cohortkv.consent.reason": result.consent.reason,
        "cohortkv.behavioral.source": result.behavioral.source,
        "cohortkv.behavioral.reason": result.behavioral.reason,
        "cohortkv.contextual.source": result.contextual.source,
        "cohortkv.contextual.reason": result.contextual.reason,
        "cohortkv.keyvalues.written": sum(len(v) for v in result.keyvalues.values()),
    }


def setup_sdk(cfg: TracingConfig) -> Any:
    """For `cohortkv serve`: a global SDK tracer provider exporting over OTLP/HTTP, configured
    by the standard `OTEL_*` environment variables (endpoint, headers, sampler)."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(_MISSING, field="tracing.enabled") from None
    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def server_middleware(tracer: Tracer) -> Middleware:
    """A server span per request that continues the caller's trace (`traceparent`), named by
    route. The standard aiohttp server instrumentation records the whole URL, and in SSAI its
    query is the viewer's device id and consent string: this one records the route template,
    the method and the status only."""
    from aiohttp import web
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:
            response: web.StreamResponse = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            return response

    return traced
