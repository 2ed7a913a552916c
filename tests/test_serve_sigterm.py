"""SIGTERM under load: `python -m plugin serve` as a real process, Permutive faked in this loop.

Every event the sidecar accepted (202) must reach the CCS API before the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.times import recent

ROOT = Path(__file__).resolve().parent.parent
USERS = 20
REQUESTS = 300


def events_for(i: int) -> dict[str, Any]:
    minute = i // USERS
    return {
        "identity": {"alias": {"tag": "idfa", "id": f"DEVICE-{i % USERS}"}},
        "consent": {"granted": True},
        "events": [{"name": "Videoview", "time": recent(minute % 60, s)} for s in range(3)],
    }


async def test_sigterm_under_load_delivers_every_accepted_event(tmp_path: Path) -> None:
    async with FakePermutive() as fake:
        fake.delay["ccs"] = 0.02  # deliveries lag behind, so the queue holds events at SIGTERM
        config = tmp_path / "cohortkv.toml"
        config.write_text(
            f'api_key = "{API_KEY}"\nccs_url = "{fake.url}"\nctx_url = "{fake.url}"\n'
            '[serve]\nhost = "127.0.0.1"\nport = 0\ngrace_s = 15.0\nevents_workers = 4\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plugin", "serve", "--config", str(config),
            cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None and proc.stdout is not None
        err: list[str] = []
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "".join(err)
            err.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        url = f"http://127.0.0.1:{port}/v1/events"

        answered = 0
        terminated = asyncio.Event()

        async def post(session: aiohttp.ClientSession, i: int) -> int:
            nonlocal answered
            try:
                async with session.post(url, data=json.dumps(events_for(i))) as resp:
                    doc = await resp.json() if resp.status == 202 else {}
                    return int(doc.get("accepted", 0))
            except aiohttp.ClientError:
                return 0  # refused once shutdown began: not accepted, nothing owed
            finally:
                answered += 1
                if answered == REQUESTS // 3 and not terminated.is_set():
                    proc.send_signal(signal.SIGTERM)
                    terminated.set()

        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector) as session:
            accepted = sum(await asyncio.gather(*(post(session, i) for i in range(REQUESTS))))
        out, rest = await asyncio.wait_for(proc.communicate(), 30)

        assert proc.returncode == 0, "".join(err) + rest.decode()
        assert terminated.is_set() and accepted >= REQUESTS // 3 * 3
        batches = [call["body"] for call in fake.bodies["ccs"]]
        assert sum(len(b["events"]) for b in batches) == accepted
        for b in batches:
            times = [e["time"] for e in b["events"]]
            assert 1 <= len(times) <= 10 and times == sorted(times)
        print(f"accepted {accepted} of {REQUESTS * 3}; {len(batches)} batches; {err[-1:]}")
        logs = "".join(err) + rest.decode() + out.decode()
        assert API_KEY not in logs


async def test_without_api_key_it_refuses_to_start(tmp_path: Path) -> None:
    for blank in (None, "", "   "):
        env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
        if blank is not None:
            env["COHORTKV_API_KEY"] = blank
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "plugin", "serve", "--port", "0",
            cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2, err
        assert b"api_key" in err and b"COHORTKV_API_KEY" in err
        assert blank is not None or b"--sandbox" in err
        assert b"Traceback" not in err and b"listening" not in err


async def test_with_sandbox_asked_for_it_says_it_serves_the_sandbox(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plugin", "serve", "--sandbox", "--port", "0", "--access-log",
        cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    line = ""
    while "listening" not in line:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line
    assert "against the built-in sandbox (sandbox = true" in line
    port = int(re.search(r":(\d+) ", line).group(1))  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert (await resp.json())["sandbox"] is True
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    (access,) = [json.loads(x) for x in out.decode().splitlines()]
    assert (access["path"], access["status"]) == ("/readyz", 200)
