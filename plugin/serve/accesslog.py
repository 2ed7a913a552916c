"""The optional access log: one JSON object per request on the `cohortkv.access` logger.

The query string is never logged: ad requests carry device ids and consent strings, and a log
line is the wrong place for either. The request id (the caller's `X-Request-Id`, or one we made)
ties the line to the response header and to the request the ad server received.
"""

from __future__ import annotations

import logging
import sys

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from plugin.serve.limits import REQUEST_ID
from plugin.signals.events import now_rfc3339

LOGGER = "cohortkv.access"

_encode = msgspec.json.Encoder().encode


class AccessLine(msgspec.Struct, omit_defaults=True):
    ts: str
    """ISO 8601 in UTC, as the application log's `ts`."""
    request_id: str | None
    method: str
    path: str
    status: int
    bytes: int
    duration_ms: float
    remote: str | None = None


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: web.StreamResponse, time_s: float) -> None:
        rid = request.get(REQUEST_ID) if isinstance(request, web.Request) else None
        line = AccessLine(
            ts=now_rfc3339(),
            request_id=rid,
            method=request.method,
            path=request.path,
            status=response.status,
            bytes=response.body_length,
            duration_ms=round(time_s * 1000, 3),
            remote=request.remote,
        )
        self.logger.info(_encode(line).decode())


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))


def stdout_logger() -> logging.Logger:
    """`cohortkv.access` writing bare JSON lines to stdout (the CLI's choice)."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        logger.addHandler(_Stdout())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
