"""The services an enricher calls while it runs: one HTTP session for both Permutive APIs (the
lean client, or aiohttp's when tracing is on) and their clients, the in-process sandbox
(`sandbox = true`), and the fleet's shared store (Redis).
(Not to be confused with an `Upstream`: an ad server the sidecar's proxy forwards to.)

Built with the enricher and handed to what calls them (the signals, the event sender); started
once, whoever asks first (concurrent first calls share one start, under a lock), and closed
once. A client asked for before start is a bug of ours: `RuntimeError`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgspec

from plugin.cache.shared import SharedStore
from plugin.config import Config
from plugin.observe.metrics import Metrics
from plugin.observe.tracing import Tracer, TracerProvider, client_trace_configs
from plugin.permutive.clients import (
    CcsClient,
    ContextualClient,
    Session,
    UpstreamError,
    lean_session,
    make_session,
)

if TYPE_CHECKING:
    from plugin.sandbox.server import Sandbox

log = logging.getLogger("cohortkv.enricher")


class Backends:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        tracer: Tracer | None,
        tracer_provider: TracerProvider | None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._tracer = tracer
        self._tracer_provider = tracer_provider
        self._starting = asyncio.Lock()
        self._session: Session | None = None
        self._ccs: CcsClient | None = None
        self._contextual: ContextualClient | None = None
        self.shared: SharedStore | None = None
        """The fleet's shared store while running with `cache.redis_url`, else None."""
        self.sandbox: Sandbox | None = None
        """The in-process sandbox while running with `sandbox = true`, else None."""
        self._target: tuple[str, str, str] | None = None

    @property
    def running(self) -> bool:
        return self._session is not None

    @property
    def ccs(self) -> CcsClient:
        if self._ccs is None:
            raise RuntimeError("the CCS client was used before start()")
        return self._ccs

    @property
    def contextual(self) -> ContextualClient:
        if self._contextual is None:
            raise RuntimeError("the Contextual client was used before start()")
        return self._contextual

    async def start(self) -> bool:
        """Idempotent and safe to race; True for the call that did start them."""
        if self._session is not None:
            return False
        async with self._starting:
            if self._session is not None:
                return False
            await self._start()
            return True

    async def _start(self) -> None:
        cfg = self._config
        api_key, ccs_url, ctx_url = cfg.api_key, cfg.ccs_url, cfg.ctx_url
        if api_key is None:  # `require_api` let it through: sandbox = true
            from plugin.sandbox import start_sandbox

            self.sandbox = await start_sandbox()
            api_key = self.sandbox.api_key
            ccs_url = ctx_url = self.sandbox.base_url
            self._metrics.sandbox_mode.set(1)
            log.warning(
                "sandbox = true: serving the built-in sandbox's cohorts (%s), not Permutive's; "
                "never point real ad traffic at this",
                ccs_url,
            )
        c = cfg.cache
        if c.redis_url:
            from plugin.cache.shared import RedisStore

            self.shared = RedisStore(
                c.redis_url,
                self._metrics,
                timeout_s=c.redis_timeout_ms / 1000,
                call_timeout_s=c.redis_call_timeout_ms / 1000,
                max_connections=c.redis_max_connections,
                cluster=c.redis_cluster,
                prefix=c.redis_prefix,
            )
        h = cfg.http
        traced = client_trace_configs(cfg.tracing, self._tracer_provider)
        session: Session = (
            make_session(
                h.pool_limit, h.pool_limit_per_host, h.keepalive_timeout_s, trace_configs=traced
            )
            if traced
            else lean_session(h)
        )
        self._ccs = CcsClient(session, ccs_url, api_key, self._metrics, h)
        self._contextual = ContextualClient(session, ctx_url, api_key, self._metrics, h)
        self._ccs.tracer = self._contextual.tracer = self._tracer
        self._target = (api_key, ccs_url, ctx_url)
        self._session = session

    def side_clients(self, metrics: Metrics) -> tuple[CcsClient, ContextualClient]:
        """Clients on the same session with their own in-flight bounds and `metrics`, and
        breakers that never open: calls a person asks for, which must not change what the ad
        path sees (the explain page)."""
        if self._session is None or self._target is None:
            raise RuntimeError("Backends used before start()")
        api_key, ccs_url, ctx_url = self._target
        h = msgspec.structs.replace(self._config.http, breaker_failures=2**62)
        ccs = CcsClient(self._session, ccs_url, api_key, metrics, h)
        return ccs, ContextualClient(self._session, ctx_url, api_key, metrics, h)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.shared is not None:
            await self.shared.close()
            self.shared = None
        if self.sandbox is not None:
            await self.sandbox.close()
            self.sandbox = None

    def last_errors(self) -> dict[str, UpstreamError | None]:
        """The last failure of each API's client (None: none, or not started)."""
        clients = {"ccs": self._ccs, "contextual": self._contextual}
        return {api: c.last_error if c is not None else None for api, c in clients.items()}

    def states(self) -> dict[str, str]:
        """Circuit breaker state per API (`closed`, `open`, `half_open`), for readiness."""
        clients = {"ccs": self._ccs, "contextual": self._contextual}
        return {
            api: c.breaker.state.name.lower() if c is not None else "closed"
            for api, c in clients.items()
        }
