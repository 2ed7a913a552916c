"""`cohortkv serve --workers N` as real processes: one port, every worker serving, one sum on
/metrics, a killed worker started again, SIGTERM drained, and the fleet's rules for workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin.config import Config, ConfigError, ServeConfig, load_config
from tests.helpers.cli import ROOT, clean_env, cohortkv
from tests.helpers.fake_adserver import FakeAdServer
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import SharedRedis
from tests.helpers.samples import GAM_SAMPLE
from tests.helpers.times import recent
from tests.helpers.waiting import until

AD_PATH = "/proxy/gam/gampad/ads?" + GAM_SAMPLE.partition("?")[2]


@dataclass
class Workers:
    """A running `cohortkv serve --workers N`: the parent, its port, what it logged so far."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logged(self, pattern: str) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := re.search(pattern, line))]

    def pid(self, index: int) -> int:
        return int(self.logged(rf"worker {index} started \(pid (\d+)\)")[-1].group(1))

    def listening(self) -> int:
        return len(self.logged(r"worker \d+: listening on "))


@asynccontextmanager
async def workers(config: Path, n: int = 2) -> AsyncIterator[Workers]:
    """`cohortkv serve --config CONFIG --workers N` until all N workers listen; killed at the
    end unless the test stopped it. Its standard error is read all along (into `lines`)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plugin", "serve", "--config", str(config), "--workers", str(n),
        cwd=ROOT, env=clean_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    stream = proc.stderr
    running = Workers(proc, 0)

    async def read() -> None:
        while line := (await stream.readline()).decode():
            running.lines.append(line)

    reader = asyncio.create_task(read())
    try:
        await until(lambda: running.listening() >= n or reader.done(), 60, "workers listening")
        assert running.listening() >= n, "".join(running.lines)
        running.port = int(running.logged(r"listening on http://127\.0\.0\.1:(\d+)")[0].group(1))
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader


def write_config(
    tmp_path: Path, fake: FakePermutive, ads: FakeAdServer, redis: SharedRedis
) -> Path:
    own = redis.own()
    path = tmp_path / "cohortkv.toml"
    path.write_text(
        f'api_key = "{API_KEY}"\nccs_url = "{fake.url}"\nctx_url = "{fake.url}"\n'
        f'[cache]\nredis_url = "{own.url}"\nredis_prefix = "{own.prefix}"\n'
        f'[serve]\nhost = "127.0.0.1"\nport = 0\ngrace_s = 15.0\n'
        f'[serve.upstreams]\ngam = "{ads.url}"\n'
    )
    return path


async def ad_requests(url: str, n: int) -> list[int]:
    """`n` ad requests, each on a connection of its own (the kernel spreads connections)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.get(url + AD_PATH) as resp:
                await resp.read()
                return resp.status

        return [await one() for _ in range(n)]


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, labels): value}, on a new connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url + "/metrics") as resp,
    ):
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_worker(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["worker"]: value
        for (name, labels), value in metrics.items()
        if name == "cohortkv_worker_requests_total"
    }


PROXIED_2XX = ("cohortkv_proxy_requests_total", (("outcome", "2xx"), ("upstream", "gam")))


async def test_two_workers_serve_one_port_and_metrics_sum_them(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis, tmp_path: Path
) -> None:
    async with workers(write_config(tmp_path, fake, ads, shared_redis)) as w:
        statuses = await ad_requests(w.url, 40)
        assert statuses == [200] * 40 and len(ads.requests) == 40
        for _ in range(4):  # whichever worker answers /metrics, it shows the sum of both
            metrics = await scrape(w.url)
            assert metrics[PROXIED_2XX] == 40
            served = by_worker(metrics)
            assert set(served) == {"0", "1"} and all(v > 0 for v in served.values()), served
            assert metrics[("cohortkv_serve_workers", ())] == 2
            assert not any(dict(labels).get("pid") for _, labels in metrics)
            # gauges read through a function (cache sizes) are copied into the shared files
            assert ("cohortkv_cache_entries", (("cache", "behavioral"),)) in metrics
        w.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(w.proc.wait(), 30) == 0


async def test_a_killed_worker_is_started_again_and_requests_go_on(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis, tmp_path: Path
) -> None:
    async with workers(write_config(tmp_path, fake, ads, shared_redis)) as w:
        assert await ad_requests(w.url, 10) == [200] * 10
        killed = w.pid(0)
        os.kill(killed, signal.SIGKILL)
        await until(lambda: w.logged(rf"worker 0 \(pid {killed}\) was killed by SIGKILL"), 30)
        assert await ad_requests(w.url, 10) == [200] * 10  # the other worker serves meanwhile
        await until(lambda: w.listening() >= 3, 30, "worker 0 listening again")
        assert w.pid(0) != killed
        assert await ad_requests(w.url, 20) == [200] * 20
        metrics = await scrape(w.url)
        assert metrics[("cohortkv_worker_restarts_total", ())] == 1
        assert metrics[PROXIED_2XX] == 40  # what the killed worker counted stays counted
        w.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(w.proc.wait(), 30) == 0
    assert len(ads.requests) == 40


