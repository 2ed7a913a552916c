"""Wire types of the CCS API and the Contextual API, exactly as they go over HTTP.

Every optional field defaults to absent and `omit_defaults` keeps it off the wire: the APIs
want missing properties omitted, never sent as null.
"""

from __future__ import annotations

from typing import Any

import msgspec

from plugin.identity import Alias

CCS_PATH = "/ccs/v1/segmentation"
CONTEXTUAL_PATH = "/ctx/v1/segment"
MAX_EVENTS_PER_REQUEST = 10
"""The CCS API takes 1 to 10 events per request."""


class Event(msgspec.Struct, omit_defaults=True):
    """A player event as the CCS API takes it (`plugin.Event`, for `Enricher.track`): `time`
    is RFC 3339 with a time zone; ids absent: the view of the ad request's play event."""

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
    """The Contextual request's `client` section: about the content, never about the user
    (no user agent, referrer, IP or identifier: the guide says "minus any user-related data")."""

    url: str | None = None
    domain: str | None = None
    type: str | None = None
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
    """`{"status": "Bad Request", "code": 2000, "message": ..., "docs": ...}`: the HTTP reason
    phrase as a string and Permutive's numeric error code."""

    status: str | None = None
    code: int | None = None
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
_any_decoder = msgspec.json.Decoder()


def parse_error(payload: bytes) -> ErrorDetail | None:
    """The `error` member of an upstream's error body, or None. Lenient: a body with a field
    of the wrong type still gives the fields that are right (a numeric code is what we
    report), and nothing here raises."""
    try:
        return error_decoder.decode(payload).error
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        return None
    try:
        doc = _any_decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if isinstance(code, str) and code.isdigit() and len(code) < 10:
        code = int(code)

    def text(name: str) -> str | None:
        value = error.get(name)
        return value if isinstance(value, str) else None

    return ErrorDetail(
        status=text("status"),
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        message=text("message"),
        cause=text("cause"),
        docs=text("docs"),
    )
