"""What a person sees when `cohortkv` cannot do what they asked: an exit status that tells the
truth (4: a Permutive API failed) and one line saying why and what to do, never a traceback
for a situation of theirs (a missing extra, a bad workspace file, a closed pipe)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.commands.cli import _run
from tests.helpers.cli import ROOT, clean_env, cohortkv
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.samples import GAM_SAMPLE

CONTENT = "https://example.com/sport/football/match-1"
GRANTED = ("--alias", "tifa:exit-test", "--consent", "granted", "--content-url", CONTENT)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_wrong_api_key_exits_4_naming_the_api_and_the_fix(fake: FakePermutive) -> None:
    p = await asyncio.to_thread(
        cohortkv, "enrich", GAM_SAMPLE, *GRANTED, "--api-key", "not-the-key-123",
        "--ccs-url", fake.url, "--ctx-url", fake.url,
    )  # fmt: skip
    assert p.returncode == 4, p.stderr
    assert p.stdout.strip() == GAM_SAMPLE  # the ad request still goes out, unchanged
    said = [line for line in p.stderr.splitlines() if line.startswith("cohortkv enrich:")]
    assert said == [
        "cohortkv enrich: the CCS API answered HTTP 401; fix: give the workspace's API key"
        " (--api-key, api_key or COHORTKV_API_KEY)",
        "cohortkv enrich: the Contextual API answered HTTP 401; fix: give the workspace's API"
        " key (--api-key, api_key or COHORTKV_API_KEY)",
    ]
    assert "not-the-key-123" not in p.stdout + p.stderr
    assert "Traceback" not in p.stderr


def test_an_unreachable_api_exits_4() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    p = cohortkv("enrich", GAM_SAMPLE, *GRANTED, "--json", "--api-key", API_KEY,
                 "--ccs-url", dead, "--ctx-url", dead)  # fmt: skip
    assert p.returncode == 4, p.stderr
    assert f"cannot reach the CCS API at {dead}" in p.stderr
    assert "fix: check --ccs-url (ccs_url)" in p.stderr
    assert '"behavioral":{"source":"none"' in p.stdout.replace(" ", "")


async def test_an_api_answering_5xx_exits_4_and_a_healthy_one_0(fake: FakePermutive) -> None:
    base = ("enrich", GAM_SAMPLE, *GRANTED, "--ccs-url", fake.url, "--ctx-url", fake.url)
    env = clean_env(COHORTKV_API_KEY=API_KEY)
    ok = await asyncio.to_thread(cohortkv, *base, env=env)
    assert ok.returncode == 0, ok.stderr
    fake.status["contextual"] = 503
    p = await asyncio.to_thread(cohortkv, *base, env=env)
    assert p.returncode == 4, p.stderr
    assert "the Contextual API answered HTTP 503" in p.stderr
    assert "CCS API" not in p.stderr.split("# platform")[-1]  # only the API that failed


async def test_an_api_slower_than_the_budget_exits_4(fake: FakePermutive) -> None:
    fake.delay["ccs"] = 1.0
    p = await asyncio.to_thread(
        cohortkv, "enrich", GAM_SAMPLE, *GRANTED, "--budget-ms", "50",
        "--ccs-url", fake.url, "--ctx-url", fake.url, env=clean_env(COHORTKV_API_KEY=API_KEY),
    )  # fmt: skip
    assert p.returncode == 4, p.stderr
    assert "the CCS API did not answer within the budget (50 ms); fix: raise --budget-ms" in (
        p.stderr
    )


def test_help_documents_every_exit_status() -> None:
    p = cohortkv("--help")
    assert p.returncode == 0
    for status in ("0  done", "2  a usage or configuration mistake", "3  cohortkv enrich: not",
                   "4  cohortkv enrich: a Permutive API failed"):  # fmt: skip
        assert status in p.stdout


# -- no tracebacks for a person's situation ------------------------------------------------------


def test_a_redis_url_without_the_redis_extra_says_what_to_install() -> None:
    p = cohortkv(
        "enrich", GAM_SAMPLE, "--sandbox",
        env=clean_env(COHORTKV_CACHE__REDIS_URL="redis://127.0.0.1:6379/0"),
        prelude="import sys; sys.modules['redis'] = None  # as if not installed",
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "cohortkv enrich: config: cache.redis_url: needs the Redis client, which is not"
        " installed: pip install 'cohortkv[redis]'"
    )
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "cannot read"),
        ("cohorts = [", "invalid TOML"),
        ('[[cohorts]]\ncode = 5\nname = "x"', "cohorts"),
    ],
)
def test_a_bad_or_missing_workspace_file_is_one_line(
    tmp_path: Path, content: str | None, said: str
) -> None:
    path = tmp_path / "workspace.toml"
    if content is not None:
        path.write_text(content)
    p = cohortkv("sandbox", "--port", "0", "--workspace", str(path))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cohortkv sandbox: ") and said in lines[0]


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    shell = f"{sys.executable} -m plugin demo --no-color | head -1"
    p = subprocess.run(["sh", "-c", shell], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("cohortkv demo:"), p.stdout
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


async def _bug() -> int:
    raise RuntimeError("a bug of ours")


@pytest.mark.parametrize("uvloop_installed", [True, False])
def test_a_traceback_of_ours_does_not_begin_with_uvloop(
    monkeypatch: pytest.MonkeyPatch, uvloop_installed: bool
) -> None:
    if not uvloop_installed:
        monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(RuntimeError) as e:
        _run(_bug())
    assert e.value.__context__ is None and e.value.__cause__ is None
