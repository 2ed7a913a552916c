"""The sidecar application: routes, lifecycle, and the operational endpoints.

One `Sidecar` per application holds the enricher, the one ad-server `ClientSession`, the event
queue and the in-flight gate; they start with the application and stop with it. Shutdown has
one deadline (`serve.grace_s` from the moment it begins): in-flight requests finish first (the
runner waits for them), then the event queue is flushed in the time left, then everything closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from plugin.config import Config
from plugin.enricher import Enricher
from plugin.observe.tracing import server_middleware
from plugin.serve.accesslog import LOGGER, JsonAccessLogger
from plugin.serve.api import Api
from plugin.serve.delivery import RetryPolicy
from plugin.serve.errors import json_response
from plugin.serve.events import MemoryQueue
from plugin.serve.explain import Explain
from plugin.serve.guard import ConnectionGuard
from plugin.serve.intake import BodyReader
from plugin.serve.limits import Gate, Limits, add_request_id, guard, handler_args
from plugin.serve.metrics import ServeMetrics
from plugin.serve.openapi import openapi_document
from plugin.serve.proxy import Proxy, parse_upstreams
from plugin.serve.queue import EventQueue
from plugin.serve.runtime_metrics import register_runtime_metrics

log = logging.getLogger("cohortkv.serve")

CLOSE_RESERVE_S = 0.5
"""Of the shutdown grace, kept back for closing sessions after the event queue's flush."""


class Sidecar:
    """Everything one running sidecar holds. `make_app` builds it; the app starts and stops it."""

    def __init__(self, config: Config, enricher: Enricher, *, owns_enricher: bool) -> None:
        serve = config.serve
        self.config = config
        self.enricher = enricher
        self._owns_enricher = owns_enricher
        self.metrics = ServeMetrics(enricher.metrics.registry)
        register_runtime_metrics(enricher.metrics.registry)
        self.gate = Gate(serve.max_inflight_enrichments)
        self.limits = Limits(serve, self.metrics)
        bodies = BodyReader(serve, self.metrics, enricher.metrics.bad_input)
        self.connections = ConnectionGuard(serve, self.metrics)
        """Header deadline and connection cap, for `GuardedSite` (`cohortkv serve` uses it)."""
        self.upstreams = parse_upstreams(serve, (a.name for a in enricher.adapters), self.metrics)
        self.queue = make_queue(config, enricher, self.metrics)
        self.proxy = Proxy(enricher, serve, self.upstreams, self.gate, self.metrics, bodies)
        self.api = Api(config, enricher, self.queue, self.gate, self.metrics, bodies)
        self.explain = (
            Explain(config, enricher, self.upstreams, self.proxy, self.metrics, bodies)
            if serve.explain
            else None
        )
        self.ready = False
        self.deadline: float | None = None
        """Event-loop time by which shutdown must be complete; set when shutdown begins."""
        self._openapi = msgspec.json.encode(openapi_document(self.api.platforms))
        self.exposition: Callable[[], bytes] = lambda: generate_latest(self.registry)
        """What /metrics answers; a worker of several answers for all of them."""

    @property
    def registry(self) -> CollectorRegistry:
        return self.enricher.metrics.registry

    async def start(self) -> None:
        await self.enricher.start()
        await self.proxy.start()
        self.queue.start()
        self.ready = True

    def begin_shutdown(self) -> None:
        """Not ready any more; the grace period starts now (unless it already has)."""
        self.ready = False
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.config.serve.grace_s

    async def close(self) -> None:
        self.begin_shutdown()
        assert self.deadline is not None
        reserve = min(CLOSE_RESERVE_S, self.config.serve.grace_s / 4)
        left = self.deadline - asyncio.get_running_loop().time() - reserve
        try:
            await self.queue.close(left)
        finally:
            await self.proxy.close()
            if self._owns_enricher:
                await self.enricher.close()

    # -- operations -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(200, {"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        threshold = self.config.serve.degraded_error_rate
        upstreams: dict[str, Any] = {}
        degraded: list[str] = []
        for name, up in self.upstreams.items():
            requests, errors = up.window.counts()
            bad = up.window.degraded(threshold)
            upstreams[name] = {"requests": requests, "errors": errors, "degraded": bad}
            if bad:
                degraded.append(name)
        permutive = self.enricher.backend_states()
        degraded.extend(f"permutive.{api}" for api, s in permutive.items() if s != "closed")
        doc = {
            "ready": self.ready,
            "degraded": degraded,
            "upstreams": upstreams,
            "permutive": permutive,
            "sandbox": self.enricher.sandbox is not None,
            "events_queue_depth": self.queue.depth,
        }
        return json_response(200 if self.ready else 503, doc)

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")


def make_queue(config: Config, enricher: Enricher, metrics: ServeMetrics) -> EventQueue:
    """`[events] queue`: both deliver through the enricher's one event-sending path."""
    serve = config.serve
    policy = RetryPolicy(
        max_attempts=serve.events_max_attempts,
        backoff_s=serve.events_backoff_ms / 1000,
        backoff_max_s=serve.events_backoff_max_ms / 1000,
        retry=config.events.retry,
    )
    if config.events.queue == "redis":
        from plugin.serve.stream_queue import RedisQueue

        return RedisQueue(enricher.send_batch, metrics, enricher.metrics, config, policy=policy)
    return MemoryQueue(
        enricher.send_batch,
        metrics,
        max_events=serve.events_queue_max,
        workers=serve.events_workers,
        policy=policy,
    )


SIDECAR = web.AppKey("cohortkv_sidecar", Sidecar)


def make_app(
    config: Config | None = None,
    *,
    registry: CollectorRegistry | None = None,
    enricher: Enricher | None = None,
) -> web.Application:
    """The sidecar as an aiohttp application; raises ConfigError for a bad `serve` section.

    Without `enricher` it makes (and later closes) its own, on `registry`; with no API key
    configured that enricher runs the built-in sandbox.
    """
    config = config if config is not None else Config()
    owns = enricher is None
    if enricher is None:
        enricher = Enricher(config, registry=registry)
    sidecar = Sidecar(config, enricher, owns_enricher=owns)
    serve = config.serve
    args = handler_args(serve)
    if serve.access_log:
        args["access_log_class"] = JsonAccessLogger
        args["access_log"] = logging.getLogger(LOGGER)
    else:
        args["access_log"] = None
    app = web.Application(
        client_max_size=serve.max_body_bytes,
        middlewares=[
            guard(sidecar.limits),
            *([server_middleware(enricher.tracer)] if enricher.tracer is not None else []),
        ],
        handler_args=args,
    )
    app[SIDECAR] = sidecar
    expect = sidecar.limits.expect  # every route: `Expect: 100-continue` checks the limits
    sidecar.proxy.routes(app, expect)
    sidecar.api.routes(app, expect)
    if sidecar.explain is not None:
        sidecar.explain.routes(app, expect)
    app.router.add_get("/healthz", sidecar.healthz, allow_head=False, expect_handler=expect)
    app.router.add_get("/readyz", sidecar.readyz, allow_head=False, expect_handler=expect)
    app.router.add_get("/metrics", sidecar.prometheus, allow_head=False, expect_handler=expect)
    app.router.add_get("/openapi.json", sidecar.openapi, allow_head=False, expect_handler=expect)
    app.on_response_prepare.append(add_request_id)
    app.on_shutdown.append(_on_shutdown)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _on_shutdown(app: web.Application) -> None:
    app[SIDECAR].begin_shutdown()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sidecar = app[SIDECAR]
    await sidecar.start()
    yield
    await sidecar.close()
