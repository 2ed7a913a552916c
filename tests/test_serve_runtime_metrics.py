"""The sidecar's `/metrics` carries the standard process, GC and platform collectors and its
version, on its own registry; `/openapi.json` carries the same version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plugin.serve.runtime_metrics import BUILD_INFO, register_runtime_metrics
from plugin.version import __version__
from tests.helpers.fake_adserver import Running

STANDARD = {
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "python_gc_collections": "counter",
    "python_gc_objects_collected": "counter",
    "python_gc_objects_uncollectable": "counter",
    "python_info": "gauge",
}


async def scrape(side: Running) -> dict[str, tuple[str, list[tuple[dict[str, str], float]]]]:
    resp = await side.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    return {
        f.name: (f.type, [(dict(s.labels), s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


async def test_metrics_have_the_standard_collectors_and_the_version(side: Running) -> None:
    families = await scrape(side)
    for name, kind in STANDARD.items():
        assert name in families, name
        assert families[name][0] == kind, name
    kind, samples = families[BUILD_INFO]
    assert kind == "gauge" and samples == [({"version": __version__}, 1.0)]
    (_, [(python, _)]) = families["python_info"]
    assert set(python) == {"implementation", "major", "minor", "patchlevel", "version"}
    generations = {labels["generation"] for labels, _ in families["python_gc_collections"][1]}
    assert generations == {"0", "1", "2"}
    (_, [(_, cpu)]) = families["process_cpu_seconds"]
    assert cpu > 0


async def test_the_collectors_are_on_the_sidecars_registry_only(side: Running) -> None:
    assert side.registry.get_sample_value(BUILD_INFO, {"version": __version__}) == 1.0
    assert side.registry.get_sample_value("process_open_fds") is not None
    # The library's global registry is left alone: no second build_info there.
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value(BUILD_INFO, {"version": __version__}) is None


async def test_openapi_version_is_the_package_version(side: Running) -> None:
    resp = await side.client.get("/openapi.json")
    assert resp.status == 200
    assert (await resp.json())["info"]["version"] == __version__


def test_a_registry_that_already_has_them_keeps_one_of_each() -> None:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # as a host's own registry might have
    register_runtime_metrics(registry)
    register_runtime_metrics(registry)
    text = generate_latest(registry).decode()
    assert text.count("# TYPE process_open_fds gauge") == 1
    assert text.count(f"# TYPE {BUILD_INFO} gauge") == 1
    assert f'{BUILD_INFO}{{version="{__version__}"}} 1.0' in text
