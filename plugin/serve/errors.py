"""JSON error responses: every refusal says what was wrong, never with a stack or a secret."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_encode = msgspec.json.Encoder().encode


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=_encode(doc), content_type="application/json", headers=headers
    )


def json_error(
    status: int, error: str, *, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    return json_response(status, {"error": error, **details}, headers)


async def answer_and_close(
    request: web.BaseRequest, resp: web.StreamResponse
) -> web.StreamResponse:
    """Sends `resp` at once, then closes the connection: a body the client still means to send
    is never read (aiohttp would otherwise read and discard it for its lingering time)."""
    resp.force_close()
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except ConnectionError:
        pass  # the client went away first
    request.protocol.force_close()  # the transport flushes what was written, then closes
    return resp
