"""Child processes of a benchmark run: start, wait until listening, talk to, stop.

Every child prints one JSON line when ready and exits when its standard input closes, so an
interrupted run never leaves servers behind. The orchestrator itself stays synchronous: it only
starts processes, waits, and reads their JSON.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class ChildError(RuntimeError):
    pass


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


class Child:
    """A long-lived child (an upstream, a proxy, the sidecar) announcing itself with JSON."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 30.0,
        ready: Any = None,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # closed with the child
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(env),
            cwd=cwd,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.info: dict[str, Any] = ready(self) if ready else self.read_json(ready_timeout_s)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def read_json(self, timeout_s: float) -> dict[str, Any]:
        """The next line of the child's output that is a JSON object."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                line = None
            if line is None and time.monotonic() >= deadline:
                err = self.stderr_tail(force=True)
                self.stop()
                raise ChildError(f"{self.name}: not ready after {timeout_s:.0f} s: {err}")
            if line is None:
                continue
            if not line:
                time.sleep(0.1)
                err = self.stderr_tail(force=True)
                self.stop()
                raise ChildError(f"{self.name}: exited before ready: {err}")
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def stderr_tail(self, force: bool = False) -> str:
        if self.proc.poll() is None and not force:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the child has used so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop()
        self._stderr.close()


def run_json(argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Run a child to completion and parse the JSON it prints last."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout_s,
            env=child_env(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        name = " ".join(argv[1:4])
        raise ChildError(f"{name}: timed out after {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise ChildError(
            f"{' '.join(argv[1:4])}: exit {done.returncode}: "
            + done.stderr.decode(errors="replace")[-3000:]
        )
    lines = [ln for ln in done.stdout.decode().splitlines() if ln.strip()]
    if not lines:
        raise ChildError(f"{' '.join(argv[1:4])}: printed nothing")
    return json.loads(lines[-1])


def py(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
