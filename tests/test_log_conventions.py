"""Logs as an operator expects them: `[log] level` / `[log] json` (and `--log-level`, `-v`,
before or after the command), every line JSON when asked, start and shutdown lines included,
and ISO 8601 UTC time stamps in the application log and the access log alike."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from plugin.commands.cli import build_parser, log_level
from plugin.config import Config, load_config
from tests.helpers.cli import ROOT, clean_env, cohortkv
from tests.helpers.samples import GAM_SAMPLE
from tests.helpers.waiting import until

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SANDBOX_WARNING = "sandbox = true: serving the built-in sandbox's cohorts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def serve_lines(env: dict[str, str], *args: str) -> tuple[list[str], list[str]]:
    """`cohortkv serve ARGS` until /healthz answers, one more GET /healthz, SIGTERM: its stderr
    and stdout lines."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin", "serve", "--port", str(port), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def healthy() -> bool:
        assert proc.poll() is None, "serve exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        asyncio.run(until(healthy, timeout_s=60, what="serve answers /healthz"))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return err.splitlines(), out.splitlines()


def test_json_on_every_line_is_json_start_and_shutdown_included() -> None:
    err, out = serve_lines(clean_env(COHORTKV_LOG__JSON="true"), "--sandbox", "--access-log")
    docs = [json.loads(line) for line in err]  # every stderr line parses
    messages = [d["msg"] for d in docs]
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages), messages
    assert any(m.startswith("shutting down") for m in messages), messages
    assert all(ISO_UTC.match(d["ts"]) for d in docs), docs
    access = [json.loads(line) for line in out]
    assert {a["path"] for a in access} == {"/healthz"}
    assert ISO_UTC.match(access[0]["ts"]), access[0]


def test_plain_lines_carry_the_same_iso_utc_time_stamp() -> None:
    err, _ = serve_lines(clean_env(), "--sandbox")
    listening = [line for line in err if "listening on http://" in line]
    assert len(listening) == 1
    stamp, level, rest = listening[0].split(" ", 2)
    assert ISO_UTC.match(stamp) and level == "INFO" and rest.startswith("cohortkv.serve: ")


def test_log_level_from_the_file_hides_lower_lines(tmp_path: Path) -> None:
    config = tmp_path / "cohortkv.toml"
    config.write_text('sandbox = true\n[log]\nlevel = "warning"\njson = true\n')
    err, _ = serve_lines(clean_env(), "--config", str(config))
    assert not [line for line in err if "listening on" in line]
    assert all(json.loads(line)["level"] in ("warning", "error") for line in err), err


@pytest.mark.parametrize(
    "args",
    [
        ("--log-level", "error", "enrich", GAM_SAMPLE, "--sandbox"),
        ("enrich", GAM_SAMPLE, "--sandbox", "--log-level", "ERROR"),
    ],
)
def test_log_level_before_or_after_the_command(args: tuple[str, ...]) -> None:
    p = cohortkv(*args)
    assert p.returncode == 0, p.stderr
    assert SANDBOX_WARNING not in p.stderr
    assert SANDBOX_WARNING in cohortkv("enrich", GAM_SAMPLE, "--sandbox").stderr


def test_the_environment_sets_the_level() -> None:
    p = cohortkv("enrich", GAM_SAMPLE, "--sandbox", env=clean_env(COHORTKV_LOG__LEVEL="error"))
    assert p.returncode == 0 and SANDBOX_WARNING not in p.stderr
    p = cohortkv("enrich", GAM_SAMPLE, "--sandbox", env=clean_env(COHORTKV_LOG__LEVEL="loud"))
    assert p.returncode == 2
    assert "COHORTKV_LOG__LEVEL: log.level: expected one of 'debug', 'info'" in p.stderr


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["-v", "enrich", GAM_SAMPLE], "DEBUG"),
        (["enrich", GAM_SAMPLE, "-v"], "DEBUG"),
        (["enrich", GAM_SAMPLE], "INFO"),
        (["--log-level", "warning", "serve"], "WARNING"),
        (["serve", "--log-level", "debug"], "DEBUG"),
        (["-v", "demo"], "DEBUG"),
        (["demo", "-v"], "INFO"),  # demo's own -v: the full URLs
    ],
)
def test_verbose_and_log_level_flags_anywhere(argv: list[str], level: str) -> None:
    import logging

    args = build_parser().parse_args(argv)
    assert logging.getLevelName(log_level(args, Config())) == level


def test_the_old_log_json_still_works_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "cohortkv.toml"
    config.write_text("sandbox = true\nlog_json = true\n")
    p = cohortkv("enrich", GAM_SAMPLE, "--config", str(config))
    assert p.returncode == 0, p.stderr
    docs = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    moved = [d for d in docs if "log_json is deprecated" in d["msg"]]
    assert len(moved) == 1 and "[log] json" in moved[0]["msg"]
    assert load_config(config, {}, warn_unknown_env=False).log.json is True
    with pytest.warns(DeprecationWarning, match=r"\[log\] json"):
        assert Config(log_json=True).log.json is True


def test_with_json_on_a_failure_to_start_is_a_json_line_too() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = cohortkv("serve", "--sandbox", "--port", str(port),
                     env=clean_env(COHORTKV_LOG__JSON="true"))  # fmt: skip
    assert p.returncode == 2, p.stderr
    docs = [json.loads(line) for line in p.stderr.splitlines()]
    assert docs[-1]["level"] == "error" and "--port: cannot listen" in docs[-1]["msg"]
