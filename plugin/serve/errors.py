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
