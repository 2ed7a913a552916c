"""`serve.workers`: the rules it obeys, and one worker process of `cohortkv serve --workers N`.

A worker is `cohortkv serve` as one process runs it (the same graceful shutdown and event-queue
drain), bound to the port with `SO_REUSEPORT` beside its siblings. Its parent writes it the
config as one JSON line on standard input and keeps that pipe open: the pipe closing means
the parent is gone, and the worker shuts down as on SIGTERM rather than serve unsupervised.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any

import msgspec
from aiohttp import web

from plugin.config import Config, ConfigError
from plugin.errors import CohortkvError
from plugin.observe.logs import configure_logging

log = logging.getLogger("cohortkv.serve")


def workers_flag(value: str) -> int:
    """`--workers N`: a whole number, 0 or more."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes, 0 or more (0: one per core), got {value!r}"
        )
    return n


workers_flag.__name__ = "--workers"


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


class _Tagged(logging.Filter):
    """Every line of a worker starts with `worker N:`."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self._prefix):
            record.msg = f"{self._prefix}{record.msg}"
        return True


def _watch_parent() -> None:
    """Standard input reaches its end when the parent is gone: stop as on SIGTERM."""
    try:  # the file descriptor, not `sys.stdin`: its lock must stay free for the exit
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    """A worker process: the spec from standard input, then `serve` until SIGTERM."""
    from plugin.serve.cli import serve

    spec = msgspec.json.decode(sys.stdin.buffer.readline(), type=WorkerSpec)
    cfg = spec.config
    secrets = [cfg.api_key] if cfg.api_key else []
    configure_logging(json_lines=cfg.log.json, level=spec.log_level, secrets=secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tagged(spec.index))
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    try:
        return _run(serve(cfg, Worker(spec)))
    except CohortkvError as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result


WORKER_CODE = "import sys\nfrom plugin.serve.workers import main\nsys.exit(main())"
"""What a worker process runs (`python -c`)."""
