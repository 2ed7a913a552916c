"""The command line as an operator meets it: `--version`, help with defaults, API URLs checked
before anything starts, a busy port in one line, and what `cohortkv serve` says at start (no
upstreams; COHORTKV_* variables Kubernetes set). Real processes, real sockets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from plugin.commands.cli import build_parser
from plugin.version import __version__
from tests.helpers.cli import ROOT, clean_env, cohortkv
from tests.helpers.samples import KUBERNETES_SERVICE_LINKS

GAM = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&sz=640x480"
SECRET = "s3cr3t-api-key-0123"


def test_version_is_the_package_version() -> None:
    p = cohortkv("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"cohortkv {__version__}"


def test_help_explains_split_merge_and_budget_with_their_defaults() -> None:
    p = cohortkv("enrich", "--help")
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())  # argparse wraps lines
    assert "--split behavioral cohorts under 'permutive', contextual under 'prmtvctx'" in text
    assert "--merge behavioral then contextual cohorts under one key" in text
    assert "(default: keys.mode from the config, merge)" in text
    assert "--budget-ms N deadline for the cohorts, in milliseconds" in text
    assert "(default: budget_ms from the config, 300)" in text
    assert "(default: auto)" in text  # --platform, --consent
    assert "(default: None)" not in text
    p = cohortkv("sandbox", "--help")
    text = " ".join(p.stdout.split())
    assert "(default: 127.0.0.1)" in text and "(default: 8787)" in text
    p = cohortkv("serve", "--help")
    text = " ".join(p.stdout.split())
    assert "(default: serve.port from the config, 8080)" in text


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--ccs-url", "ftp://api.permutive.app", "http:// or https://"),
        ("--ccs-url", "api.permutive.app", "got no scheme"),
        ("--ctx-url", "https://", "without a host"),
        ("--ctx-url", f"https://api.permutive.com/ctx/v1/segment?k={SECRET}", "without a query"),
        ("--ccs-url", f"https://user:{SECRET}@api.permutive.app", "without credentials"),
        ("--ccs-url", "https://api.permutive.app/ccs/v1/segmentation", "/ccs/v1/... is added"),
        ("--ctx-url", "http://127.0.0.1:99999", "out of range"),
    ],
)
def test_bad_api_urls_are_refused_before_anything_starts(
    flag: str, value: str, expected: str
) -> None:
    p = cohortkv("enrich", GAM, "--sandbox", flag, value)
    assert p.returncode == 2
    assert f"argument {flag}: expected the API's base URL" in p.stderr
    assert expected in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and SECRET not in p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("command", ["serve", "verify"])
def test_every_command_with_api_flags_checks_them(command: str) -> None:
    p = cohortkv(command, "--sandbox", "--ccs-url", "mailto:ops@example.com")
    assert p.returncode == 2 and "argument --ccs-url" in p.stderr
    assert "listening" not in p.stderr


def test_base_urls_with_a_path_or_port_are_accepted() -> None:
    args = build_parser().parse_args(
        ["enrich", GAM, "--ccs-url", "http://127.0.0.1:8787", "--ctx-url", "https://gw/permutive/"]
    )
    assert (args.ccs_url, args.ctx_url) == ("http://127.0.0.1:8787", "https://gw/permutive/")


@contextmanager
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_sandbox_on_a_busy_port_says_so_in_one_line() -> None:
    with busy_port() as port:
        p = cohortkv("sandbox", "--port", str(port))
    assert p.returncode == 2
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"cohortkv sandbox: --port: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in lines[0]


def test_sandbox_on_an_unknown_host_blames_the_host() -> None:
    p = cohortkv("sandbox", "--host", "no-such-host.invalid", "--port", "0")
    assert p.returncode == 2
    assert p.stderr.startswith("cohortkv sandbox: --host: cannot resolve 'no-such-host.invalid'")
    assert len(p.stderr.splitlines()) == 1


# -- what `cohortkv serve` says at start ---------------------------------------------------------


def serve_start_lines(env: dict[str, str]) -> list[str]:
    """Runs `cohortkv serve --port 0` until it listens, stops it with SIGTERM, and returns its
    stderr lines. A watchdog kills it if it never gets there (the test then fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "listening on http://" in line:
                break
        else:
            pytest.fail("serve exited before listening:\n" + "\n".join(lines))
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        lines += rest.splitlines()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines)
    return lines


def test_serve_in_kubernetes_warns_once_about_service_links_and_missing_upstreams() -> None:
    env = clean_env(**KUBERNETES_SERVICE_LINKS, COHORTKV_SANDBOX="true", COHORTKV_LOG_JSON="true")
    lines = serve_start_lines(env)
    about_links = [line for line in lines if "COHORTKV_SERVICE_HOST" in line]
    assert len(about_links) == 1, lines
    doc = json.loads(about_links[0])
    assert (doc["level"], doc["logger"]) == ("warning", "cohortkv.config")
    assert all(name in doc["msg"] for name in KUBERNETES_SERVICE_LINKS)
    assert "10.96." not in doc["msg"]
    about_upstreams = [line for line in lines if "no upstreams configured" in line]
    assert len(about_upstreams) == 1, lines
    doc = json.loads(about_upstreams[0])
    assert (doc["level"], doc["logger"]) == ("warning", "cohortkv.serve")
    assert "[serve.upstreams]" in doc["msg"]


def test_serve_with_an_upstream_from_the_environment_starts_quietly() -> None:
    env = clean_env(
        COHORTKV_SANDBOX="true", COHORTKV_SERVE__UPSTREAMS__GAM="https://pubads.g.doubleclick.net"
    )
    lines = serve_start_lines(env)
    assert not [line for line in lines if "no upstreams" in line or "ignoring" in line], lines
