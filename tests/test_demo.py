"""`cohortkv demo` end to end, and the terminal helpers it prints with."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from plugin.demo import Demo, histogram_quantile
from plugin.term import Style, UrlChange, table, visible_len, wants_color

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^\s+(GAM|FreeWheel|AdsWizz)\s+(allowed|denied)\s+(live|cache|none|skipped)"
    r"\s+(live|cache|none|skipped)\s",
    re.M,
)
ENRICHED = re.compile(r"^\s+(?:(GAM|FreeWheel|AdsWizz)\s+)?enriched\s+(\S+)$", re.M)


def enriched_urls(out: str) -> list[str]:
    return [url for _, url in ENRICHED.findall(out)]


def sources(out: str) -> tuple[set[str], set[str]]:
    rows = ROW.findall(out)
    return {r[2] for r in rows}, {r[3] for r in rows}


@pytest.fixture(scope="module")
def demo_output() -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
    proc = subprocess.run(
        [sys.executable, "-m", "plugin", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_demo_enriches_all_three_platforms(demo_output: str) -> None:
    urls = enriched_urls(demo_output)
    gam = [u for u in urls if "/gampad/ads?" in u]
    fw = [u for u in urls if "/ad/g/1?" in u]
    aw = [u for u in urls if "/vast/4.0/request/" in u]
    assert gam and fw and aw and len(gam) == len(fw) == len(aw)
    for u in gam:
        cust = re.search(r"[?&]cust_params=([^&]*)", u)
        assert cust is not None and "permutive%3D" in cust.group(1)
    for u in fw:
        sections = u.split("?", 1)[1].split(";")
        assert any(p.startswith("permutive=") for p in sections[1].split("&"))
        assert "permutive=" not in sections[0] + sections[2]
    for u in aw:
        assert re.search(r"[?&]aw_0_1st\.permutive=\d", u)


def test_demo_shows_live_cached_and_skipped_signals(demo_output: str) -> None:
    behavioral, contextual = sources(demo_output)
    assert {"live", "cache", "skipped"} <= behavioral
    assert {"live", "cache"} <= contextual
    assert "skipped" not in contextual  # contextual flows for everyone


def test_unconsented_viewer_gets_contextual_only_and_no_ccs_call(demo_output: str) -> None:
    rows = ROW.findall(demo_output)
    denied = [r for r in rows if r[1] == "denied"]
    assert denied and all(r[2] == "skipped" for r in denied)
    assert all(r[2] != "skipped" for r in rows if r[1] == "allowed")
    assert "CCS calls for this viewer: 0" in demo_output
    assert "the unconsented viewer's: 0" in demo_output
    # Their ad requests carry the news context (20002) and no behavioral cohort (1xxxx).
    news = [u for u in enriched_urls(demo_output) if "election-night" in u]
    assert news and all("20002" in u and not re.search(r"1000\d", u) for u in news)


def test_late_answer_from_the_slow_api_reaches_the_next_ad_break(demo_output: str) -> None:
    # The slow pre-roll of view 2 goes out with the last good answer; its play event's late
    # answer (2 football videos: cohort 10002) is in the cache for the mid-roll.
    assert 'cohortkv_late_answers_total{api="ccs"} = 1' in demo_output
    gam = [u for u in enriched_urls(demo_output) if "/gampad/ads?" in u and "vid_457" in u]
    preroll = [u for u in gam if "vpos=preroll" in u]
    midroll = [u for u in gam if "vpos=midroll" in u]
    assert preroll and midroll
    assert "10002" not in preroll[0] and "10002" in midroll[0]


def test_demo_summary_reads_the_metrics_registry(demo_output: str) -> None:
    summary = demo_output.split("== Metrics", 1)[1]
    assert re.search(r"^\s+ccs\s+4\s+4\s+0\s", summary, re.M)  # 2 play + 2 completion events
    assert re.search(r"^\s+contextual\s+3\s+3\s+0\s", summary, re.M)  # 3 content URLs
    assert "denied (tcf_purpose_denied)" in summary and "allowed (tcf_granted)" in summary


def test_piped_output_has_no_colour_codes(demo_output: str) -> None:
    assert "\x1b[" not in demo_output


async def test_platform_flag_restricts_the_ad_servers() -> None:
    out = io.StringIO()
    assert await Demo(out, platforms=("freewheel",), budget_ms=300).run() == 0
    text = out.getvalue()
    rows = ROW.findall(text)
    assert rows and {r[0] for r in rows} == {"FreeWheel"}
    assert "/gampad/ads" not in text and "/vast/4.0/" not in text
    assert {"live", "cache", "skipped"} <= sources(text)[0]


async def test_colour_highlights_exactly_the_inserted_key_values() -> None:
    out = io.StringIO()
    await Demo(out, platforms=("gam",), color=True).run()
    text = out.getvalue()
    assert "\x1b[32;1m%26permutive%3D" in text


# --- terminal helpers ------------------------------------------------------------------------

query_text = st.text(alphabet="ab=&;%3D", max_size=30)


@given(query_text, query_text, query_text, query_text)
def test_url_change_locates_the_difference(
    prefix: str, removed: str, inserted: str, suffix: str
) -> None:
    before = "https://x/p?" + prefix + removed + suffix
    after = "https://x/p?" + prefix + inserted + suffix
    c = UrlChange(before, after)
    assert c.changed == (before != after)
    # Same text outside the span; the span is what changed.
    assert after[: c.start] == before[: c.start]
    assert after[c.end :] == before[c.b_end :]
    assert before[: c.start] + after[c.start : c.end] + before[c.b_end :] == after
    if c.changed:
        assert after[c.start : c.end].strip("&;?") in c.param_after or c.start == c.end
    plain = c.highlighted(Style(False))
    assert plain == after
    assert re.sub(r"\x1b\[[0-9;]*m", "", c.highlighted(Style(True), "green")) == after


def test_url_change_widens_to_the_whole_parameter() -> None:
    c = UrlChange(
        "https://h/gampad/ads?iu=/1&cust_params=a%3Db&sz=1",
        "https://h/gampad/ads?iu=/1&cust_params=a%3Db%26permutive%3D1&sz=1",
    )
    assert (c.param_before, c.param_after) == (
        "cust_params=a%3Db",
        "cust_params=a%3Db%26permutive%3D1",
    )
    added = UrlChange("https://h/v?a=1", "https://h/v?a=1&aw_0_1st.permutive=1,2")
    assert (added.param_before, added.param_after) == ("", "aw_0_1st.permutive=1,2")


def test_table_aligns_on_visible_width() -> None:
    s = Style(True)
    lines = table([["a", s("live", "green"), "x"], ["longer", "cache", "y"]])
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert plain == ["a       live   x", "longer  cache  y"]
    assert visible_len(lines[0]) == len(plain[0]) < len(lines[0])


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert wants_color(_Tty()) is True
    assert wants_color(io.StringIO()) is False
    assert wants_color(_Tty(), no_color_flag=True) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_color(_Tty()) is False


def test_histogram_quantile_estimates_within_the_right_bucket() -> None:
    registry = CollectorRegistry()
    h = Histogram("t_seconds", "t", ["api"], buckets=(0.01, 0.1, 1.0), registry=registry)
    for v in (0.005, 0.05, 0.06, 0.07, 0.5):
        h.labels("ccs").observe(v)
    h.labels("other").observe(0.9)
    p50 = histogram_quantile(registry, "t_seconds", 0.5, api="ccs")
    assert p50 is not None and 0.01 < p50 <= 0.1
    assert histogram_quantile(registry, "t_seconds", 0.5, api="missing") is None
