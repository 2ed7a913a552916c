"""`cohortkv enrich` as a user runs it: a real process, the built-in sandbox, JSON out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.helpers.cli import clean_env, cohortkv
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.samples import GAM_SAMPLE


def test_enrich_json_on_the_builtin_sandbox() -> None:
    p = cohortkv(
        "enrich", GAM_SAMPLE, "--json", "--sandbox", "--alias", "tifa:demo-device-1",
        "--consent", "granted",
        "--content-url", "https://example.com/sport/football/match-1",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) >= {"url", "keyvalues", "behavioral", "contextual", "consent", "elapsed_ms"}
    assert doc["consent"] == {"allowed": True, "reason": "override_granted"}
    assert doc["behavioral"]["source"] == "live"
    assert doc["contextual"]["source"] == "live" and doc["contextual"]["cohorts"]
    assert doc["url"].startswith(GAM_SAMPLE.split("cust_params=")[0])
    assert "cust_params=sample_ct%3Dlinear%26permutive%3D" in doc["url"]
    assert "sandbox" in p.stderr  # it says it runs on the sandbox


def test_enrich_auto_consent_from_the_url_denies_without_signals() -> None:
    p = cohortkv("enrich", GAM_SAMPLE + "&gdpr=1", "--json", "--sandbox", "--alias", "tifa:x",
                 "--content-url", "https://example.com/sport/x")  # fmt: skip
    doc = json.loads(p.stdout)
    assert doc["consent"]["allowed"] is False
    assert doc["behavioral"] == {"source": "skipped", "cohorts": [], "reason": "consent_denied"}


def test_without_a_key_it_refuses_and_says_how_to_use_the_sandbox() -> None:
    p = cohortkv("enrich", GAM_SAMPLE, "--json")
    assert p.returncode == 2 and p.stdout == ""
    assert "COHORTKV_API_KEY" in p.stderr and "--sandbox" in p.stderr


async def test_enrich_split_against_given_urls() -> None:
    async with FakePermutive() as fake:
        env = clean_env(COHORTKV_API_KEY=API_KEY)
        p = await _in_thread(
            "enrich", GAM_SAMPLE, "--json", "--split", "--user-id",
            "2008c38f-dece-4570-976d-87593ed001c3", "--consent", "granted", "--content-url",
            "https://example.com/a", "--ccs-url", fake.url, "--ctx-url", fake.url, env=env,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert fake.calls["ccs"] == 1 and fake.calls["contextual"] == 1
    doc = json.loads(p.stdout)
    assert doc["keyvalues"] == {"permutive": ["12345", "67890"], "prmtvctx": ["99999"]}
    assert API_KEY not in p.stdout + p.stderr


async def _in_thread(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(cohortkv, *args, env=env)


def test_person_mistakes_get_one_line_naming_the_flag() -> None:
    p = cohortkv("enrich", GAM_SAMPLE, "--user-id", "nope")
    assert p.returncode == 2 and "--user-id" in p.stderr and "UUIDv4" in p.stderr
    assert "Traceback" not in p.stderr
    p = cohortkv("enrich", GAM_SAMPLE, "--budget-ms", "0")
    assert p.returncode == 2 and "--budget-ms" in p.stderr
    p = cohortkv("enrich", GAM_SAMPLE, env=clean_env(COHORTKV_KEYS__MODE="both"))
    assert p.returncode == 2 and "keys.mode" in p.stderr and "Traceback" not in p.stderr
    p = cohortkv("enrich", GAM_SAMPLE, "--alias", "a:1:0", "--alias", "b:2")
    assert p.returncode == 2 and "PRIORITY" in p.stderr


def test_unrecognised_input_fails_with_the_reason_and_the_supported_shapes() -> None:
    for url in ("https://example.com/page?a=1", "not a url at all"):
        p = cohortkv("enrich", url, "--json", "--sandbox")
        assert p.returncode == 3, p.stderr
        assert p.stdout == ""
        assert "no_adapter" in p.stderr and "it was not enriched" in p.stderr
        assert "/gampad/ads" in p.stderr and "freewheel" in p.stderr and "adswizz" in p.stderr
    p = cohortkv("enrich", "https://x.example/ads?a=1", "--platform", "gam", "--sandbox")
    assert p.returncode == 3 and "(path)" in p.stderr


BID = (
    '{"id": "cli-1",\n "imp": [{"id": "1", "bidfloor": 1.00}],\n'
    ' "site": {"page": "https://example.com/sport/football/pl-highlights-week-20"},\n'
    ' "regs": {"gdpr": 0}}'
)


def test_enrich_a_bid_request_body_from_a_file_or_stdin(tmp_path: Path) -> None:
    """`--data @file` (or `-`) and `--header`: the enriched body is printed, every byte outside
    the members written as it was; the method is POST without --method."""
    (tmp_path / "bid.json").write_text(BID)
    (tmp_path / "c.toml").write_text('[adapters.openrtb]\nactivation_platforms = ["dfp"]\n')
    auction = "https://pbs.example.com/openrtb2/auction"
    common = ("--sandbox", "--config", str(tmp_path / "c.toml"))
    p = cohortkv("enrich", auction, "--data", f"@{tmp_path / 'bid.json'}",
                 "--header", "Content-Type: application/json", *common)  # fmt: skip
    assert p.returncode == 0, p.stderr
    head, _, added = p.stdout.rstrip("\n").rpartition(',"user":')
    assert head == BID[:-1]  # the body up to its closing brace, byte for byte
    assert json.loads('{"user":' + added)["user"]["ext"]["data"]["permutive"]
    piped = cohortkv("enrich", auction, "--data", "-", "--json", *common, stdin=BID)
    doc = json.loads(piped.stdout)
    assert doc["method"] == "POST" and doc["platform"] == "openrtb"
    assert doc["body"]["user"]["data"][0]["name"] == "permutive"
    assert doc["keyvalues"]["permutive"] == doc["body"]["user"]["ext"]["data"]["permutive"]


def test_enrich_request_flag_mistakes_name_the_flag(tmp_path: Path) -> None:
    auction = "https://pbs.example.com/openrtb2/auction"
    p = cohortkv("enrich", auction, "--data", f"@{tmp_path / 'missing.json'}", "--sandbox")
    assert p.returncode == 2 and "--data" in p.stderr and "missing.json" in p.stderr
    p = cohortkv("enrich", auction, "--data", "{}", "--header", "no colon", "--sandbox")
    assert p.returncode == 2 and "--header" in p.stderr and "NAME:VALUE" in p.stderr
    p = cohortkv("enrich", auction, "--data", "{}", "--method", "GET", "--sandbox")
    assert p.returncode == 2 and "--method" in p.stderr
    assert "Traceback" not in p.stderr


def test_enrich_reads_a_body_no_longer_than_the_sidecar_would(tmp_path: Path) -> None:
    """An endless file or pipe is refused once it passes `serve.max_body_bytes`: one line,
    exit 2, nothing sent."""
    auction = "https://pbs.example.com/openrtb2/auction"
    small = clean_env(COHORTKV_SERVE__MAX_BODY_BYTES="64")
    expected = (
        "--data: expected a body of at most 64 bytes (serve.max_body_bytes), got a longer one"
    )
    for data, stdin in (("@/dev/zero", None), ("-", "x" * 65), ("@-", "x" * 65), ("x" * 65, None)):
        p = cohortkv("enrich", auction, "--data", data, "--sandbox", env=small, stdin=stdin)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().splitlines() == [f"cohortkv enrich: {expected}"]
    default = cohortkv("enrich", auction, "--data", "@/dev/zero", "--sandbox")
    assert default.returncode == 2 and "at most 1048576 bytes" in default.stderr
    (tmp_path / "bid.json").write_text(BID)
    exact = clean_env(COHORTKV_SERVE__MAX_BODY_BYTES=str(len(BID)))
    fits = cohortkv(
        "enrich", auction, "--data", f"@{tmp_path / 'bid.json'}", "--sandbox", env=exact
    )
    assert fits.returncode == 0, fits.stderr
