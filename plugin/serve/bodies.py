"""JSON bodies of `/v1/enrich` and `/v1/events`, as msgspec structs.

They are the single source of both the validation (`plugin.serve.validate`) and the OpenAPI
document (`plugin.serve.openapi`). A `description` on a field's constraints is what a 400 says
was expected there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from plugin.body_types import (
    UUID4_PATTERN,
    Body,
    EventBody,
    FieldError,
    Priority,
    Properties,
    Text,
    Uuid4,
    Word,
)

__all__ = [
    "UUID4_PATTERN",
    "AliasBody",
    "ConsentBody",
    "ContentBody",
    "ContextBody",
    "EnrichBody",
    "ErrorBody",
    "EventBody",
    "EventsAccepted",
    "EventsBody",
    "FieldError",
    "IdentityBody",
]


class AliasBody(Body, frozen=True):
    tag: Word
    id: Word
    priority: Priority | None = None


class IdentityBody(Body, frozen=True):
    """Exactly one of `user_id`, `alias`, `aliases` (as in a CCS API request)."""

    user_id: Uuid4 | None = None
    alias: AliasBody | None = None
    aliases: Annotated[list[AliasBody], Meta(min_length=1, max_length=32)] | None = None


class ConsentBody(Body, frozen=True):
    """`{"granted": bool}` (the host decided), or the raw signals for the consent gate."""

    granted: bool | None = None
    gdpr: bool | None = None
    tc_string: Annotated[str, Meta(max_length=16384)] | None = None
    us_privacy: Annotated[str, Meta(max_length=64)] | None = None
    gpp: Annotated[str, Meta(max_length=16384)] | None = None
    gpp_sid: Annotated[list[int], Meta(max_length=64)] | None = None


class ContentBody(Body, frozen=True):
    url: Text | None = None
    title: Text | None = None
    properties: Properties = {}
    client_type: Word | None = None
    """`client.type` of the play event and the Contextual request (e.g. `ctv`)."""


class ContextBody(Body, frozen=True):
    identity: IdentityBody | None = None
    consent: ConsentBody | None = None
    content: ContentBody | None = None
    session_id: Text | None = None
    view_id: Text | None = None
    ssai_session_id: Text | None = None


class EnrichBody(Body, frozen=True):
    url: Annotated[str, Meta(min_length=1, max_length=65536, description="an ad request URL")]
    platform: str | None = None
    """An adapter name or `auto` (the default): which platform's format the request is in."""
    context: ContextBody | None = None
    method: Literal["GET", "POST"] = "GET"
    """POST with `body` for bid requests (the `openrtb` platform)."""
    body: Any = None
    """The JSON body of a POST ad request (an OpenRTB bid request)."""


class EventsBody(Body, frozen=True):
    identity: IdentityBody
    events: Annotated[
        list[EventBody], Meta(min_length=1, max_length=100, description="1 to 100 events")
    ]
    consent: ConsentBody | None = None
    """Absent consent means the configured default (denied unless configured otherwise)."""
    session_id: Text | None = None
    """Default for events without one."""
    view_id: Text | None = None
    """Default for events without one."""
    ssai_session_id: Text | None = None
    """With `content_url`: derive session and view ids exactly as the proxy did for the play
    event of this SSAI session, so that completion and play events share a view."""
    content_url: Text | None = None


class EventsAccepted(msgspec.Struct, frozen=True, omit_defaults=True):
    accepted: int
    """Events queued for delivery (0 when the user has not consented)."""
    reason: str
    """The consent gate's reason for its decision."""
    duplicate_play_events: int = 0
    """Play events not queued because their view's play event had gone out already (an ad
    request of the view sent it): one play event per view. Left out when 0."""


class ErrorBody(msgspec.Struct, omit_defaults=True, frozen=True):
    error: str
    fields: list[FieldError] = []
