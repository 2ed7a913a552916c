"""The deployment files in deploy/, checked against the sidecar they describe.

- Prometheus: `promtool` checks the config and the rules and runs the rules' unit tests
  (deploy/prometheus/alerts_test.yml), and lints a real `/metrics` scrape of the sidecar.
- Metric names: every series the dashboard and the alerts query is one the sidecar exports
  (exposition names: `_total`, `_bucket`/`_count`/`_sum`), with labels it has; every family the
  sidecar exports has a place on the dashboard.
- Kubernetes: the manifests parse; the ConfigMap is a valid sidecar configuration; the
  Deployment's command, mounts, Secret, ports, probes, annotations and grace period agree with
  it and with the sidecar's real routes; selectors match.
- MediaTailor: the ADS URL templates, with MediaTailor's variables filled in, go through the
  running sidecar to the ad server with the reserved parameters removed, everything else as it
  was, cohorts added, and one play event per playback session however many ad breaks it has.

promtool is Debian's `prometheus` package (tests/run.sh installs it) and YAML is read with
PyYAML, which the dev extra brings in through schemathesis. When either is missing these
tests fail under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import msgspec
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from plugin.commands.cli import build_parser
from plugin.config import Config, config_from_dict
from plugin.reserved import PREFIX as RESERVED_PREFIX
from plugin.serve.app import make_app
from plugin.signals.events import now_rfc3339
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import SharedRedis
from tests.helpers.times import recent
from tests.helpers.waiting import until

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "cohortkv-dashboard.json"
K8S = DEPLOY / "kubernetes"
MEDIATAILOR = DEPLOY / "mediatailor"
CM_NAME = "cohortkv-config"
CM_KEY = "cohortkv.toml"

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
DEVICE = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
FAMILY = r"(?:cohortkv|process|python)_[a-z0-9_]+"
"""Ours, and prometheus_client's process, GC and platform collectors' (the sidecar has them)."""
METRIC = re.compile(rf"\b{FAMILY}")
SELECTOR = re.compile(rf"\b({FAMILY})\{{([^}}]*)\}}")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*,?')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true (tests/run.sh installs it)")
    pytest.skip(f"{what} is not installed")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        _missing("promtool")
    return path


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        _missing("PyYAML")
    return yaml


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


# -- the expressions the deploy files query ------------------------------------------------------


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_targets() -> list[dict[str, Any]]:
    """Every query of the dashboard: panel targets and annotation queries."""
    return [n for n in _walk(dashboard()) if isinstance(n.get("expr"), str)]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml_module().safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard query and alert rule."""
    out = [(f"dashboard: {t['expr']}", t["expr"]) for t in dashboard_targets()]
    out += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    return out


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by what they stand for."""
    for var, value in (
        ("$__rate_interval", "1m"),
        ("$__range", "1h"),
        ("$__interval", "30s"),
        ("$job", "cohortkv"),
        ("$instance", ".*"),
    ):
        expr = expr.replace(var, value)
    return expr


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }


# -- the running sidecar ---------------------------------------------------------------------


def configmap_text() -> str:
    """The sidecar's configuration file as the Deployment mounts it."""
    text: str = one("ConfigMap", CM_NAME)["data"][CM_KEY]
    return text


