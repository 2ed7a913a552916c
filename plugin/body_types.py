"""The JSON a person writes, field by field: `/v1/enrich` and `/v1/events` bodies and the plain
mappings `Enricher.track()` takes. A `description` on a field's constraints is what an error
says was expected there; `plugin.serve.bodies` builds the request bodies from these.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

UUID4_PATTERN = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$"
)

Uuid4 = Annotated[str, Meta(pattern=UUID4_PATTERN, description="a UUIDv4")]
Text = Annotated[str, Meta(min_length=1, max_length=2048, description="a non-empty string")]
Word = Annotated[
    str,
    Meta(min_length=1, max_length=256, pattern=r"\S", description="a non-blank string"),
]
Priority = Annotated[int, Meta(ge=0, le=1_000_000, description="an integer from 0 to 1000000")]
Timestamp = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        description="an ISO 8601 timestamp",
        extra_json_schema={"format": "date-time"},
    ),
]
Properties = Annotated[
    dict[str, Any],
    Meta(description="an object (null values are left out, as if absent)"),
]
EventProperties = Annotated[
    dict[str, Any],
    Meta(
        description="an object (null values are left out, as if absent)",
        extra_json_schema={
            "properties": {
                "time_spent_seconds": {"type": "number", "minimum": 0},
                "percentage_watched": {"type": "number", "minimum": 0, "maximum": 1},
            }
        },
    ),
]


class Body(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    pass


class EventBody(Body, frozen=True):
    name: Word
    time: Timestamp
    properties: EventProperties = {}
    session_id: Text | None = None
    view_id: Text | None = None


class FieldError(msgspec.Struct, frozen=True):
    field: str
    expected: str
