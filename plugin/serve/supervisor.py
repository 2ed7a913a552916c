"""The parent of `cohortkv serve --workers N`: it starts N workers on one port and keeps them.

The parent serves nothing itself. It holds the port (bound with `SO_REUSEPORT`, never
listening: the workers bind beside it and the kernel spreads connections over them), starts
each worker again after it dies (with a backoff, counted in `cohortkv_worker_restarts_total`
and logged), passes SIGTERM/SIGINT on and exits once every worker has drained. A worker that
exits 2 met a person's mistake (the port cannot be bound): the parent stops them all and
exits 2 too, rather than start it again for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import tempfile

import msgspec

from plugin.commands.args import listen_error
from plugin.config import Config
from plugin.errors import CohortkvError
from plugin.serve.worker_metrics import ParentMetrics, shared_directory
from plugin.serve.workers import WORKER_CODE, WorkerSpec, check_workers, worker_count

log = logging.getLogger("cohortkv.serve")

BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0
"""A worker that ran this long before it died is started again after the first backoff."""
KILL_AFTER_S = 5.0
"""Beyond `serve.grace_s`, how long the parent waits for a draining worker before SIGKILL."""


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to (`host`, `port`) with `SO_REUSEPORT` (not listening), and its port:
    port 0 becomes one free port that every worker then binds."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise CohortkvError(listen_error(host, port, e)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise CohortkvError(listen_error(host, port, e)) from None
    return sock, int(sock.getsockname()[1])


async def supervise(cfg: Config) -> int:
    """Runs `serve.workers` workers until SIGTERM or SIGINT; 0 once all drained cleanly."""
    check_workers(cfg)
    count = worker_count(cfg.serve.workers)
    holder, port = reserve_port(cfg.serve.host, cfg.serve.port)
    serve = msgspec.structs.replace(cfg.serve, port=port)
    with (
        holder,
        tempfile.TemporaryDirectory(prefix="cohortkv-metrics-") as metrics_dir,
        shared_directory(metrics_dir),
    ):
        parent = Supervisor(cfg.with_overrides(serve=serve), count)
        return await parent.run()


class Supervisor:
    def __init__(self, cfg: Config, count: int) -> None:
        self._cfg = cfg
        self._count = count
        self._metrics = ParentMetrics(count)
        self._level = logging.getLogger().getEffectiveLevel()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stop = asyncio.Event()
        self._fatal = False
        self._codes: dict[int, int] = {}
        self._restarts = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        serve = self._cfg.serve
        log.info(
            "supervising %d workers on http://%s:%d (SO_REUSEPORT)",
            self._count,
            serve.host,
            serve.port,
        )
        keepers = [asyncio.create_task(self._keep(i)) for i in range(self._count)]
        try:
            await self._stop.wait()
            log.info("shutting down %d workers (grace %.1f s)", len(self._procs), serve.grace_s)
            self._signal_all(signal.SIGTERM)
            _, pending = await asyncio.wait(keepers, timeout=serve.grace_s + KILL_AFTER_S)
            if pending:
                log.warning("workers still running after the grace period: killing them")
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(pending)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._fatal:
            return 2
        unclean = {i: c for i, c in self._codes.items() if c != 0}
        if unclean:
            log.warning("workers that did not exit cleanly: %s", _codes_text(unclean))
            return 1
        return 0

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, index: int) -> None:
        """Worker `index`, started again after each death until shutdown."""
        backoff = BACKOFF_S
        while True:
            ended = await self._once(index)
            if ended is None:
                return
            what, ran_s = ended
            if ran_s >= STABLE_S:
                backoff = BACKOFF_S
            self._restarts += 1
            self._metrics.restarts.inc()
            log.warning(
                "worker %d %s; starting it again in %.1f s (%d restarts so far)",
                index,
                what,
                backoff,
                self._restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _once(self, index: int) -> tuple[str, float] | None:
        """Worker `index` started and run until it ends: what became of it and how long it
        ran; None when it ended because the parent is stopping (or must stop)."""
        loop = asyncio.get_running_loop()
        try:
            proc = await self._spawn(index)
        except OSError as e:  # no process could be made (memory, process limit)
            return f"could not be started ({e.strerror or e})", 0.0
        started = loop.time()
        code = await proc.wait()
        self._metrics.worker_gone(proc.pid)
        if self._stop.is_set():
            self._codes[index] = code
            return None
        if code == 2:
            log.error("worker %d exited 2 (its error is logged above): stopping", index)
            self._fatal = True
            self._stop.set()
            return None
        return f"(pid {proc.pid}) {_exit_text(code)}", loop.time() - started

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        spec = WorkerSpec(config=self._cfg, index=index, log_level=self._level)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER_CODE, stdin=asyncio.subprocess.PIPE
        )
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(msgspec.json.encode(spec) + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        # The pipe stays open: the worker reads its end as the parent being gone.
        if self._stop.is_set():
            proc.send_signal(signal.SIGTERM)
        return proc


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _codes_text(codes: dict[int, int]) -> str:
    return ", ".join(f"worker {i} {_exit_text(c)}" for i, c in sorted(codes.items()))