def configmap_toml() -> dict[str, Any]:
    return tomllib.loads(configmap_text())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def local_config(
    ads: FakeAdServer,
    *,
    fake: FakePermutive | None = None,
    redis_url: str | None = None,
    events_in_memory: bool = False,
) -> Config:
    """The ConfigMap's configuration, pointed at loopback stand-ins instead of the internet.

    Without `fake` there is no API key: the sidecar runs on its built-in sandbox, asked for.
    Without a Redis (or with `events_in_memory`) the event queue is the in-memory one.
    """
    data = configmap_toml()
    data["serve"]["upstreams"] = {name: ads.url for name in data["serve"]["upstreams"]}
    data["serve"]["host"] = "127.0.0.1"
    data["cache"]["redis_url"] = redis_url
    if redis_url is None:
        del data["cache"]["redis_url"]
    if redis_url is None or events_in_memory:
        data["events"]["queue"] = "memory"
    if fake is not None:
        data.update(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    else:
        data["sandbox"] = True
    return config_from_dict(data)


@dataclass
class Scrape:
    text: str
    exported: dict[str, str] = field(default_factory=dict)
    """Series name as queried (`cohortkv_events_total`) → the family it belongs to."""
    labels: dict[str, frozenset[str]] = field(default_factory=dict)
    """Family name → its label names."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    probes: dict[str, int] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum", ""),
}


def _exported(
    registry: CollectorRegistry, text: str
) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """Queryable series names and label names, from the scrape and from the registry itself.

    The registry gives every family even before it has a sample; `_created` series are left out
    because the Deployment turns them off (PROMETHEUS_DISABLE_CREATED_SERIES).
    """
    families = {(f.name, f.type) for f in text_string_to_metric_families(text)}
    families |= {(f.name, f.type) for f in registry.collect()}
    exported: dict[str, str] = {}
    for name, kind in families:
        if name.endswith("_created"):
            continue
        for suffix in SUFFIXES.get(kind, ("",)):
            exported[name + suffix] = name
    labels: dict[str, frozenset[str]] = {}
    # Label names have no public API; prometheus_client's metric objects keep them here.
    for collector in list(registry._collector_to_names):
        names = getattr(collector, "_labelnames", None)
        family = getattr(collector, "_name", None)
        if names is not None and family is not None:
            labels[family] = frozenset(names)
    # Collectors that are not metric objects (process, GC, platform): the labels they expose.
    for f in text_string_to_metric_families(text):
        if f.name not in labels:
            labels[f.name] = frozenset(k for s in f.samples for k in s.labels)
    return exported, labels


async def _drive(ads: FakeAdServer) -> Scrape:
    """The sidecar on the ConfigMap's configuration and the built-in sandbox, with traffic
    through every route (and an unreachable Redis, a bad identity, an oversized URL, a player
    event) so that most series have samples; then one scrape."""
    registry = CollectorRegistry()
    # Redis unreachable (its failures are counted); the player event is still accepted, in
    # the memory queue.
    config = local_config(
        ads, redis_url=f"redis://127.0.0.1:{closed_port()}/0", events_in_memory=True
    )
    app = make_app(config, registry=registry)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        consented = {"X-Cohortkv-Consent": "granted", "X-Cohortkv-User-Id": USER}
        targets = {
            "gam": "/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
            "&cohortkv_sid=s-1",
            "freewheel": "/ad/g/1?nw=1&caid=a1;_fw_content_url=https%3A%2F%2Fexample.com%2Fv%2F2;",
            "adswizz": "/vast/4.0/request/alias/z1"
            "?aw_0_1st.contentUrl=https%3A%2F%2Fexample.com%2Fp",
        }
        for _ in range(2):  # the second round comes from caches and view reuse
            for upstream, target in targets.items():
                resp = await client.get(f"/proxy/{upstream}{target}", headers=consented)
                assert resp.status == 200, await resp.text()
        resp = await client.get(
            "/proxy/gam/gampad/ads?iu=/1/x", headers={"X-Cohortkv-User-Id": "x"}
        )
        assert resp.status == 200
        resp = await client.get("/proxy/gam/gampad/ads?" + "a=1&" * 5000)
        assert resp.status == 414
        resp = await client.post(
            "/v1/enrich",
            data=json.dumps({"url": "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&gdpr=1"}),
        )
        assert resp.status == 200, await resp.text()
        resp = await client.post(
            "/v1/events",
            data=json.dumps(
                {
                    "identity": {"user_id": USER},
                    "consent": {"granted": True},
                    "events": [
                        {
                            "name": "VideoCompletion",
                            "time": now_rfc3339(),
                            "properties": {"video_id": "v1", "percentage_watched": 1},
                        }
                    ],
                }
            ),
        )
        assert resp.status == 202, await resp.text()
        for _ in range(500):  # bounded wait for the queue to settle, not a timing assert
            if registry.get_sample_value("cohortkv_events_queue_depth") == 0:
                break
            await asyncio.sleep(0.01)
        probes = {}
        for path in ("/healthz", "/readyz", "/metrics"):
            probes[path] = (await client.get(path)).status
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    exported, labels = _exported(registry, text)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    return Scrape(text, exported, labels, samples, probes)


@pytest.fixture(scope="module")
def scrape() -> Scrape:
    async def main() -> Scrape:
        async with FakeAdServer() as ads:
            return await _drive(ads)

    return asyncio.run(main())


# -- Prometheus ------------------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    out = run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in out.stdout


def test_alert_rules_behave_as_their_unit_tests_say() -> None:
    out = run_promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_severity_summary_and_description() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    tests = yaml_module().safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert tested == set(names), "every alert needs a unit test in alerts_test.yml"


def test_prometheus_config_passes_promtool() -> None:
    out = run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_kubernetes_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    path = PROMETHEUS / "prometheus-kubernetes.yml"
    out = run_promtool("check", "config", str(path))
    if "field kubernetes_sd_configs not found" in out.stdout + out.stderr:
        # Debian builds Prometheus without Kubernetes discovery. Check everything else (relabel
        # rules, rule files) with a static target in the discovery's place.
        yaml = yaml_module()
        doc = yaml.safe_load(path.read_text())
        for job in doc["scrape_configs"]:
            assert job.pop("kubernetes_sd_configs")
            job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
        shutil.copy(PROMETHEUS / "alerts.yml", tmp_path)
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(doc))
        out = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_scrape_jobs_are_named_as_the_alerts_expect() -> None:
    yaml = yaml_module()
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        doc = yaml.safe_load((PROMETHEUS / name).read_text())
        assert [j["job_name"] for j in doc["scrape_configs"]] == ["cohortkv"], name
    assert 'up{job="cohortkv"}' in " ".join(r["expr"] for r in alert_rules())


def test_kubernetes_discovery_finds_the_deployments_pods() -> None:
    yaml = yaml_module()
    (job,) = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())[
        "scrape_configs"
    ]
    (sd,) = job["kubernetes_sd_configs"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sd["namespaces"]["names"] == [kustomization["namespace"]]
    keep = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    pod = one("Deployment", "cohortkv")["spec"]["template"]["metadata"]
    name = pod["labels"]["app.kubernetes.io/name"]
    assert keep[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == name
    assert keep[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    assert pod["annotations"]["prometheus.io/scrape"] == "true"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no query linter; a recording rule per query gets them parsed all the same."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(t["expr"])}
        for i, t in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


# -- the sidecar's real exposition -----------------------------------------------------------


def test_the_scrape_saw_real_traffic(scrape: Scrape) -> None:
    """The traffic reached every part that the lint and the name checks below rely on."""
    assert scrape.probes == {"/healthz": 200, "/readyz": 200, "/metrics": 200}
    assert scrape.value("cohortkv_proxy_requests_total", upstream="gam", outcome="2xx") == 3
    live = {"signal": "behavioral", "source": "live", "reason": "live"}
    assert scrape.value("cohortkv_signal_source_total", **live) >= 1
    assert scrape.value("cohortkv_events_total", state="sent") == 1
    assert scrape.value("cohortkv_http_rejected_total", limit="url") == 1
    assert scrape.value("cohortkv_bad_input_total", source="proxy", kind="user_id") == 1
    assert sum(
        v for (n, _), v in scrape.samples.items() if n == "cohortkv_shared_cache_errors_total"
    )
    assert scrape.value("cohortkv_breaker_state", api="redis") in (1, 2)


def test_metrics_pass_promtool_lint(scrape: Scrape) -> None:
    out = run_promtool("check", "metrics", stdin=scrape.text)
    assert (out.returncode, out.stdout.strip(), out.stderr.strip()) == (0, "", "")


def test_dashboard_and_alerts_query_only_exported_series(scrape: Scrape) -> None:
    unknown = {
        (name, where)
        for where, expr in all_exprs()
        for name in METRIC.findall(expr)
        if name not in scrape.exported
    }
    assert not unknown, f"not exported by the sidecar: {sorted(unknown)}"


def test_selectors_and_groupings_use_labels_the_series_have(scrape: Scrape) -> None:
    problems = []
    for where, expr in all_exprs():
        families = {scrape.exported[n] for n in METRIC.findall(expr) if n in scrape.exported}
        has = set(TARGET_LABELS)
        for family in families:
            has |= scrape.labels.get(family, frozenset())
        if "_bucket" in expr:
            has.add("le")
        for name, matchers in SELECTOR.findall(expr):
            own = scrape.labels.get(scrape.exported.get(name, ""), frozenset()) | TARGET_LABELS
            for label in MATCHER.findall(matchers):
                if label not in own:
                    problems.append(f"{where}: {name} has no label {label!r}")
        for label in grouping_labels(expr) - has:
            problems.append(f"{where}: grouping by {label!r}, which none of its series has")
    assert not problems, "\n".join(problems)


def test_legends_and_annotations_name_grouped_labels() -> None:
    """`{{api}}` in a legend or `$labels.api` in an alert text must survive the aggregation."""
    problems = []
    for target in dashboard_targets():
        legend = target.get("legendFormat", "")
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
            if label not in grouping_labels(target["expr"]):
                problems.append(f"legend {legend!r}: {label!r} is aggregated away")
    for rule in alert_rules():
        kept = grouping_labels(rule["expr"])
        if not kept:
            continue  # no aggregation: the series keep all their labels
        text = " ".join(rule["annotations"].values())
        for label in re.findall(r"\$labels\.(\w+)", text):
            if label not in kept:
                problems.append(f"alert {rule['alert']}: $labels.{label} is aggregated away")
    assert not problems, "\n".join(problems)


def test_every_exported_family_has_a_place_on_the_dashboard(scrape: Scrape) -> None:
    used = {scrape.exported[n] for t in dashboard_targets() for n in METRIC.findall(t["expr"])}
    missing = sorted(set(scrape.exported.values()) - used)
    assert not missing, f"families with no dashboard panel: {missing}"


# -- Grafana ---------------------------------------------------------------------------------


def test_dashboard_is_importable_and_templated() -> None:
    doc = dashboard()
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["uid"] and doc["title"]
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    assert "$job" in variables["instance"]["definition"]

    panels = [p for p in doc["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
    for p in panels:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]


def test_every_dashboard_selector_follows_the_job_and_instance_variables() -> None:
    problems = []
    for target in dashboard_targets():
        names = METRIC.findall(target["expr"])
        selectors = dict(SELECTOR.findall(target["expr"]))
        for name in names:
            matchers = selectors.get(name, "")
            if 'job=~"$job"' not in matchers:
                problems.append(f"{name} in {target['expr']!r}: no job filter")
            if 'instance=~"$instance"' not in matchers:
                problems.append(f"{name} in {target['expr']!r}: no instance filter")
    assert not problems, "\n".join(problems)


def test_dashboard_shows_each_upstream_latency_quantile() -> None:
    exprs = [t["expr"] for t in dashboard_targets()]
    for q in ("0.5", "0.95", "0.99"):
        assert any(
            e.startswith(
                f"histogram_quantile({q}, sum by (le, api) (rate(cohortkv_upstream_seconds_bucket"
            )
            for e in exprs
        ), q


# -- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    yaml = yaml_module()
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container() -> dict[str, Any]:
    spec = one("Deployment", "cohortkv")["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    c: dict[str, Any] = spec["containers"][0]
    return c


def test_manifests_parse_and_the_kustomization_lists_them() -> None:
    docs = k8s_documents()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        assert doc["metadata"].get("name"), doc["__file__"]
        assert "namespace" not in doc["metadata"], "the kustomization sets the namespace"
    kustomization = yaml_module().safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert kustomization["namespace"] == "cohortkv"
    on_disk = {d["__file__"] for d in docs}
    assert listed <= on_disk
    # ingress.yaml needs a host and a certificate filled in first, so it is opt-in
    assert on_disk - listed == {"ingress.yaml"}
    kinds = {d["kind"] for d in docs if d["__file__"] in listed}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    assert {"HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds


def test_configmap_is_a_valid_sidecar_configuration() -> None:
    data = configmap_toml()
    assert "api_key" not in data, "the API key belongs in the Secret"
    config = config_from_dict(data)
    # a bad serve section (upstream names or URLs) raises ConfigError; the key is the Secret's
    make_app(config.with_overrides(api_key="from-the-secret"))
    serve = config.serve
    assert serve.host == "0.0.0.0"
    assert set(serve.upstreams) == {"gam", "freewheel", "adswizz"}
    redis = urlsplit(config.cache.redis_url or "")
    service = one("Service", redis.hostname or "")
    assert [p["port"] for p in service["spec"]["ports"]] == [redis.port]
    policy = one("NetworkPolicy", redis.hostname or "")
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]


def test_deployment_runs_the_configmap_with_the_secret_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from plugin.commands.serve import config_for

    deployment = one("Deployment", "cohortkv")
    pod = deployment["spec"]["template"]["spec"]
    c = container()
    command = c["command"]
    assert command[0] == "cohortkv"
    args = build_parser().parse_args(command[1:])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [v for v in volumes.values() if "configMap" in v]
    assert config_volume["configMap"]["name"] == CM_NAME
    item = config_volume["configMap"]["items"][0]
    assert item["key"] == CM_KEY
    assert args.config == f"{mounts[config_volume['name']]['mountPath']}/{item['path']}"
    assert mounts[config_volume["name"]]["readOnly"] is True

    env = {e["name"]: e for e in c["env"]}
    secret = env["COHORTKV_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert (secret["name"], secret["key"]) == ("cohortkv-api-key", "api-key")
    assert env["PROMETHEUS_DISABLE_CREATED_SERIES"]["value"] == "true"

    # What the container runs: the mounted file plus the key from the environment.
    path = tmp_path / CM_KEY
    path.write_text(configmap_text())
    args.config = str(path)
    for name in [n for n in os.environ if n.startswith("COHORTKV_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COHORTKV_API_KEY", "key-from-the-secret")
    config = config_for(args)
    assert config.api_key == "key-from-the-secret"
    assert config.serve.host == "0.0.0.0"

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == config.serve.port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(config.serve.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = float(pre_stop[1])
    assert pod["terminationGracePeriodSeconds"] > drain_s + config.serve.grace_s, (
        "Kubernetes would kill the sidecar before its own shutdown (serve.grace_s) is over"
    )


def test_the_ad_server_client_certificate_can_be_switched_on() -> None:
    """The ConfigMap's commented-out certificate paths lie in the optional Secret's mount."""
    text = configmap_text()
    found = dict(re.findall(r'^# (ad_tls_(?:cert|key)_file) = "([^"]+)"$', text, re.M))
    assert set(found) == {"ad_tls_cert_file", "ad_tls_key_file"}
    switched_on = re.sub(r"^# (ad_tls_)", r"\1", text, flags=re.M)
    serve = config_from_dict(tomllib.loads(switched_on)).serve  # the lines are in [serve]
    assert (serve.ad_tls_cert_file, serve.ad_tls_key_file) == (
        found["ad_tls_cert_file"],
        found["ad_tls_key_file"],
    )
    pod = one("Deployment", "cohortkv")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "cohortkv-ad-tls"
    assert volume["secret"]["optional"] is True, "without the Secret the pod must still start"
    mount = next(m for m in container()["volumeMounts"] if m["name"] == volume["name"])
    # `kubectl create secret tls` stores the pair as tls.crt and tls.key
    assert found == {
        "ad_tls_cert_file": f"{mount['mountPath']}/tls.crt",
        "ad_tls_key_file": f"{mount['mountPath']}/tls.key",
    }


def test_deployment_is_locked_down_and_sized() -> None:
    deployment = one("Deployment", "cohortkv")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    c = container()
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_pdb_and_hpa_select_the_deployment() -> None:
    deployment = one("Deployment", "cohortkv")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = one("Service", "cohortkv")
    assert service["spec"]["selector"] == selector
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    pdb = one("PodDisruptionBudget", "cohortkv")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    hpa = one("HorizontalPodAutoscaler", "cohortkv")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cohortkv",
    }
    assert hpa["spec"]["minReplicas"] >= deployment["spec"]["replicas"]
    redis = one("Deployment", "cohortkv-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= redis_labels.items(), "the Service must not pick Redis pods"
    policy = one("NetworkPolicy", "cohortkv-redis")
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == selector


async def test_the_configmaps_event_queue_keeps_events_in_redis(
    shared_redis: SharedRedis,
) -> None:
    """As shipped, an accepted event is in Redis (another replica could deliver it)."""
    own = shared_redis.own()
    async with FakePermutive() as fake, FakeAdServer() as ads:
        config = local_config(ads, fake=fake, redis_url=own.url)
        assert config.events.queue == "redis"
        config = config.with_overrides(
            cache=msgspec.structs.replace(config.cache, redis_prefix=own.prefix)
        )
        client = TestClient(TestServer(make_app(config, registry=CollectorRegistry())))
        await client.start_server()
        try:
            body = {
                "identity": {"user_id": USER},
                "consent": {"granted": True},
                "events": [{"name": "VideoCompletion", "time": recent(0)}],
            }
            resp = await client.post("/v1/events", json=body)
            assert resp.status == 202, await resp.text()
            await until(lambda: fake.calls["ccs"] == 1, what="delivered from Redis")
        finally:
            await client.close()


def test_redis_keeps_views_and_events_across_a_restart() -> None:
    """AOF (fsync every second) on a volume; eviction never takes an event stream."""
    redis = one("Deployment", "cohortkv-redis")
    pod = redis["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = c["args"]
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] in ("volatile-lru", "volatile-lfu", "noeviction")
    (mount,) = c["volumeMounts"]
    assert mount["mountPath"] == flags["--dir"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = one("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert redis["spec"]["strategy"]["type"] == "Recreate", "one pod at a time on the volume"


def test_ingress_exposes_only_the_proxy() -> None:
    ingress = one("Ingress", "cohortkv")
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/proxy/", "Prefix")]
    assert paths[0]["backend"]["service"] == {"name": "cohortkv", "port": {"name": "http"}}


# -- MediaTailor -----------------------------------------------------------------------------

MEDIATAILOR_VARIABLES = frozenset(
    {
        "avail.index",
        "avail.random",
        "session.avail_duration_ms",
        "session.avail_duration_secs",
        "session.client_ip",
        "session.id",
        "session.referer",
        "session.user_agent",
        "session.uuid",
    }
)
"""MediaTailor's session variables for ADS URL templates, plus `player_params.*`."""

MACRO = re.compile(r"\[([^\]]+)\]")

PLAYER = {
    # As MediaTailor substitutes them: decoded once from what the player sent (double-encoded).
    "content_url": "https%3A%2F%2Fexample.com%2Fshows%2Fep-1",
    "vid": "vid_456",
    "cmsid": "2481",
    "asset_id": "ep-1",
    "duration": "1800",
    "rdid": DEVICE,
    "idtype": "rida",
    "fw_did": f"rida:{DEVICE}",
    "is_lat": "0",
    "gdpr": "",
    "gdpr_consent": "",
    "us_privacy": "1YNN",
    "gpp": "",
    "gpp_sid": "",
    "cust_params": "genre%3Dsport%26tier%3Dpremium",
    "permutive_id": "",
}


def templates() -> dict[str, str]:
    out = {}
    for path in sorted(MEDIATAILOR.glob("*-playback-configuration.json")):
        doc = json.loads(path.read_text())
        out[path.name.removesuffix("-playback-configuration.json")] = doc["AdDecisionServerUrl"]
    return out


def fill(template: str, avail: int) -> str:
    session = {
        "session.id": "4122857716",
        "session.uuid": "0f8c1d2e-3b4a-4c5d-8e6f-7a8b9c0d1e2f",
        "avail.random": str(9_000_000 + avail),
        "avail.index": str(avail),
        "session.avail_duration_ms": "60000",
        "session.avail_duration_secs": "60",
    }

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("player_params."):
            return PLAYER[name.removeprefix("player_params.")]
        return session[name]

    return MACRO.sub(value, template)


def fields(query: str) -> list[list[str]]:
    return [section.split("&") for section in query.split(";")]


def test_templates_use_mediatailor_variables_and_point_at_the_sidecar() -> None:
    found = templates()
    assert set(found) == {"gam", "freewheel"}
    ingress_host = one("Ingress", "cohortkv")["spec"]["rules"][0]["host"]
    upstreams = configmap_toml()["serve"]["upstreams"]
    for platform, url in found.items():
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname) == ("https", ingress_host), platform
        assert parts.path.startswith(f"/proxy/{platform}/") and platform in upstreams
        for name in MACRO.findall(url):
            assert name in MEDIATAILOR_VARIABLES or name.startswith("player_params."), name
            if name.startswith("player_params."):
                assert name.removeprefix("player_params.") in PLAYER, name
        assert f"{RESERVED_PREFIX}sid=[session.id]" in url, "one view per playback session"


