"""One worker process of `cohortkv serve --workers N`: its config from the parent, then the
sidecar as one process runs it (`plugin.serve.runner.serve`), until SIGTERM or the parent's
pipe closes. Apart from `plugin.serve.workers` so that the sidecar's runner, which starts the
supervisor, is never imported back by what the supervisor imports."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import Any

import msgspec

from plugin.errors import CohortkvError
from plugin.observe.logs import configure_logging
from plugin.serve.runner import serve
from plugin.serve.workers import Worker, WorkerSpec

log = logging.getLogger("cohortkv.serve")


class _Tagged(logging.Filter):
    """Every line of a worker starts with `worker N:`."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self._prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self._prefix):
            record.msg = f"{self._prefix}{record.msg}"
        return True


def _watch_parent() -> None:
    """Standard input reaches its end when the parent is gone: stop as on SIGTERM."""
    try:  # the file descriptor, not `sys.stdin`: its lock must stay free for the exit
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    """A worker process: the spec from standard input, then `serve` until SIGTERM."""
    spec = msgspec.json.decode(sys.stdin.buffer.readline(), type=WorkerSpec)
    cfg = spec.config
    secrets = [cfg.api_key] if cfg.api_key else []
    configure_logging(json_lines=cfg.log.json, level=spec.log_level, secrets=secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tagged(spec.index))
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    try:
        return _run(serve(cfg, Worker(spec)))
    except CohortkvError as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: int = uvloop.run(coro)
    return result
