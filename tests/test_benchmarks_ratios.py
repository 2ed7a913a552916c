"""A benchmark ratio over nothing (a run under load in which a group got no request, or no
request was answered) is reported as `n/a`, never a crash of the whole run."""

from __future__ import annotations

import math

from benchmarks.ratios import added_over, cpu_ratio, group_added_p99, median, ratio, rps_ratio
from benchmarks.rows import NA, judge, ms, pct, show, system_row, times


def test_ratio_over_zero_or_a_missing_figure_is_none() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(0.0, 2.0) == 0.0
    assert ratio(1.0, 0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, math.nan) is None
    assert ratio(math.nan, 1.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None


def test_median_leaves_missing_figures_out() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, math.nan, 2.0, 3.0]) == 2.5
    assert median([None, math.nan]) is None
    assert median([]) is None


def test_no_figure_is_written_n_a_and_judged_n_a() -> None:
    assert pct(None) == times(None) == ms(None) == ms(math.nan, " ms") == show(None) == NA
    assert (pct(0.4567), times(1.5), ms(2.25, " ms")) == ("45.7%", "1.50x", "2.2 ms")
    assert judge(None, lambda v: v >= 0.45) == NA
    assert judge(0.5, lambda v: v >= 0.45) == "met"
    assert judge(0.4, lambda v: v >= 0.45) == "GAP"


def run(rps: float, cpu: float, **extra: object) -> dict[str, object]:
    return {"rps": rps, "cpu_us_per_request": {"system": cpu}, **extra}


def test_comparisons_against_a_run_with_no_answered_request() -> None:
    empty = run(0.0, math.nan)  # no request answered: no rps, no CPU per request
    full = run(1000.0, 300.0, added_p50_ms=2.0, groups={"returning": {"added_p99_ms": 4.0}})
    assert rps_ratio([full], [empty]) is None
    assert rps_ratio([full, full], [empty, run(500.0, 100.0)]) == 2.0
    assert cpu_ratio([full], [empty]) == {
        "ratio": None,
        "sidecar_us": 300.0,
        "passthrough_us": None,
    }
    assert added_over([full], [empty]) is None  # no answered request, no added latency
    assert group_added_p99([full], [empty], "returning") is None


def test_a_system_row_with_nothing_sent_says_n_a() -> None:
    r = {
        "rps": 0.0,
        "p50_ms": math.nan,
        "p99_ms": math.nan,
        "p999_ms": math.nan,
        "sent": 0,
        "upstream_calls": {"ccs": 0, "contextual": 0, "ad": 0, "ad_behavioral": 0},
    }
    row = system_row("2", 64, "cohortkv sidecar", r, 1, ccs_digits=2)
    assert row.measure.endswith("per request CCS n/a, Ctx n/a, behavioral cohorts in n/a")
    assert row.result == "0 req/s, n/a / n/a / n/a"
