"""`cohortkv verify`: six PASS on the sandbox; FAIL on the right step against broken APIs."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from plugin.commands import cli, verify
from plugin.sandbox import Sandbox, default_workspace, start_sandbox
from plugin.sandbox.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
STEP = re.compile(r"^\s+([1-6])\s+(PASS|FAIL)\s+(.*)$", re.M)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}


def verdicts(out: str) -> dict[int, str]:
    return {int(n): v for n, v, _ in STEP.findall(out)}


def evidence(out: str, step: int) -> str:
    """The lines printed under one step."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^\s+{step}\s+(PASS|FAIL)", line))
    body = []
    for line in lines[start + 1 :]:
        if STEP.match(line) or not line.strip():
            break
        body.append(line.strip())
    return "\n".join(body)


async def run_verify(
    capsys: pytest.CaptureFixture[str], *argv: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    for name in list(os.environ):
        if name.startswith("COHORTKV_"):
            monkeypatch.delenv(name)
    parser = argparse.ArgumentParser()
    verify.configure(parser)
    args = parser.parse_args(argv)
    code: int = await args.run(args)
    return code, capsys.readouterr().out


def test_verify_on_the_builtin_sandbox_passes_all_six_steps() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "plugin", "verify"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc.stdout) == dict.fromkeys(range(1, 7), "PASS")
    assert "6 of 6 steps passed" in proc.stdout
    # The evidence is real: the sandbox's verification cohort and both signals in cust_params.
    assert "10000 (Verification: any Videoview or AudioPlay)" in evidence(proc.stdout, 2)
    assert "cust_params=" in evidence(proc.stdout, 5)
    assert "CCS calls +0" in evidence(proc.stdout, 6)
    assert "\x1b[" not in proc.stdout  # not a terminal: no colour codes


