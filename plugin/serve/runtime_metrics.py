"""The sidecar's process, garbage-collector and platform metrics, and its version.

prometheus_client's standard collectors, registered on the sidecar's own registry (not the
library's global one): `process_*` (CPU seconds, resident and virtual memory, open and maximum
file descriptors, start time; Linux), `python_gc_*` (collections and collected objects per
generation) and `python_info`; plus `cohortkv_build_info{version}`, always 1, so that a
dashboard shows which version each replica runs.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from plugin.version import __version__

BUILD_INFO = "cohortkv_build_info"


def register_runtime_metrics(registry: CollectorRegistry, version: str = __version__) -> None:
    """Adds the standard collectors and `cohortkv_build_info` to `registry`, each unless the
    registry already exports its series (a host's registry may have them): prometheus_client
    does not notice that duplicate for collectors without `describe()`."""
    present = {family.name for family in registry.collect()}
    standard: tuple[tuple[str, Callable[[], object]], ...] = (
        ("process_cpu_seconds", lambda: ProcessCollector(registry=registry)),
        ("python_gc_collections", lambda: GCCollector(registry=registry)),
        ("python_info", lambda: PlatformCollector(registry=registry)),
    )
    for family, register in standard:
        if family not in present:
            register()
    if BUILD_INFO not in present:
        build = Gauge(
            BUILD_INFO,
            "The running cohortkv's version (the value is always 1).",
            ["version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        build.labels(version).set(1)
