"""Prometheus metrics across `cohortkv serve` workers: one sum, whichever worker is scraped.

The parent points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before any worker starts, so
that prometheus_client keeps every worker's values in files there (multiprocess mode: each
gauge says how its workers' values combine). /metrics on any worker reads them all. Gauges read
through a function when scraped (cache sizes, calls in flight) have no file of their own: each
worker copies them into theirs every `SAMPLE_INTERVAL_S`, and before it answers a scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from plugin.observe.metrics import Metrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_INTERVAL_S = 1.0

PROCESS_GAUGES = {
    "process_cpu_seconds_total": "livesum",
    "process_resident_memory_bytes": "livesum",
    "process_virtual_memory_bytes": "livesum",
    "process_open_fds": "livesum",
    "process_max_fds": "livemin",
    "process_start_time_seconds": "livemin",
}
"""prometheus_client's process metrics (CPU, memory, files) of each worker, combined: a sum of
the live workers' (CPU: of those running now), the earliest start, the lowest file limit."""


class WorkerMetrics:
    """A worker's part in the shared metrics: its served-request count, its process and
    function gauges copied into its files, and /metrics for all workers."""

    def __init__(self, index: int, metrics: Metrics) -> None:
        self._sampled = (metrics.cache_entries, metrics.inflight)
        requests = Counter(
            "cohortkv_worker_requests_total",
            "HTTP requests answered, by worker (serve.workers > 1): how the kernel spread the"
            " connections over the workers.",
            ["worker"],
            registry=None,
        )
        self._served = requests.labels(str(index))
        self._process = ProcessCollector(registry=None)
        self._process_gauges = {
            name: Gauge(
                name.removesuffix("_total"),
                f"Worker processes' {name.removeprefix('process_')} ({mode[4:]} of the live ones).",
                registry=None,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )
            for name, mode in PROCESS_GAUGES.items()
        }
        self._platform = PlatformCollector(registry=None)

    def sample(self) -> None:
        """This worker's function gauges and process metrics, into its files."""
        for gauge in self._sampled:
            for family in gauge.collect():
                for s in family.samples:
                    gauge.labels(**s.labels).set(s.value)
        for family in self._process.collect():
            for s in family.samples:
                target = self._process_gauges.get(s.name)
                if target is not None:
                    target.set(s.value)

    def exposition(self) -> bytes:
        self.sample()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self._platform)
        return generate_latest(registry)

    async def served(self, request: web.Request, response: web.StreamResponse) -> None:
        self._served.inc()

    async def sampling(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._sample_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)


class ParentMetrics:
    """The supervising parent's counters, written to the shared directory beside the
    workers' (the parent imported prometheus_client before that directory existed, so its
    values are made file-backed here explicitly)."""

    def __init__(self, workers: int) -> None:
        made = values.ValueClass
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        try:
            self.restarts = Counter(
                "cohortkv_worker_restarts_total",
                "Workers the parent started again after one died (serve.workers > 1).",
                registry=None,
            )
            count = Gauge(
                "cohortkv_serve_workers",
                "Worker processes the parent keeps running (serve.workers; 0 there: one per core).",
                registry=None,
                multiprocess_mode="max",
            )
            count.set(workers)
        finally:
            values.ValueClass = made

    @staticmethod
    def worker_gone(pid: int) -> None:
        """A worker's live gauges stop counting once it has exited."""
        mark_process_dead(pid)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def shared_directory(path: str) -> Iterator[None]:
    """`PROMETHEUS_MULTIPROC_DIR` set to `path` for this process and the workers it starts."""
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
