"""Wire types of the CCS API and the Contextual API, exactly as they go over HTTP.

Every optional field defaults to absent and `omit_defaults` keeps it off the wire: the APIs
want missing properties omitted, never sent as null.
"""

from __future__ import annotations

from typing import Any

import msgspec

from plugin.identity import Alias


class Event(msgspec.Struct, omit_defaults=True):
    name: str
    time: str
    properties: dict[str, Any]
    view_id: str | None = None
    session_id: str | None = None


class CcsRequest(msgspec.Struct, omit_defaults=True):
    events: list[Event]
    user_id: str | None = None
    alias: Alias | None = None
    aliases: tuple[Alias, ...] | None = None


class CcsResponse(msgspec.Struct, omit_defaults=True):
    user_id: str
    cohorts: list[str] = []
    activations: dict[str, list[str]] | None = None


class ClientProperties(msgspec.Struct, omit_defaults=True):
    url: str | None = None
    domain: str | None = None
    referrer: str | None = None
    type: str | None = None
    user_agent: str | None = None
    title: str | None = None


class ContextualRequest(msgspec.Struct, omit_defaults=True):
    """`page_properties` holds `client` plus the content properties (no user data)."""

    url: str
    page_properties: dict[str, Any] = {}


class ContextualResponse(msgspec.Struct, omit_defaults=True):
    cohorts: list[str] = []
    activations: dict[str, list[str]] = {}
    contextual_data: dict[str, Any] | None = None


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    status: int | None = None
    code: str | None = None
    message: str | None = None
    cause: str | None = None
    docs: str | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Parsed leniently: an upstream's error body is diagnostic, never trusted."""

    request_id: str | None = None
    error: ErrorDetail | None = None


json_encoder = msgspec.json.Encoder()
ccs_response_decoder = msgspec.json.Decoder(CcsResponse)
ctx_response_decoder = msgspec.json.Decoder(ContextualResponse)
error_decoder = msgspec.json.Decoder(ErrorBody)
