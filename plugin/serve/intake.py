"""Reading a request body: whole within `serve.body_timeout_s` of its head, at most
`serve.max_body_bytes` as sent and as decoded, its content codings undone.

aiohttp's server decompression is off (`limits.handler_args`): the handlers get the bytes as
sent, so that the proxy can forward them exactly, and decoding here is bounded (a decompression
bomb is a 413, never memory growth). What cannot be read is a `BodyRefused` carrying the JSON
answer, which the guard middleware returns:

- a body that does not arrive in time: 408, and the connection is closed (a client sending one
  byte now and then must not hold a connection);
- decoded beyond the limit: 413;
- a client that goes away mid-body: counted, never an error with a traceback.

A coding that is not supported, or bytes that are not what their coding says, are for the
caller to judge (`Body.problem`): the proxy forwards such a body as it came, the JSON API
refuses it (`refuse_undecodable`: 415 or 400).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import Counter

from plugin.config import ServeConfig
from plugin.observe.metrics import RateLimitedLog
from plugin.serve.encoding import (
    SUPPORTED,
    Coding,
    Malformed,
    TooLarge,
    UnsupportedCoding,
    decode,
    parse_codings,
)
from plugin.serve.errors import json_error
from plugin.serve.metrics import ServeMetrics

log = logging.getLogger("cohortkv.serve.intake")

CONTENT_ENCODING = "Content-Encoding"
UNSUPPORTED = "unsupported_encoding"
MALFORMED = "malformed_encoding"


class BodyRefused(Exception):
    """The body cannot be read; `response` is the answer (the guard middleware returns it)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


class Body:
    """A request body as sent (`raw`, labelled `encoding`) and decoded (`plain`, None when
    `problem` says why it could not be)."""

    __slots__ = ("encoding", "forms", "plain", "problem", "raw")

    def __init__(
        self,
        raw: bytes,
        plain: bytes | None,
        *,
        encoding: str | None = None,
        forms: tuple[Coding, ...] = (),
        problem: str | None = None,
    ) -> None:
        self.raw = raw
        self.plain = plain
        self.encoding = encoding
        """The `Content-Encoding` as sent (several header lines joined), None without one."""
        self.forms = forms
        """The codings undone, in the form found: `encoding.encode(plain, forms)` redoes them."""
        self.problem = problem
        """`unsupported_encoding` or `malformed_encoding` when `plain` is None."""


class BodyReader:
    """Reads request bodies for the sidecar's handlers (the proxy, `/v1/enrich`, `/v1/events`)."""

    def __init__(self, cfg: ServeConfig, metrics: ServeMetrics, bad_input: Counter) -> None:
        self.timeout_s = cfg.body_timeout_s
        self.limit = cfg.max_body_bytes
        self._too_big = metrics.rejected.labels("body")
        self._timed_out = metrics.connections_closed.labels("body_timeout")
        self._gone = metrics.connections_closed.labels("client_disconnect")
        self._coding = {p: bad_input.labels("body", p) for p in (UNSUPPORTED, MALFORMED)}
        """`cohortkv_bad_input_total{source="body"}`: a coding that could not be undone."""
        self._warn = RateLimitedLog(log)

    async def read(self, request: web.Request) -> Body:
        """The body, decoded when it can be; raises `BodyRefused` (408, 413, client gone)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise BodyRefused(self._timeout()) from None
        except ConnectionError:
            self._gone.inc()
            self._warn.warning(
                "client_disconnect", "a client went away before sending its whole body"
            )
            raise BodyRefused(json_error(400, "client disconnected")) from None
        given = request.headers.getall(CONTENT_ENCODING, ())
        if not given:
            return Body(raw, raw)
        encoding = ", ".join(given)
        try:
            plain, forms = decode(raw, parse_codings(given), self.limit)
        except TooLarge:
            self._too_big.inc()
            raise BodyRefused(
                json_error(413, "request body too large", limit_bytes=self.limit, decoded=True)
            ) from None
        except UnsupportedCoding:
            return self._undecodable(raw, encoding, UNSUPPORTED)
        except Malformed:
            return self._undecodable(raw, encoding, MALFORMED)
        return Body(raw, plain, encoding=encoding, forms=forms)

    def _undecodable(self, raw: bytes, encoding: str, problem: str) -> Body:
        self._coding[problem].inc()
        self._warn.warning(
            problem, "a request body could not be decoded (%s)", problem.replace("_", " ")
        )
        return Body(raw, None, encoding=encoding, problem=problem)

    def _timeout(self) -> web.StreamResponse:
        self._timed_out.inc()
        self._warn.warning(
            "body_timeout",
            "closed a client connection: request body not complete within"
            " serve.body_timeout_s = %g s",
            self.timeout_s,
        )
        resp = json_error(408, "request body timed out", timeout_s=self.timeout_s)
        resp.force_close()
        return resp

    @staticmethod
    def refuse_undecodable(body: Body) -> bytes:
        """The decoded body, or the JSON API's refusal: 415 for a coding it does not support,
        400 for bytes that are not what their coding says."""
        if body.plain is not None:
            return body.plain
        if body.problem == UNSUPPORTED:
            raise BodyRefused(
                json_error(
                    415,
                    "unsupported content encoding",
                    field=CONTENT_ENCODING,
                    expected=" or ".join(SUPPORTED),
                )
            )
        raise BodyRefused(
            json_error(
                400,
                "invalid request",
                fields=[{"field": "body", "expected": "bytes encoded as Content-Encoding says"}],
            )
        )
