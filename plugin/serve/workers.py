"""`serve.workers`: the rules it obeys, and one worker process of `cohortkv serve --workers N`.

A worker is `cohortkv serve` as one process runs it (the same graceful shutdown and event-queue
drain), bound to the port with `SO_REUSEPORT` beside its siblings. Its parent writes it the
config as one JSON line on standard input and keeps that pipe open: the pipe closing means
the parent is gone, and the worker shuts down as on SIGTERM rather than serve unsupervised.
"""

from __future__ import annotations

import logging
import os

import msgspec
from aiohttp import web

from plugin.config import Config, ConfigError

log = logging.getLogger("cohortkv.serve")


def worker_count(workers: int) -> int:
    """`serve.workers` as a number of processes: 0 is one per core this process may use."""
    if workers:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_workers(cfg: Config) -> None:
    """The fleet's rules for more than one worker: a ConfigError naming `serve.workers`."""
    if cfg.serve.workers == 1:
        return
    if cfg.sandbox:
        raise ConfigError(
            "config: serve.workers: more than one worker cannot run with sandbox = true (each"
            " would keep its own sandbox users); run `cohortkv sandbox` once and point ccs_url"
            ' and ctx_url at it with api_key = "sandbox", or set workers = 1',
            field="serve.workers",
        )
    if not cfg.cache.redis_url:
        raise ConfigError(
            f"config: serve.workers: {cfg.serve.workers} (more than one worker) needs"
            " cache.redis_url, the store the workers share views, sessions and answers"
            " through; set it, or workers = 1",
            field="serve.workers",
        )


class WorkerSpec(msgspec.Struct, frozen=True):
    """What the parent writes a worker: its config (port resolved), index and log level."""

    config: Config
    index: int
    log_level: int


class Worker:
    """The part of a running `cohortkv serve` that makes it one worker of several."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.index = spec.index

    def attach(self, app: web.Application) -> None:
        """Shared metrics on /metrics, and this worker's count of requests answered."""
        from plugin.serve.app import SIDECAR
        from plugin.serve.worker_metrics import WorkerMetrics

        sidecar = app[SIDECAR]
        metrics = WorkerMetrics(self.index, sidecar.enricher.metrics)
        sidecar.exposition = metrics.exposition
        app.on_response_prepare.append(metrics.served)
        app.cleanup_ctx.append(metrics.sampling)


WORKER_CODE = "import sys\nfrom plugin.serve.worker_main import main\nsys.exit(main())"
"""What a worker process runs (`python -c`)."""
