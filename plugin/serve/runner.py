"""Runs the sidecar until SIGTERM/SIGINT (`cohortkv serve`; its flags: `plugin.commands.serve`).

On a signal it stops accepting connections, lets in-flight requests finish, flushes the event
queue and exits 0, all within `serve.grace_s`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web

from plugin.commands.args import listen_error
from plugin.config import Config
from plugin.errors import CohortkvError
from plugin.observe.tracing import setup_sdk
from plugin.serve.accesslog import stdout_logger
from plugin.serve.app import SIDECAR, make_app
from plugin.serve.guard import GuardedSite

if TYPE_CHECKING:
    from plugin.serve.workers import Worker

log = logging.getLogger("cohortkv.serve")

NO_UPSTREAMS = (
    "no upstreams configured: /proxy/ answers 404 for every ad server until [serve.upstreams] "
    'names one (gam = "https://pubads.g.doubleclick.net"); /v1/enrich and /v1/events still work'
)


def _tune_gc(threshold: int) -> None:
    """A long-lived server allocates many short-lived objects per request: collect the young
    generation less often, and keep everything that exists at start-up out of collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, *gc.get_threshold()[1:])


async def serve(cfg: Config, worker: Worker | None = None) -> int:
    """Runs the sidecar with `cfg` until SIGTERM or SIGINT; 0 after a clean shutdown. With
    `serve.workers` other than 1, this process supervises that many workers instead."""
    if worker is None and cfg.serve.workers != 1:
        from plugin.serve.supervisor import supervise

        return await supervise(cfg)
    if cfg.serve.access_log:
        stdout_logger()
    if not cfg.serve.upstreams:
        log.warning(NO_UPSTREAMS)
    if cfg.tracing.enabled:
        setup_sdk(cfg.tracing)
    app = make_app(cfg)
    if worker is not None:
        worker.attach(app)
    sidecar = app[SIDECAR]
    grace = cfg.serve.grace_s
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace / 2)
    await runner.setup()
    try:
        site = GuardedSite(
            runner,
            sidecar.connections,
            cfg.serve.host,
            cfg.serve.port,
            backlog=1024,
            reuse_port=worker is not None,
        )
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise CohortkvError(listen_error(cfg.serve.host, cfg.serve.port, e)) from None

    _tune_gc(cfg.serve.gc_threshold)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(sidecar.enricher.accounting.loop_error)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = runner.addresses[0][:2]
    mode = (
        "built-in sandbox (sandbox = true: not Permutive's cohorts)"
        if sidecar.enricher.sandbox is not None
        else "Permutive APIs"
    )
    log.info("listening on http://%s:%s against the %s", host, port, mode)
    await stop.wait()
    sidecar.begin_shutdown()
    log.info("shutting down (grace %.1f s)", grace)
    try:
        await asyncio.wait_for(runner.cleanup(), timeout=grace)
    except TimeoutError:
        log.warning("shutdown grace period (%.1f s) exceeded", grace)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            if worker is not None:  # the parent and a terminal may both signal a worker
                signal.signal(sig, signal.SIG_IGN)
    return 0