async def test_sigterm_drains_every_worker_and_delivers_every_accepted_event(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis, tmp_path: Path
) -> None:
    fake.delay["ccs"] = 0.05  # deliveries lag behind: the queues hold events at SIGTERM
    async with workers(write_config(tmp_path, fake, ads, shared_redis)) as w:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(i: int) -> int:
                body = {
                    "identity": {"alias": {"tag": "idfa", "id": f"DEVICE-{i}"}},
                    "consent": {"granted": True},
                    "events": [{"name": "Videoview", "time": recent(i % 60, 1)}],
                }
                async with session.post(w.url + "/v1/events", data=json.dumps(body)) as resp:
                    assert resp.status == 202, await resp.text()
                    return int((await resp.json())["accepted"])

            accepted = sum(await asyncio.gather(*(post(i) for i in range(60))))
        served = by_worker(await scrape(w.url))
        w.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(w.proc.wait(), 60) == 0, "".join(w.lines)
    assert accepted == 60 and set(served) == {"0", "1"}
    delivered = sum(len(call["body"]["events"]) for call in fake.bodies["ccs"])
    assert delivered == accepted
    assert len(w.logged(r"worker \d: shutting down")) == 2
    assert not w.logged("Traceback") and not w.logged("did not exit cleanly")


def gone(pid: int) -> bool:
    """No such process, or one that has exited and waits to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_workers_whose_parent_was_killed_shut_down_by_themselves(
    fake: FakePermutive, ads: FakeAdServer, shared_redis: SharedRedis, tmp_path: Path
) -> None:
    async with workers(write_config(tmp_path, fake, ads, shared_redis)) as w:
        pids = [w.pid(0), w.pid(1)]
        w.proc.kill()
        await w.proc.wait()
        await until(lambda: all(gone(p) for p in pids), 30, "workers without a parent gone")
    assert len(w.logged(r"worker \d: shutting down")) == 2


# -- the rules ---------------------------------------------------------------------------------


def test_more_than_one_worker_without_redis_is_refused_naming_the_field() -> None:
    for args, env in (
        (("--workers", "2"), {}),
        (("--workers", "0"), {}),
        ((), {"COHORTKV_SERVE__WORKERS": "3"}),
    ):
        done = cohortkv("serve", "--port", "0", *args, env=clean_env(COHORTKV_API_KEY="k", **env))
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert "serve.workers" in line and "cache.redis_url" in line, line


def test_workers_with_the_in_process_sandbox_are_refused() -> None:
    redis = {"COHORTKV_CACHE__REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = cohortkv("serve", "--sandbox", "--port", "0", "--workers", "2", env=clean_env(**redis))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert "serve.workers" in line and "sandbox" in line and "cohortkv sandbox" in line, line


def test_a_port_another_process_listens_on_is_one_line_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        redis = {"COHORTKV_CACHE__REDIS_URL": "redis://127.0.0.1:6379/0", "COHORTKV_API_KEY": "k"}
        done = cohortkv("serve", "--port", port, "--workers", "2", env=clean_env(**redis))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert "--port" in line and port in line and "in use" in line, line


def test_a_negative_number_of_workers_is_an_error_naming_where_it_was_set(
    tmp_path: Path,
) -> None:
    done = cohortkv("serve", "--workers", "-1", env=clean_env(COHORTKV_API_KEY="k"))
    assert done.returncode == 2 and "--workers" in done.stderr and "-1" in done.stderr
    assert "Traceback" not in done.stderr
    done = cohortkv("serve", env=clean_env(COHORTKV_API_KEY="k", COHORTKV_SERVE__WORKERS="-1"))
    assert done.returncode == 2 and "COHORTKV_SERVE__WORKERS" in done.stderr
    assert "serve.workers" in done.stderr and "Traceback" not in done.stderr
    path = tmp_path / "c.toml"
    path.write_text("[serve]\nworkers = -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert e.value.field == "serve.workers" and ">= 0" in str(e.value)
    with pytest.raises(ConfigError) as e:
        Config(serve=ServeConfig(workers=-2))
    assert e.value.field == "serve.workers"
    assert load_config(None, env={"COHORTKV_SERVE__WORKERS": "0"}).serve.workers == 0


# -- every metric in multiprocess mode ---------------------------------------------------------

EVERY_METRIC = """
import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from plugin.observe.metrics import Metrics
from plugin.serve.metrics import ServeMetrics
from plugin.serve.runtime_metrics import register_runtime_metrics

registry = CollectorRegistry()
metrics = Metrics(registry)
serve = ServeMetrics(registry)
register_runtime_metrics(registry)
for holder in (metrics, serve):
    for m in vars(holder).values():
        if not isinstance(m, (Counter, Gauge, Histogram)):
            continue
        child = m.labels(*["x"] * len(m._labelnames)) if m._labelnames else m
        if isinstance(m, Histogram):
            child.observe(0.2)
        elif isinstance(m, Gauge):
            if m._multiprocess_mode == "all":
                sys.exit(f"{m._name}: a gauge without a multiprocess_mode")
            child.set(2)
        else:
            child.inc(2)
single = {f.name for f in registry.collect() if f.name.startswith("cohortkv_")}
shared = CollectorRegistry()
MultiProcessCollector(shared)
families = {f.name: f for f in shared.collect()}
missing = single - set(families)
if missing:
    sys.exit(f"not in multiprocess mode: {sorted(missing)}")
for name in single:
    for s in families[name].samples:
        if "pid" in s.labels:
            sys.exit(f"{name}: one series per process")
print(len(single))
"""


def test_every_metric_works_in_multiprocess_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EVERY_METRIC],
        cwd=ROOT,
        env=clean_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert int(done.stdout) >= 30