@pytest.mark.parametrize("platform", ["freewheel", "adswizz"])
async def test_each_platform_passes_on_the_sandbox(
    platform: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = await run_verify(capsys, "--platform", platform, monkeypatch=monkeypatch)
    assert code == 0, out
    assert verdicts(out) == dict.fromkeys(range(1, 7), "PASS")
    merged = evidence(out, 5)
    wanted = "aw_0_1st.permutive=" if platform == "adswizz" else "permutive="
    assert f"URL gained {wanted}" in merged


@pytest.mark.parametrize(
    ("platform", "gained"), [("query", "URL gained"), ("openrtb", "POST body")]
)
async def test_the_registry_platforms_pass_once_they_have_activation_names(
    platform: str,
    gained: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    code, out = await run_verify(capsys, "--platform", platform, monkeypatch=monkeypatch)
    assert code != 0 and f"[adapters.{platform}] activation_platforms" in out
    # a new user is told which activation names the answers carry, and what to configure
    names = "freewheel, dfp, adswizz_keyvalue"
    assert f"activation names in the answer: {names}; {platform} reads none" in evidence(out, 3)
    assert 'e.g. ["freewheel", "dfp", "adswizz_keyvalue"]' in evidence(out, 3)
    assert f"{platform} reads none of them" in evidence(out, 4)
    config.write_text(f'[adapters.{platform}]\nactivation_platforms = ["dfp"]\n')
    code, out = await run_verify(
        capsys, "--platform", platform, "--config", str(config), monkeypatch=monkeypatch
    )
    assert code == 0, out
    assert verdicts(out) == dict.fromkeys(range(1, 7), "PASS")
    assert gained in evidence(out, 5)
    assert f"activation names in the answer: {names}; {platform} reads dfp" in evidence(out, 3)


# --- broken APIs ---------------------------------------------------------------------------


class EmptyApi:
    """Answers every call with 200 and nothing in it: no cohorts, no activations."""

    def __init__(self) -> None:
        self.server: TestServer | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/ccs/v1/segmentation", self._ccs)
        app.router.add_post("/ctx/v1/segment", self._ctx)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()

    async def _ccs(self, request: web.Request) -> web.Response:
        return web.json_response({"user_id": "2008c38f-dece-4570-976d-87593ed001c3", "cohorts": []})

    async def _ctx(self, request: web.Request) -> web.Response:
        return web.json_response({"cohorts": [], "activations": {}})


async def test_api_without_cohorts_or_activations_fails_steps_2_to_5(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EmptyApi() as url:
        code, out = await run_verify(
            capsys, "--ccs-url", url, "--ctx-url", url, "--api-key", "k", monkeypatch=monkeypatch
        )
    assert code == 1
    got = verdicts(out)
    assert got[1] == "PASS"  # a constant user_id is a stable one
    assert got[2] == got[3] == got[4] == got[5] == "FAIL"
    # Gating itself held (no CCS call) but no contextual cohorts reached the ad request.
    assert got[6] == "FAIL"
    assert "no activations" in evidence(out, 3)
    assert "CCS calls +0" in evidence(out, 6)
    assert "no contextual cohorts reached the ad request" in evidence(out, 6)
    assert "1 of 6 steps passed" in out


@pytest.fixture
async def sandbox_without_test_cohort() -> AsyncIterator[Sandbox]:
    ws = default_workspace()
    ws = msgspec.structs.replace(ws, cohorts=[c for c in ws.cohorts if c.code != "10000"])
    sandbox = await start_sandbox(workspace=ws)
    yield sandbox
    await sandbox.close()


async def test_workspace_lacking_the_test_cohort_fails_step_2_only(
    sandbox_without_test_cohort: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = sandbox_without_test_cohort.base_url
    code, out = await run_verify(
        capsys,
        *("--ccs-url", url, "--ctx-url", url, "--api-key", "sandbox"),
        *("--test-cohort", "10000", "--platform", "freewheel"),
        monkeypatch=monkeypatch,
    )
    assert code == 1
    assert verdicts(out) == {1: "PASS", 2: "FAIL", 3: "PASS", 4: "PASS", 5: "PASS", 6: "PASS"}
    why = evidence(out, 2)
    assert "the test cohort 10000 is missing" in why
    assert "passes synchronous validation" in why  # the event was fine: the rule is not


async def test_remote_api_without_test_cohort_flag_accepts_any_cohort(
    sandbox_without_test_cohort: Sandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = sandbox_without_test_cohort.base_url
    code, out = await run_verify(
        capsys,
        *("--ccs-url", url, "--ctx-url", url, "--api-key", "sandbox", "--platform", "freewheel"),
        monkeypatch=monkeypatch,
    )
    assert code == 0, out
    assert "any cohort counts" in evidence(out, 2)


async def test_schema_mismatch_is_explained_by_synchronous_validation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = default_workspace()
    events: dict[str, Any] = {
        **ws.events,
        "Videoview": {**ws.events["Videoview"], "title": "number"},
    }
    sandbox = await start_sandbox(workspace=msgspec.structs.replace(ws, events=events))
    try:
        url = sandbox.base_url
        code, out = await run_verify(
            capsys,
            *("--ccs-url", url, "--ctx-url", url, "--api-key", "sandbox", "--test-cohort", "10000"),
            monkeypatch=monkeypatch,
        )
    finally:
        await sandbox.close()
    assert code == 1
    assert verdicts(out)[2] == "FAIL"
    why = evidence(out, 2)
    assert "synchronous-validation=true" in why
    assert "HTTP 400" in why and "title" in why


async def test_wrong_key_fails_every_step_and_is_never_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "not-the-key-5ecret"
    sandbox = await start_sandbox()
    try:
        url = sandbox.base_url
        code, out = await run_verify(
            capsys, "--ccs-url", url, "--ctx-url", url, "--api-key", secret, monkeypatch=monkeypatch
        )
    finally:
        await sandbox.close()
    assert code == 1
    assert verdicts(out) == dict.fromkeys(range(1, 7), "FAIL")
    assert "HTTP 401" in evidence(out, 1)
    assert secret not in out + capsys.readouterr().err


def _workspace_codes(ws: Workspace) -> set[str]:
    return {c.code for c in ws.cohorts}


def test_default_test_cohort_is_the_shipped_verification_cohort() -> None:
    ws = default_workspace()
    code = verify.verification_cohort(ws)
    assert code is not None and code in _workspace_codes(ws)
    cohort = next(c for c in ws.cohorts if c.code == code)
    # any play event of any adapter: every platform's verify run can pass
    assert cohort.rule.any_ is not None
    assert {(r.event, bool(r.where)) for r in cohort.rule.any_} == {
        ("Videoview", False),
        ("AudioPlay", False),
    }


def test_api_url_without_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COHORTKV_API_KEY", raising=False)
    code = cli.main(["verify", "--ccs-url", "http://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and "Traceback" not in err
