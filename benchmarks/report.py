"""The table on the terminal, and RESULTS.md: figures, machine, method, profiles.

RESULTS.md is rewritten by every full run, except the part between the `notes` markers, which
holds what a person wrote about the figures (the optimization log) and is carried over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import BUDGET_MS, Plan
from benchmarks.ratios import cpu_ratio, median_run, rps_ratio
from benchmarks.rows import Row, pct, show, times

NOTES_BEGIN = "<!-- notes: kept across runs -->"
NOTES_END = "<!-- /notes -->"
HEADERS = ("#", "measure", "result", "target", "status")


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("aiohttp", "uvloop", "msgspec", "prometheus-client"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    commit = ""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": commit or "unknown",
    }


def table(rows: Sequence[Row]) -> str:
    """Plain-text table for the terminal, one line per row."""
    cells = [HEADERS, *((r.scenario, r.measure, r.result, r.target, r.status) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(len(HEADERS))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def _profile_md(title: str, prof: dict[str, Any]) -> list[str]:
    if not prof:
        return []
    out = [f"**{title}**", ""]
    packages = prof.get("packages", {})
    if packages:
        out.append(
            "Own time by package: "
            + ", ".join(f"{name} {pct}%" for name, pct in packages.items() if pct >= 0.5)
            + "."
        )
        out.append("")
    top = prof.get("top", [])[:10]
    if top:
        out.append(
            _md_table(
                ("own %", "calls", "function (top by own time)"),
                [(t["own_pct"], t["calls"], f"`{t['function']}`") for t in top],
            )
        )
        out.append("")
    cum = prof.get("cumulative", [])[:10]
    if cum:
        out.append(
            _md_table(
                ("incl. %", "calls", "cohortkv function (top by time including callees)"),
                [(t["cum_pct"], t["calls"], f"`{t['function']}`") for t in cum],
            )
        )
        out.append("")
    return out


def _side_by_side_md(data: dict[str, Any]) -> list[str]:
    """Both mixes against passthrough at c=64 and c=256, one line per system: ratios are
    medians over neighbouring runs (the systems take turns), figures those of the median run."""
    rows = _side_by_side_rows(data)
    if not rows:
        return []
    return [
        "## Worst case and realistic mix side by side",
        "",
        "Worst case: every request a new viewer's first ad break (scenario 2). Realistic mix: "
        "views of 4 ad breaks, 70% of viewers consented, half returning with a cached answer "
        "(scenario 7). Ratios are medians over neighbouring runs; the other figures are the "
        "median run's. CPU is the system's own process, per request sent.",
        "",
        _md_table(
            (
                "mix",
                "c",
                "system",
                "req/s",
                "req/s vs passthrough",
                "p50 / p99 / p99.9 ms",
                "CPU µs/req",
                "CPU vs passthrough",
            ),
            rows,
        ),
        "",
    ]


def _side_by_side_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for key, mix in (("s2_runs", "worst case"), ("s7_runs", "realistic mix")):
        runs = data.get(key) or {}
        for c in (64, 256):
            base = runs.get("passthrough", {}).get(c)
            if not base:
                continue
            for system, by_c in runs.items():
                mine = by_c.get(c)
                if not mine:
                    continue
                r = median_run(mine)
                rows.append(
                    (
                        mix,
                        str(c),
                        system,
                        show(r["rps"], ".0f"),
                        pct(rps_ratio(mine, base)),
                        f"{show(r['p50_ms'])} / {show(r['p99_ms'])} / {show(r['p999_ms'])}",
                        show(r["cpu_us_per_request"]["system"], ".0f"),
                        times(cpu_ratio(mine, base)["ratio"]),
                    )
                )
    return rows


def _cpu_md(data: dict[str, Any]) -> list[str]:
    rows = []
    for key, mix in (("s2", "worst case"), ("s7", "realistic mix")):
        for system, by_c in data.get(key, {}).items():
            for c, r in by_c.items():
                rows.append(_cpu_row(mix, system, c, r))
    if not rows:
        return []
    return [
        "CPU per request by process (µs), from /proc: the two cores are shared by all of them.",
        "",
        _md_table(
            (
                "mix",
                "system",
                "concurrency",
                "req/s",
                "system CPU",
                "load generator CPU",
                "emulated upstreams CPU",
                "users repeated",
            ),
            rows,
        ),
        "",
    ]


def _cpu_row(mix: str, system: str, c: Any, r: dict[str, Any]) -> tuple[Any, ...]:
    cpu = r["cpu_us_per_request"]
    return (
        mix,
        system,
        c,
        f"{r['rps']:.0f}",
        cpu.get("system", 0),
        cpu.get("loadgen", 0),
        cpu.get("ccs", 0) + cpu.get("contextual", 0) + cpu.get("adserver", 0),
        "yes" if r.get("wrapped") else "no",
    )


def results_md(
    rows: Sequence[Row], data: dict[str, Any], plan: Plan, info: dict[str, str], notes: str
) -> str:
    s = [
        *_header_md(plan, info),
        *_headline_md(rows),
        *_results_md(rows),
        *_method_md(plan),
        *_side_by_side_md(data),
        *_cpu_md(data),
        *_gc_md(data),
        *_memory_md(data),
        *_profiles_md(data),
        "## Notes",
        "",
        NOTES_BEGIN,
        notes.strip("\n"),
        NOTES_END,
        "",
    ]
    return "\n".join(s)


def _header_md(plan: Plan, info: dict[str, str]) -> list[str]:
    command = f"python -m benchmarks{' --quick --write' if plan.name == 'quick' else ''}"
    machine_rows = [
        ("CPU", info["cpu"]),
        ("cores", info["cores"]),
        ("Python", info["python"]),
        ("OS", info["os"]),
        ("packages", info["packages"]),
        ("commit", info["commit"]),
    ]
    return [
        "# cohortkv benchmarks",
        "",
        f"Written by `{command}` ({plan.name} run) on {info['date']}. "
        "Every figure below comes from that run.",
        "",
        _md_table(("machine", ""), machine_rows),
        "",
    ]


HEADLINE = (
    ("CPU per request / passthrough, realistic mix, c=64", "7", "c=64 sidecar CPU per request"),
    ("CPU per request / passthrough, worst case, c=64", "2", "c=64 sidecar CPU per request"),
    ("throughput / passthrough, realistic mix, c=256", "7", "c=256 sidecar throughput / pass"),
    ("`if_uncached` returning viewers, added p99, c=64", "7", "c=64 returning viewers"),
    ("sidecar RSS per active viewer, 100k viewers", "10", "memory per active viewer"),
    ("Redis memory per viewer / keys per viewer", "10", "memory per active viewer"),
    ("hung CCS: sidecar p99.9 (budget + 15 ms)", "3", "CCS hangs, budget"),
    ("Contextual API calls per 10,000 requests", "4", "Contextual API calls per 10,000 ad"),
)
"""The performance step's figures, found among the rows: (what, scenario, start of the row's
measure); the memory rows are told apart by their order."""


def _headline_md(rows: Sequence[Row]) -> list[str]:
    out: list[tuple[str, str, str, str]] = []
    used: set[int] = set()
    for what, scenario, start in HEADLINE:
        for i, r in enumerate(rows):
            if i not in used and r.scenario == scenario and r.measure.startswith(start):
                used.add(i)
                out.append((what, r.result, r.target, r.status))
                break
        else:
            out.append((what, "not run", "—", "—"))
    return [
        "## Targets of this step",
        "",
        _md_table(("measure", "result", "target", "status"), out),
        "",
    ]


def _results_md(rows: Sequence[Row]) -> list[str]:
    gaps = [r for r in rows if r.status == "GAP"]
    return [
        "## Results",
        "",
        _md_table(HEADERS, [(r.scenario, r.measure, r.result, r.target, r.status) for r in rows]),
        "",
        f"Targets: {sum(r.status == 'met' for r in rows)} met, {len(gaps)} with a gap"
        + (": " + "; ".join(f"{r.scenario} {r.measure}" for r in gaps) if gaps else "")
        + ".",
        "",
    ]


def _method_md(plan: Plan) -> list[str]:
    return [
        "## Method",
        "",
        f"- Emulated upstreams, one process each (`benchmarks/upstreams.py`, uvloop): CCS API "
        f"and Contextual API with latency `{plan.latency}` (lognormal: p50 : p99 in ms), the ad "
        f"server with `{plan.ad_latency}`. Answers: 48 distinct behavioral cohort sets, a "
        "per-user Permutive user id; 16 contextual sets, one per URL.",
        "- Workload (`benchmarks/workload.py`): GAM VAST tags from CTV devices carrying "
        "`rdid`/`idtype=idfa`/`gdpr=0` and `description_url`; every request is a new user's "
        "first ad break (a live CCS call each time, no view reuse: cohortkv's worst case); "
        "content URLs Zipf (s = 1) over 100 URLs.",
        f"- Library (scenario 1): {plan.lib_concurrency} concurrent callers of "
        f"`Enricher.enrich(url)` in one process after {plan.lib_warmup} warm-up calls; the naive "
        "baseline (`benchmarks/baselines/naive.py`) calls CCS, then Contextual, in line, no cache.",
        f"- Sidecar (scenario 2): `cohortkv serve` (run through `benchmarks/sidecar.py`, which "
        "calls the CLI's own entry point), the passthrough proxy and the naive proxy, each in its "
        "own process, driven by the closed-loop load generator (`benchmarks/loadgen.py`, aiohttp) "
        f"in another: {plan.load_warmup_s:g} s warm-up, {plan.load_s:g} s measured per point. "
        "The c=64 point is run three times, the systems taking turns; ratios are medians of "
        "neighbouring runs. Added latency: per request, the time to the answer minus the time "
        "the ad server emulator held that request (it says so in a header the proxies pass "
        "back); p50 of that, sidecar minus passthrough at the same concurrency. Its target is "
        "the slowest upstream's configured p50 + 3 ms; the naive proxy pays CCS + Contextual.",
        "- Realistic mix (scenario 7, `Workload.realistic`): views of 4 ad breaks (a pre-roll "
        "and three mid-rolls); 1,024 views in progress at once, visited in a fixed shuffled "
        "order, so two breaks of one view are 1,024 requests apart with other viewers' requests "
        "between; 70% of viewers consented (`gdpr=0`, else `rdp=1`); half of the views by a "
        "returning viewer, whose earlier view (another content URL) is sent to the sidecar "
        "before the measured run, unmeasured, so that its answer is cached as in a sidecar that "
        "has been running a while. The baselines keep no state and get no history. Measured "
        "at c=64 (three runs, systems taking turns), c=256 and c=16 (no naive proxy), the "
        "sidecar in both "
        '`[behavioral] wait` modes (`"always"`, the default, and `"if_uncached"`). Returning '
        "viewers' added p99: per request of a returning viewer, time to the answer minus the "
        "ad server's hold, p99, sidecar minus passthrough.",
        f"- CCS hanging (scenario 3): the CCS emulator reads requests and never answers; budget "
        f"{BUDGET_MS} ms; the ad server answers at once so that the figure is the time cohortkv "
        "holds the ad request. Sidecar and library are warmed with a healthy CCS first; the 64 "
        "clients start spread over one budget, as independent viewers arrive (started at the "
        "same instant, a closed loop keeps them in lockstep and every wave of 64 times out in "
        "the same millisecond).",
        "- Two replicas (scenario 8): two sidecars on one redis-server of the run's own. Views: "
        "new viewers, each watching a piece of content of its own, 4 ad breaks each, every "
        "break on the other replica than the one before, 256 viewers' breaks in flight; the "
        "CCS emulator counts the viewers whose play event it received more than once. Events: "
        '`[events] queue = "redis"`, `/v1/events` requests of 5 events (100 users) at '
        "concurrency 256 over both replicas, the CCS API answering in a fixed 25 ms; accepted "
        "per second over the posting, delivered per second until the CCS API had them all.",
        "- Memory (scenario 5): `benchmarks/memory.py` fills a fresh Enricher's behavioral cache "
        "through the CCS client's own decoding and the enricher's own store path; RSS growth "
        "over the fill, and tracemalloc on a smaller fill to name the allocating lines.",
        "",
    ]


def _gc_md(data: dict[str, Any]) -> list[str]:
    pauses = data.get("s2_gc", {})
    if not pauses:
        return []
    return [
        "Sidecar garbage collection over scenario 2 (`gc.callbacks`): "
        + "; ".join(
            f"{gen}: {p['collections']} collections, {p['total_ms']:.0f} ms in all, "
            f"worst {p['max_ms']:.0f} ms"
            for gen, p in pauses.items()
        )
        + ".",
        "",
    ]


def _memory_md(data: dict[str, Any]) -> list[str]:
    mem = data.get("s5", {})
    if not mem.get("by_line"):
        return []
    return [
        "Memory per cached user by allocating line (tracemalloc):",
        "",
        _md_table(
            ("bytes/user", "where"),
            [(b["bytes_per_user"], f"`{b['where']}`") for b in mem["by_line"]],
        ),
        "",
    ]


def _extra_md(title: str, prof: dict[str, Any]) -> list[str]:
    """The sidecar's own CPU per request minus the passthrough's, function by function."""
    vs = prof.get("vs_passthrough", {})
    if not vs:
        return []
    return [
        f"**{title}: where the extra CPU goes** (cProfile on thread CPU time, both under the "
        f"same load: {vs['sidecar_us']} vs {vs['passthrough_us']} µs per request under the "
        "profiler, which inflates many small calls)",
        "",
        _md_table(
            ("extra µs/req", "sidecar", "passthrough", "function"),
            [
                (t["extra_us"], t["sidecar_us"], t["passthrough_us"], f"`{t['function']}`")
                for t in vs.get("top", [])[:12]
            ],
        ),
        "",
    ]


def _sampled_md(title: str, prof: dict[str, Any]) -> list[str]:
    spy = prof.get("sampled", {})
    if not spy.get("top"):
        return []
    return [
        f"**{title}, sampled** (py-spy, {spy.get('samples', 0)} samples at "
        f"{spy.get('rps_under_sampler', 0):.0f} req/s; a thread preempted after a socket write "
        "wakes its peer still counts as busy in that write, so the writes are overstated)",
        "",
        _md_table(
            ("own %", "function (top by own samples)"),
            [(t["own_pct"], f"`{t['function']}`") for t in spy["top"][:10]],
        ),
        "",
    ]


def _profiles_md(data: dict[str, Any]) -> list[str]:
    prof = data.get("profile", {})
    if not prof:
        return []
    lib = prof.get("library", {})
    side = prof.get("sidecar", {})
    real = prof.get("sidecar_realistic", {})
    return [
        "## Profiles (cProfile on thread CPU time, and py-spy)",
        "",
        *_profile_md(
            "Library enrich loop (4,000 calls, 16 callers, upstreams answering at once; "
            f"{lib.get('cpu_us_per_call_profiled', 0):.0f} µs CPU per call under the profiler)",
            lib,
        ),
        *_profile_md(
            "Sidecar under load, worst case, c=64 "
            f"({side.get('rps_under_profiler', 0):.0f} req/s under the profiler; after "
            "warm-up; the event loop's own C code is not in the profile)",
            side,
        ),
        *_profile_md(
            "Sidecar under load, realistic mix, c=64 "
            f"({real.get('rps_under_profiler', 0):.0f} req/s under the profiler; after "
            "warm-up and the returning viewers' earlier views)",
            real,
        ),
        *_extra_md("Sidecar, worst case", side),
        *_extra_md("Sidecar, realistic mix", real),
        *_sampled_md("Sidecar, worst case", side),
        *_sampled_md("Sidecar, realistic mix", real),
    ]


def kept_notes(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError:
        return ""
    start = text.find(NOTES_BEGIN)
    end = text.find(NOTES_END)
    if start < 0 or end < start:
        return ""
    return text[start + len(NOTES_BEGIN) : end]


def write_results(
    path: Path, rows: Sequence[Row], data: dict[str, Any], plan: Plan, info: dict[str, str]
) -> None:
    path.write_text(results_md(rows, data, plan, info, kept_notes(path)))
    print(f"wrote {path}", file=sys.stderr)
