"""`cohortkv demo` end to end, and the terminal helpers it prints with."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from plugin.commands.cli import build_parser
from plugin.commands.demo import Demo
from plugin.commands.demo_report import REASON_TEXT, WIDTH, changed_param, written
from plugin.commands.demo_summary import histogram_quantile
from plugin.commands.term import Style, UrlChange, clip, table, visible_len, wants_color
from plugin.result import REASONS

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ("GAM", "FreeWheel", "AdsWizz")
SOURCE = r"(live|cache|none|skipped)(?: ([a-z_]+))?"
ROW = re.compile(
    rf"^    (GAM|FreeWheel|AdsWizz)\s+(allowed|denied) ([a-z_]+)\s+{SOURCE}\s+{SOURCE}"
    r"\s+(\d+\.\d) ms$"
)
BREAK = re.compile(r"^    (pre-roll|mid-roll)  (.*)$")
DETAIL = re.compile(r"^      (\S+=\S+|nothing written)(?:  (\S+))?")
AD_SERVER_URL = re.compile(r"https?://[^\s]*(?:/gampad/|/ad/g/1|/vast/4\.0/)")


class Row(msgspec.Struct):
    platform: str
    consent: str
    consent_reason: str
    behavioral: tuple[str, str]
    contextual: tuple[str, str]
    written: str
    param: str


class Break(msgspec.Struct):
    label: str
    note: str
    rows: list[Row]
    after: list[str]
    """The lines after the rows up to the next break (gained cohorts, late answers)."""


def parse_breaks(out: str) -> list[Break]:
    """The ad breaks as printed: each row with the detail line under it."""
    breaks: list[Break] = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if m := BREAK.match(line):
            breaks.append(Break(m[1], m[2], [], []))
        elif m := ROW.match(line):
            detail = DETAIL.match(lines[i + 1])
            assert detail is not None, f"no detail line under {line!r}"
            breaks[-1].rows.append(
                Row(
                    m[1],
                    m[2],
                    m[3],
                    (m[4], m[5] or m[4]),
                    (m[6], m[7] or m[6]),
                    detail[1],
                    detail[2] or "",
                )
            )
        elif breaks and line.startswith("      ") and not DETAIL.match(line):
            breaks[-1].after.append(line.strip())
    return breaks


def run_demo(*flags: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
    proc = subprocess.run(
        [sys.executable, "-m", "plugin", "demo", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def demo_output() -> str:
    return run_demo()


@pytest.fixture(scope="module")
def verbose_output() -> str:
    return run_demo("--verbose")


@pytest.fixture(scope="module")
def breaks(demo_output: str) -> list[Break]:
    return parse_breaks(demo_output)


# --- the screen ----------------------------------------------------------------------------


def test_every_line_fits_a_100_column_terminal(demo_output: str) -> None:
    too_wide = [line for line in demo_output.splitlines() if len(line) > WIDTH]
    assert WIDTH == 100 and not too_wide


def test_one_row_per_ad_request_with_what_was_written_under_it(
    demo_output: str, breaks: list[Break]
) -> None:
    # 3 viewers' views x (pre-roll + mid-roll), each asked of the three ad servers
    assert [b.label for b in breaks] == ["pre-roll", "mid-roll"] * 3
    for b in breaks:
        assert tuple(r.platform for r in b.rows) == PLATFORMS
    rows = [line for line in demo_output.splitlines() if ROW.match(line)]
    lines_naming_a_platform = [
        line
        for line in demo_output.splitlines()
        if re.match(r"^\s+(GAM|FreeWheel|AdsWizz)\s", line)
    ]
    assert len(rows) == len(lines_naming_a_platform) == 18


def test_no_ad_request_url_without_verbose(demo_output: str) -> None:
    assert not AD_SERVER_URL.search(demo_output)
    assert "doubleclick.net" not in demo_output and "fwmrm.net" not in demo_output


def test_the_changed_parameter_only(breaks: list[Break]) -> None:
    for r in (r for b in breaks for r in b.rows):
        if r.platform == "GAM":
            assert r.param.startswith("cust_params=") and "permutive" in r.param
        elif r.platform == "FreeWheel":
            assert r.param.startswith("permutive=")
        else:
            assert r.param == "aw_0_1st." + r.written  # short enough to show whole
    # one cohort: the whole of GAM's parameter, merged into the cust_params already there
    assert breaks[4].rows[0].param == "cust_params=section%3Dnews%26permutive%3D20002"


def test_reasons_appear_and_the_legend_explains_each(demo_output: str, breaks: list[Break]) -> None:
    rows = [r for b in breaks for r in b.rows]
    reasons = {r.behavioral[1] for r in rows} | {r.contextual[1] for r in rows}
    assert {
        "live",
        "view_reuse",
        "fresh_cache",
        "cache_fallback_timeout",
        "consent_denied",
    } <= reasons
    assert reasons <= set(REASONS)
    legend = demo_output.split("== Legend", 1)[1].split("== Cohorts", 1)[0]
    for reason in reasons:
        assert re.search(rf"^  {reason}\s+\S", legend, re.M), reason
    assert {r.consent_reason for r in rows} == {"tcf_granted", "tcf_purpose_denied"}


def test_every_reason_has_a_legend_text() -> None:
    assert set(REASON_TEXT) == set(REASONS)


def test_the_legend_says_why_platforms_and_cached_answers_differ(demo_output: str) -> None:
    legend = " ".join(demo_output.split("== Legend", 1)[1].split())
    assert "activations" in legend and "completion event" in legend
    cohorts = demo_output.split("== Cohorts seen", 1)[1]
    # 10006 is activated for FreeWheel only, 10010 for GAM only (the sandbox workspace)
    assert re.search(r"^  10006\s+behavioral\s+FreeWheel\s+Samplers", cohorts, re.M)
    assert re.search(r"^  10010\s+behavioral\s+GAM\s+Sports or news", cohorts, re.M)


# --- what the rows say ---------------------------------------------------------------------


def test_the_other_platforms_of_a_break_share_the_live_answer(breaks: list[Break]) -> None:
    gam, fw, aw = breaks[0].rows
    assert gam.behavioral == gam.contextual == ("live", "live")
    for r in (fw, aw):
        assert r.behavioral == ("live", "view_reuse")
        # Each platform's Contextual request carries its own properties (GAM's `cms_id`,
        # FreeWheel's duration, AdsWizz's `audio` section): each is its own content, with its
        # own call, so that no request's properties decide another's answer.
        assert r.contextual == ("live", "live")
    assert "CCS +1, Contextual +3" in breaks[0].note
    # the next break of the view reuses the answer: now it is a cached one
    assert {r.behavioral for r in breaks[1].rows} == {("cache", "view_reuse")}
    assert {r.contextual for r in breaks[1].rows} == {("cache", "fresh_cache")}


def test_platforms_get_the_cohorts_activated_for_them(breaks: list[Break]) -> None:
    gam, fw, aw = (set(r.written.removeprefix("permutive=").split(",")) for r in breaks[0].rows)
    assert "10010" in gam - fw and "10006" in fw - gam
    assert aw < gam | fw


def test_unconsented_viewer_gets_contextual_only_and_no_ccs_call(
    demo_output: str, breaks: list[Break]
) -> None:
    rows = [r for b in breaks for r in b.rows]
    denied = [r for r in rows if r.consent == "denied"]
    assert len(denied) == 6
    assert all(r.behavioral == ("skipped", "consent_denied") for r in denied)
    assert all(r.written == "permutive=20002" for r in denied)  # the news context only
    assert all(r.behavioral[0] != "skipped" for r in rows if r.consent == "allowed")
    assert "CCS calls for this viewer: 0" in demo_output
    assert "the unconsented viewer's: 0" in demo_output


def test_a_slow_api_falls_back_and_cached_answers_gain_cohorts(breaks: list[Break]) -> None:
    slow, after = breaks[2], breaks[3]
    assert {r.behavioral for r in slow.rows} == {("cache", "cache_fallback_timeout")}
    # The fallback is the completion event's answer: it carries the cohort the completion
    # earned (10003); the late answer to the slow play event brings 10002 to the mid-roll.
    assert any(line.startswith("gained 10003 ") and "completion" in line for line in slow.after)
    assert any(line.startswith("gained 10002 ") and "late answer" in line for line in after.after)
    assert "10002" not in slow.rows[0].written and "10002" in after.rows[0].written


def test_demo_summary_reads_the_metrics_registry(demo_output: str) -> None:
    summary = demo_output.split("== Metrics", 1)[1]
    assert re.search(r"^\s+ccs\s+4\s+4\s+0\s", summary, re.M)  # 2 play + 2 completion events
    # 3 content URLs, each asked with each platform's properties
    assert re.search(r"^\s+contextual\s+9\s+9\s+0\s", summary, re.M)
    assert "denied (tcf_purpose_denied)" in summary and "allowed (tcf_granted)" in summary
    assert "late answer" in demo_output and "(late: 1)" in demo_output


def test_piped_output_has_no_colour_codes(demo_output: str) -> None:
    assert "\x1b[" not in demo_output


def test_no_machine_output(demo_output: str) -> None:
    assert not re.search(r"^\s*[{\[]", demo_output, re.M)
    assert '"source"' not in demo_output and '"keyvalues"' not in demo_output


# --- --verbose -----------------------------------------------------------------------------


def test_verbose_shows_the_full_urls_and_they_carry_exactly_what_was_written(
    verbose_output: str,
) -> None:
    lines = verbose_output.splitlines()
    rows = [r for b in parse_breaks(verbose_output) for r in b.rows]
    enriched = [
        line.split(" ", 1)[1] for line in (x.strip() for x in lines) if line.startswith("enriched ")
    ]
    original = [line for line in (x.strip() for x in lines) if line.startswith("original ")]
    assert len(enriched) == len(original) == len(rows) == 18
    for row, url in zip(rows, enriched, strict=True):
        cohorts = row.written.removeprefix("permutive=").split(",")
        if row.platform == "GAM":
            assert "/gampad/ads?" in url
            cust = parse_qs(unquote(parse_qs(urlsplit(url).query)["cust_params"][0]))
            assert cust["permutive"] == [",".join(cohorts)]
        elif row.platform == "FreeWheel":
            sections = url.split("?", 1)[1].split(";")
            kv = [p.split("=", 1) for p in sections[1].split("&")]
            assert [v for k, v in kv if k == "permutive"] == cohorts
            assert "permutive=" not in sections[0] + sections[2]
        else:
            assert "/vast/4.0/request/" in url
            assert parse_qs(urlsplit(url).query)["aw_0_1st.permutive"] == [",".join(cohorts)]


def test_verbose_keeps_the_rows(verbose_output: str, demo_output: str) -> None:
    assert len(parse_breaks(verbose_output)) == len(parse_breaks(demo_output)) == 6
    assert AD_SERVER_URL.search(verbose_output)


def test_budget_flag_takes_a_positive_integer(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["demo", "--budget-ms", "250"]).budget_ms == 250
    for bad in ("0", "-5", "x"):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(["demo", "--budget-ms", bad])
        assert e.value.code == 2
        assert f"--budget-ms: expected a positive integer, got {bad!r}" in capsys.readouterr().err


# --- in process ----------------------------------------------------------------------------


async def test_platform_flag_restricts_the_ad_servers() -> None:
    out = io.StringIO()
    assert await Demo(out, platforms=("freewheel",), budget_ms=300).run() == 0
    text = out.getvalue()
    rows = [r for b in parse_breaks(text) for r in b.rows]
    assert len(rows) == 6 and {r.platform for r in rows} == {"FreeWheel"}
    assert "/gampad/ads" not in text and "/vast/4.0/" not in text
    assert {r.behavioral[0] for r in rows} >= {"live", "cache", "skipped"}


async def test_colour_keeps_the_width_and_highlights_the_inserted_key_values() -> None:
    out = io.StringIO()
    await Demo(out, platforms=("gam",), color=True).run()
    text = out.getvalue()
    assert "\x1b[" in text
    assert all(visible_len(line) <= WIDTH for line in text.splitlines())
    out = io.StringIO()
    await Demo(out, platforms=("gam",), color=True, verbose=True).run()
    assert "\x1b[32;1m%26permutive%3D" in out.getvalue()


# --- the printing helpers ------------------------------------------------------------------


def test_changed_param_shows_the_change_within_the_width() -> None:
    before = "https://h/gampad/ads?iu=/1&cust_params=section%3Dsport&sz=1"
    after = "https://h/gampad/ads?iu=/1&cust_params=section%3Dsport%26permutive%3D1%2C2&sz=1"
    assert changed_param(before, after, 80) == "cust_params=section%3Dsport%26permutive%3D1%2C2"
    short = changed_param(before, after, 31)
    assert short == "cust_params=...permutive%3D1..."
    assert changed_param(before, before, 80) == ""
    fw = changed_param("https://h/ad/g/1?a=1;s=x;c=1", "https://h/ad/g/1?a=1;s=x&k=1&k=2;c=1", 80)
    assert fw == "k=1&k=2"


def test_written_is_what_the_keyvalues_say() -> None:
    assert written({"permutive": ["1", "2"], "prmtvctx": ["3"]}) == "permutive=1,2 prmtvctx=3"
    assert written({}) == "nothing written"


def test_clip_cuts_to_the_width_before_a_separator() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 5) == "ab..."
    assert clip("k=10000&k=10001&k=10002", 20, at="&") == "k=10000&k=10001..."
    assert len(clip("x" * 50, 10)) == 10


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
    assert 0 <= c.lead <= len(c.param_after)
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
    assert c.param_after[: c.lead] == "cust_params=a%3Db"
    added = UrlChange("https://h/v?a=1", "https://h/v?a=1&aw_0_1st.permutive=1,2")
    assert (added.param_before, added.param_after) == ("", "aw_0_1st.permutive=1,2")
    assert added.lead == 0


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
