"""The harness every scenario runs on: the plan, the processes, load runs and library runs.

Every measurement runs in a child process of its own: the emulated upstreams (one process each),
the systems under test (sidecar, passthrough proxy, naive proxy), the load generator, and the
in-process library runs. This process only starts them, waits, and collects their JSON. The
scenarios themselves are in `benchmarks.scenarios`.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import Child, ChildError, py, run_json
from benchmarks.rows import Row
from benchmarks.upstreams import Latency
from benchmarks.workload import Mix

BUDGET_MS = 300
API_KEY = "bench-key"


@dataclass(frozen=True)
class Plan:
    """How much of everything to run: `quick()` for a smoke run, `full()` for RESULTS.md."""

    name: str
    lib_calls: int
    lib_concurrency: int
    lib_warmup: int
    load_s: float
    load_warmup_s: float
    concurrencies: tuple[int, ...]
    hang_s: float
    hang_lib_calls: int
    ctx_requests: int
    mem_users: int
    mem_traced: int
    profile: bool
    uvloop_lib_calls: int
    reps_at_64: int
    fleet_viewers: int = 3000
    fleet_event_requests: int = 4000
    latency: str = "lognormal:25:120"
    ad_latency: str = "lognormal:25:120"

    @staticmethod
    def quick(**kw: Any) -> Plan:
        return Plan(
            name="quick",
            lib_calls=500,
            lib_concurrency=32,
            lib_warmup=100,
            load_s=1.0,
            load_warmup_s=0.4,
            concurrencies=(16, 64, 256),
            hang_s=1.5,
            hang_lib_calls=256,
            ctx_requests=10_000,
            mem_users=100_000,
            mem_traced=20_000,
            profile=False,
            uvloop_lib_calls=500,
            reps_at_64=1,
            fleet_viewers=512,
            fleet_event_requests=500,
            **kw,
        )

    @staticmethod
    def full(**kw: Any) -> Plan:
        return Plan(
            name="full",
            lib_calls=10_000,
            lib_concurrency=32,
            lib_warmup=500,
            load_s=8.0,
            load_warmup_s=1.5,
            concurrencies=(16, 64, 256),
            hang_s=8.0,
            hang_lib_calls=1500,
            ctx_requests=10_000,
            mem_users=1_000_000,
            mem_traced=100_000,
            profile=True,
            uvloop_lib_calls=5000,
            reps_at_64=3,
            **kw,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Bench:
    """One run's processes, and what a scenario measures with: `rows` and `data` collect what
    the scenarios found; `tmp` holds the configs and profiles of the processes it started."""

    plan: Plan
    log: Any = print
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    ups: dict[str, Child] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    _seeds: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cohortkv-bench-")))

    # -- processes ----------------------------------------------------------------------

    def start(self) -> None:
        specs = {
            "ccs": self.plan.latency,
            "contextual": self.plan.latency,
            "adserver": self.plan.ad_latency,
        }
        for role, latency in specs.items():
            self.ups[role] = self._keep(
                Child(role, py("benchmarks.upstreams", "--role", role, "--latency", latency))
            )

    def _keep(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.close()
        self.children.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def set_upstream(self, role: str, **control: Any) -> None:
        self.ups[role].post("/__control", control)

    def restore_upstreams(self) -> None:
        self.set_upstream("ccs", latency=self.plan.latency, fault="none")
        self.set_upstream("contextual", latency=self.plan.latency, fault="none")
        self.set_upstream("adserver", latency=self.plan.ad_latency, fault="none")

    def reset_stats(self) -> None:
        for up in self.ups.values():
            up.post("/__reset")

    def stats(self) -> dict[str, dict[str, Any]]:
        return {role: up.get("/__stats") for role, up in self.ups.items()}

    def sidecar(
        self, loop: str = "uvloop", profile: str | None = None, extra: str = "", serve: str = ""
    ) -> Child:
        port = free_port()
        config = self.tmp / f"sidecar-{port}.toml"
        config.write_text(
            f'api_key = "{API_KEY}"\n'
            f'ccs_url = "{self.ups["ccs"].url}"\n'
            f'ctx_url = "{self.ups["contextual"].url}"\n'
            f"budget_ms = {BUDGET_MS}\n"
            "[serve]\n"
            'host = "127.0.0.1"\n'
            f"port = {port}\n" + serve + "[serve.upstreams]\n"
            f'gam = "{self.ups["adserver"].url}"\n' + extra
        )
        gc_stats = self.tmp / f"sidecar-{port}-gc.json"
        argv = py("benchmarks.sidecar", "--config", str(config), "--loop", loop)
        argv += ["--gc-stats", str(gc_stats)]
        if profile:
            argv += ["--profile", profile]

        def ready(child: Child) -> dict[str, Any]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not child.alive():
                    raise ChildError(f"sidecar exited: {child.stderr_tail(force=True)}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                        return {"port": port}
                except OSError:
                    time.sleep(0.05)
            child.stop()
            raise ChildError(f"sidecar not ready: {child.stderr_tail(force=True)}")

        child = self._keep(Child("sidecar", argv, ready=ready))
        child.info["gc_stats"] = str(gc_stats)
        return child

    @staticmethod
    def gc_pauses(child: Child) -> dict[str, Any]:
        """The sidecar's garbage-collection pauses, once it has stopped."""
        child.stop()
        try:
            data: dict[str, Any] = json.loads(Path(child.info["gc_stats"]).read_text())
            return data
        except (OSError, ValueError, KeyError):
            return {}

    def proxy(self, kind: str, loop: str = "uvloop") -> Child:
        gam = f"gam={self.ups['adserver'].url}"
        if kind == "passthrough":
            argv = py("benchmarks.baselines.passthrough", "--upstream", gam, "--loop", loop)
        else:
            argv = py(
                "benchmarks.baselines.naive_proxy",
                "--upstream",
                gam,
                "--ccs-url",
                self.ups["ccs"].url,
                "--ctx-url",
                self.ups["contextual"].url,
                "--budget-ms",
                str(BUDGET_MS),
                "--loop",
                loop,
            )
        return self._keep(Child(kind, argv))

    def load(
        self,
        system: Child,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        mark_ms: float | None = None,
        stagger_ms: float = 100.0,
        mix: str = "worst",
        history: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """One load-generator run against `system`, with CPU per request of every process.

        `mix="realistic"` sends the realistic mix; with `history` the earlier views of its
        returning viewers go to `system` first, unmeasured (a sidecar that has been running
        a while has their answers cached; the baselines keep no state, so they skip it).
        `on_start` is called once that is done, just before the measured run starts.
        """
        pool = int((duration_s + warmup_s) * 6000) + 1000
        common = self._loadgen_args(system, concurrency, pool, mix, duration_s + warmup_s)
        primed: dict[str, Any] = {}
        if history and mix == "realistic":
            argv = py("benchmarks.loadgen", *common, "--phase", "history")
            argv[argv.index("--concurrency") + 1] = str(max(concurrency, 256))
            primed = run_json(argv, timeout_s=300)
        if on_start is not None:
            on_start()
        self.reset_stats()
        procs = {"system": system, **self.ups}
        cpu0 = {name: p.cpu_s() for name, p in procs.items()}
        argv = py("benchmarks.loadgen", *common, "--duration", str(duration_s))
        argv += ["--warmup", str(warmup_s), "--stagger-ms", str(stagger_ms)]
        if mark_ms is not None:
            argv += ["--mark-ms", str(mark_ms)]
        r: dict[str, Any] = run_json(argv, timeout_s=duration_s + warmup_s + 60)
        if primed:
            r["history"] = primed
        sent = int(r["sent"])
        cpu = {name: p.cpu_s() - cpu0[name] for name, p in procs.items()}
        cpu["loadgen"] = r["cpu_s"]
        # Per request sent; a run that sent none has no figure (the rows say n/a).
        r["cpu_us_per_request"] = {
            name: round(s / sent * 1e6) if sent else float("nan") for name, s in cpu.items()
        }
        r["wrapped"] = sent > pool
        r["upstream_calls"] = self._upstream_calls()
        return r

    def _loadgen_args(
        self, system: Child, concurrency: int, pool: int, mix: str, run_s: float
    ) -> list[str]:
        """The load generator's arguments shared by the history phase and the measured run."""
        args = [
            "--base",
            f"{system.url}/proxy/gam",
            "--concurrency",
            str(concurrency),
            "--seed",
            str(next(self._seeds)),
            "--pool",
            str(pool),
            "--mix",
            mix,
        ]
        if mix == "realistic":
            # No system here serves more than ~5,000 req/s on two cores: history beyond that
            # many requests would never be used.
            args += ["--history-upto", str(int(run_s * 5000) + Mix().window)]
        return args

    def _upstream_calls(self) -> dict[str, int]:
        """Calls each emulated upstream received since the last `reset_stats`."""
        st = self.stats()
        ad = st["adserver"]["stats"]
        return {
            "ccs": st["ccs"]["stats"].get("ccs", 0),
            "contextual": st["contextual"]["stats"].get("contextual", 0),
            "ad": ad.get("ad_requests", 0),
            "ad_enriched": ad.get("ad_requests_enriched", 0),
            "ad_behavioral": ad.get("ad_requests_behavioral", 0),
        }

    def library(self, *args: str, timeout_s: float = 600) -> dict[str, Any]:
        argv = py(
            "benchmarks.library",
            *args,
            "--ccs",
            self.ups["ccs"].url,
            "--ctx",
            self.ups["contextual"].url,
            "--budget-ms",
            str(BUDGET_MS),
            "--seed",
            str(next(self._seeds)),
        )
        result: dict[str, Any] = run_json(argv, timeout_s=timeout_s)
        return result

    # -- derived targets ------------------------------------------------------------------

    @property
    def upstream_p50_ms(self) -> float:
        return Latency(self.plan.latency).p50_ms

    @property
    def added_latency_target_ms(self) -> float:
        return self.upstream_p50_ms + 3.0
