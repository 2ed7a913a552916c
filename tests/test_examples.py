"""Every file in examples/ runs as a user runs it, against the built-in sandbox (and a loopback
ad server where it sends ad requests), so that the examples never rot."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.config import load_config
from tests.helpers.fake_adserver import FakeAdServer, running

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


OFFLINE = ROOT / "tests" / "helpers" / "offline"
"""Put first on PYTHONPATH: its `sitecustomize` lets the process reach loopback only."""


def offline_env(**env: str) -> dict[str, str]:
    """The environment an example runs in: no COHORTKV_* of the caller's, the sandbox, and no
    network but loopback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
    path = os.pathsep.join(p for p in (str(OFFLINE), clean.get("PYTHONPATH", "")) if p)
    return {**clean, "PYTHONPATH": path, "COHORTKV_SANDBOX": "true", **env}


def run_example(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        env=offline_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


CHECKED = {
    "gam_library.py",
    "openrtb_body.py",
    "aiohttp_middleware.py",
    "httpx_transport.py",
    "completion_events.py",
    "mediatailor.toml",
}


def test_every_example_is_run_here() -> None:
    shipped = {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".toml")}
    assert shipped == CHECKED


def test_examples_run_with_no_network_but_loopback() -> None:
    """The guard every example runs under refuses the network: an example passing here needs
    none (a name lookup or a connection anywhere but loopback fails it)."""
    probe = (
        "import socket, urllib.request\n"
        "for f in (lambda: socket.create_connection(('192.0.2.1', 80), timeout=1),\n"
        "          lambda: socket.getaddrinfo('api.permutive.app', 443),\n"
        "          lambda: urllib.request.urlopen('https://api.permutive.com/', timeout=1)):\n"
        "    try:\n"
        "        f()\n"
        "    except OSError as e:\n"
        "        print('refused' if 'offline' in str(e) else f'other: {e}')\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "socket.create_connection(s.getsockname(), timeout=1).close(); print('loopback ok')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["refused", "refused", "refused", "loopback", "ok"]


def test_gam_library() -> None:
    p = run_example("gam_library.py")
    assert p.returncode == 0, p.stderr
    url, kv, behavioral, contextual = p.stdout.splitlines()
    assert "cust_params=sample_ct%3Dlinear%26permutive%3D" in url
    assert kv.startswith("key-values: {'permutive': [")
    assert behavioral == "behavioral: live live" and contextual == "contextual: live live"


def test_openrtb_body() -> None:
    p = run_example("openrtb_body.py")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout.split("\nkey-values:")[0])
    [entry] = doc["user"]["data"]
    assert entry["name"] == "permutive" and entry["segment"]
    assert doc["app"]["bundle"] == "com.example.ctv"  # every other member kept


@pytest.mark.parametrize("name", ["aiohttp_middleware.py", "httpx_transport.py"])
async def test_client_hooks_send_the_enriched_ad_request(name: str) -> None:
    async with FakeAdServer() as ads:
        p = await asyncio.to_thread(run_example, name, AD_SERVER=ads.url)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("ad server answered 200")
        [received] = ads.requests
    assert received.target.startswith(
        "/gampad/ads?iu=/123/ctv&output=vast&cust_params=permutive%3D"
    )


def test_completion_events() -> None:
    p = run_example("completion_events.py")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "completion events sent: 1"


async def test_mediatailor_serve_config() -> None:
    """The config as `cohortkv serve --config` reads it, with the ad servers pointed at a
    loopback one; a MediaTailor ad decision request through the proxy gets its cohorts."""
    async with FakeAdServer() as ads:
        env = {
            "COHORTKV_SANDBOX": "true",
            "COHORTKV_SERVE__UPSTREAMS__GAM": ads.url,
            "COHORTKV_SERVE__UPSTREAMS__FREEWHEEL": ads.url,
        }
        config = load_config(EXAMPLES / "mediatailor.toml", env)
        assert config.serve.access_log and config.log.json
        template = json.loads(
            (ROOT / "deploy/mediatailor/gam-playback-configuration.json").read_text()
        )["AdDecisionServerUrl"]
        filled = {
            "[avail.random]": "123",
            "[session.avail_duration_ms]": "30000",
            "[session.id]": "mt-session-1",
            "[player_params.content_url]": "https%3A%2F%2Fexample.com%2Fsport%2Ffootball%2Fmatch-1",
            "[player_params.gdpr]": "0",
        }
        path = template.split("https://cohortkv.example.com", 1)[1]
        for variable, value in filled.items():
            path = path.replace(variable, value)
        for empty in ("vid", "cmsid", "rdid", "idtype", "is_lat", "gdpr_consent", "us_privacy",
                      "gpp", "gpp_sid", "cust_params", "permutive_id"):  # fmt: skip
            path = path.replace(f"[player_params.{empty}]", "")
        async with running(config) as side:
            resp = await side.client.get(path)
            assert resp.status == 200
    forwarded = ads.last.target
    assert forwarded.startswith("/gampad/ads?iu=/NETWORK_CODE/ctv/video")
    assert "cust_params=permutive%3D" in forwarded and "cohortkv_sid" not in forwarded
