"""Connection-level defences that aiohttp's web server does not have: a deadline for each
request head, a cap on open client connections, and JSON answers for what its parser rejects.

`GuardedSite` listens like `web.TCPSite`, but each connection's protocol is a `GuardedHandler`
(aiohttp's `RequestHandler` plus the guard):

- **Header timeout.** A timer starts when a connection is accepted, and again at the first
  byte of each later request on it; it is cancelled as soon as the parser has the whole request
  head. When it fires, the connection is closed (slowloris clients trickling header lines hold a
  connection for `serve.header_timeout_s` at most). Per request this costs an integer
  comparison on each `data_received`; a later request whose head arrives in one piece (the
  usual case) never starts a timer at all.
- **Connection cap.** Beyond `serve.max_connections` open connections a new one is answered
  503 and closed at once, before any parsing, so that slow or idle clients cannot take the file
  descriptors that ad requests to ad servers need.
- **Parser rejections** (too many headers, a line too long, a bad request line, invalid bytes)
  answer the sidecar's JSON error shape with a fixed reason, never the request's own bytes, and
  are counted and logged rate-limited instead of a traceback per request.

Every close and refusal is counted in `cohortkv_http_connections_closed_total{reason}`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, cast

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from plugin.config import ServeConfig
from plugin.observe.metrics import RateLimitedLog
from plugin.serve.errors import json_error
from plugin.serve.metrics import ServeMetrics

log = logging.getLogger("cohortkv.serve.guard")

FALLBACK_MAX_CONNECTIONS = 4096
"""The cap when `serve.max_connections` is 0 and the open-file limit cannot be read."""

_TLS = "Received HTTPS traffic on an HTTP port"
# The text aiohttp's parser puts before the echo of the offending bytes is a fixed phrase
# ("Invalid header value char:\n\n  b'...'"); it is used only when it looks like one.
_PHRASE = re.compile(r"[A-Za-z][A-Za-z0-9 '`.,_-]{0,99}")


def default_max_connections() -> int:
    """Half the soft open-file limit: the other half is for the sidecar's own connections."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return FALLBACK_MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return FALLBACK_MAX_CONNECTIONS
    return max(1, soft // 2)


def parser_reason(exc: BaseException) -> str:
    """What was wrong with a request the HTTP parser refused, in words that never quote it."""
    if isinstance(exc, RequestPayloadError):
        return "malformed body"
    if isinstance(exc, LineTooLong):
        return "request line or header line too long"
    if isinstance(exc, BadHttpMethod):
        return "HTTPS traffic on an HTTP port" if exc.message == _TLS else "invalid method"
    if isinstance(exc, InvalidURLError):
        return "invalid request target"
    if isinstance(exc, BadStatusLine):
        return "invalid request line"
    if isinstance(exc, InvalidHeader):
        return "invalid header"
    if isinstance(exc, HttpProcessingError):
        head = exc.message.split(":", 1)[0].split("\n", 1)[0].strip().rstrip(".")
        if _PHRASE.fullmatch(head):
            return head[0].lower() + head[1:]
    return "malformed request"


class ConnectionGuard:
    """The state all connections of one sidecar share: how many are open, and the counters."""

    def __init__(self, cfg: ServeConfig, metrics: ServeMetrics) -> None:
        self.header_timeout_s = cfg.header_timeout_s
        self.max_connections = cfg.max_connections or default_max_connections()
        self.open = 0
        self._metrics = metrics
        self._internal = metrics.internal_errors.labels("unhandled")
        self._gauge = metrics.connections
        self._timeouts = metrics.connections_closed.labels("header_timeout")
        self._refusals = metrics.connections_closed.labels("max_connections")
        self._malformed = metrics.connections_closed.labels("malformed")
        metrics.connections_max.set(self.max_connections)
        self.timed_out = self.refused = self.rejected = 0
        self._warn = RateLimitedLog(log)
        body = msgspec.json.encode({"error": "too many connections", "limit": self.max_connections})
        self.refusal = (
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"Retry-After: 1\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        """The whole answer to a connection over the cap, written before it is closed."""

    def protocols(self, server: web.Server) -> Callable[[], GuardedHandler]:
        """A protocol factory for `loop.create_server`: aiohttp's handler settings (the
        application's `handler_args` and the runner's), each connection guarded."""
        kwargs: dict[str, Any] = dict(server._kwargs)
        loop = asyncio.get_running_loop()

        def make() -> GuardedHandler:
            return GuardedHandler(self, server, loop=loop, **kwargs)

        return make

    # -- what the handlers report ---------------------------------------------------------

    def admit(self) -> bool:
        if self.open >= self.max_connections:
            self.refused += 1
            self._refusals.inc()
            self._warn.warning(
                "max_connections",
                "refused a client connection: %d open, serve.max_connections is %d"
                " (%d refused since start)",
                self.open,
                self.max_connections,
                self.refused,
            )
            return False
        self.open += 1
        self._gauge.inc()
        return True

    def release(self) -> None:
        self.open -= 1
        self._gauge.dec()

    def head_timed_out(self) -> None:
        self.timed_out += 1
        self._timeouts.inc()
        self._warn.warning(
            "header_timeout",
            "closed a client connection: request head not complete within"
            " serve.header_timeout_s = %g s (%d since start)",
            self.header_timeout_s,
            self.timed_out,
        )

    def malformed(self, reason: str) -> None:
        self.rejected += 1
        self._malformed.inc()
        self._warn.warning(
            "malformed",
            "answered 400 to a malformed HTTP request: %s (%d since start)",
            reason,
            self.rejected,
        )

    def unhandled(self) -> None:
        self._internal.inc()


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the header deadline, the connection cap and
    JSON error answers."""

    __slots__ = ("_admitted", "_answered", "_guard", "_head_timer")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered = 0
        """Requests answered on this connection; fewer than parsed: one is being handled."""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if not guard.admit():
            refused = cast(asyncio.Transport, transport)
            refused.write(guard.refusal)
            refused.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(guard.header_timeout_s, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        timer = self._head_timer
        if self._request_count != parsed:  # the parser has a whole request head
            if timer is not None:
                timer.cancel()
                self._head_timer = None
        elif timer is None and data and self._answered >= parsed and not self._force_close:
            # The first bytes of the next request on an idle keep-alive connection.
            self._head_timer = self._loop.call_later(
                self._guard.header_timeout_s, self._head_timeout
            )

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        self._answered += 1
        super().log_access(request, response, time)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.release()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport is None or self._answered < self._request_count:
            return  # closed already, or a request is being handled
        self._guard.head_timed_out()
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A client's malformed body (broken chunked framing; content codings are decoded by
        `plugin.serve.intake`) is the client's garbage: `handle_error` counts it and logs it at
        a bounded rate. Only our own bugs get aiohttp's traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to what its parser refused, and to an exception that escaped a
        handler: the sidecar's JSON error shape instead of text that quotes the request."""
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            if request.writer.output_size > 0:
                raise ConnectionError("response already started")
            reason = parser_reason(exc)
            self._guard.malformed(reason)
            resp = json_error(400, "malformed HTTP request", reason=reason)
        else:
            super().handle_error(request, status, exc, message)  # logs; checks the output
            self._guard.unhandled()
            error = "handler timed out" if status == 504 else "internal error"
            resp = json_error(status, error)
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """`web.TCPSite`, with every connection a `GuardedHandler` of `guard`."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocols(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