@pytest.mark.parametrize("platform", ["gam", "freewheel"])
async def test_template_through_the_sidecar(platform: str) -> None:
    template = templates()[platform]
    async with FakePermutive() as fake, FakeAdServer() as ads:
        config = local_config(ads, fake=fake)
        app = make_app(config, registry=CollectorRegistry())
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            sent = []
            for avail in (1, 2):  # two ad breaks of one playback session
                url = fill(template, avail)
                parts = urlsplit(url)
                base = str(client.make_url("/")).rstrip("/")
                resp = await client.session.get(  # exactly these bytes: no re-encoding
                    yarl.URL(f"{base}{parts.path}?{parts.query}", encoded=True)
                )
                assert resp.status == 200, await resp.text()
                assert ads.last.target.partition("?")[0] == parts.path.removeprefix(
                    f"/proxy/{platform}"
                )
                sent.append((parts.query, ads.last.query))
        finally:
            await client.close()

    for given, received in sent:
        assert RESERVED_PREFIX not in received
        expected = [
            [f for f in section if not f.startswith(RESERVED_PREFIX)] for section in fields(given)
        ]
        got = fields(received)
        if platform == "gam":
            cust = [f for f in got[0] if f.startswith("cust_params=")]
            assert len(cust) == 1
            values = dict(
                kv.split("=", 1) for kv in unquote(cust[0].removeprefix("cust_params=")).split("&")
            )
            assert values == {"genre": "sport", "tier": "premium", "permutive": "12345,67890,99999"}
            assert [f for f in got[0] if f != cust[0]] == [
                f for f in expected[0] if not f.startswith("cust_params=")
            ]
        else:
            assert got[0] == expected[0] and got[2:] == expected[2:]
            added = [f for f in got[1] if f not in expected[1]]
            assert [f for f in got[1] if f in expected[1]] == expected[1]
            assert sorted(added) == ["permutive=12345", "permutive=88888"]
    # One play event for the session, however many ad breaks; contextual answered once.
    assert fake.calls == {"ccs": 1, "contextual": 1}
    (ccs,) = fake.bodies["ccs"]
    assert ccs["body"]["alias"] == {"tag": "rida", "id": DEVICE}
    assert ccs["body"]["events"][0]["properties"]["video_id"] in ("vid_456", "ep-1")
    assert ccs["body"]["events"][0]["session_id"]
