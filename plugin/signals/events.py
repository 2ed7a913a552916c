"""Event rules shared by every way an event leaves: the play event, `track()`, `/v1/events`.

The Direct API guide's rules, in one place: empty properties are omitted (never null, never
empty), times are RFC 3339 date-times with a time zone, and properties that came from URLs are
typed as the workspace schema expects (`[events.properties]`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from plugin.body_types import EventBody, FieldError
from plugin.config import PropertyType
from plugin.errors import RequestError, msgspec_problem
from plugin.permutive.wire import Event

MAX_PAST = timedelta(days=30)
"""Oldest event time accepted: past the behavioral cache's life, an event is history, not news."""
MAX_FUTURE = timedelta(minutes=5)
"""Newest event time accepted: clocks drift, but not by more than this."""

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<frac>\.\d+)?(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)
_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no"))


def parse_event_time(value: object, field: str = "time", now: datetime | None = None) -> datetime:
    """An event's time as an aware datetime; `RequestError` naming `field` when it is not an
    RFC 3339 date-time with a time zone within the accepted window."""
    expected = "an RFC 3339 date-time with a time zone, e.g. 2024-01-15T14:00:00Z"
    if not isinstance(value, str) or len(value) > 64:
        raise RequestError(field, expected, value)
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise RequestError(field, expected, value)
    text = value
    frac = m.group("frac")
    if frac is not None and len(frac) > 7:  # datetime keeps microseconds only
        text = text[: m.start("frac") + 7] + text[m.end("frac") :]
    tz = m.group("tz")
    if tz in ("Z", "z"):
        text = text[: -len(tz)] + "+00:00"
    try:
        t = datetime.fromisoformat(text.replace("t", "T"))
    except ValueError:
        raise RequestError(field, expected, value) from None
    now = now if now is not None else datetime.now(UTC)
    if not now - MAX_PAST <= t <= now + MAX_FUTURE:
        raise RequestError(
            field, "a time within the last 30 days and at most 5 minutes ahead", value
        )
    return t


def now_rfc3339() -> str:
    """Now in UTC to the millisecond (`2026-11-24T01:34:56.789Z`), as
    `datetime.now(UTC).isoformat(timespec="milliseconds")` writes it, with the date and time
    of the current second formatted once per second."""
    global _second, _second_text
    now = time.time()
    second = int(now)
    micros = round((now - second) * 1e6)  # as datetime rounds a time stamp
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    if second != _second:
        _second, _second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second_text}.{micros // 1000:03d}Z"


_second = -1
_second_text = ""


def is_empty(value: object) -> bool:
    """The values the guide says to omit rather than send: null, "", [] and {}."""
    return value is None or value == "" or value == [] or value == {} or value == ()


def prune_empty(value: Any) -> Any:
    """`value` with every empty property left out, recursively: a list or object that only
    held empty values is itself empty, and left out of its parent."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(v) is str:  # most values: empty only when ""
                if v:
                    out[k] = v
                continue
            v = prune_empty(v)
            if not is_empty(v):
                out[k] = v
        return out
    if isinstance(value, list | tuple):
        return [p for p in (prune_empty(v) for v in value) if not is_empty(p)]
    return value


def typed_properties(
    properties: Mapping[str, Any], types: Mapping[str, PropertyType]
) -> tuple[dict[str, Any], list[str]]:
    """Text values (from URLs: adapters, `cohortkv_p.*`) typed as `types` says; values that
    are already typed (a host's JSON) are kept. Returns the properties and the names of the
    values that did not parse, which are dropped."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in properties.items():
        kind = types.get(name)
        if kind is None or not isinstance(value, str):
            out[name] = value
            continue
        typed = _typed(value, kind)
        if typed is None:
            dropped.append(name)
        else:
            out[name] = typed
    return out, dropped


def _typed(text: str, kind: PropertyType) -> Any:
    if kind == "string":
        return text
    if kind == "list":
        return [p for p in (piece.strip() for piece in text.split(",")) if p]
    value = text.strip().lower()
    if kind == "boolean":
        return True if value in _TRUE else False if value in _FALSE else None
    try:
        number = float(value) if len(value) <= 32 else math.nan
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and "." not in value and "e" not in value else number


def typed_content_properties(
    raw: Mapping[str, Any], types: Mapping[str, PropertyType], dropped: Callable[[str], None]
) -> dict[str, Any]:
    """Content properties as the play event and the Contextual request carry them: typed as
    `[events.properties]` says (`dropped` hears of each value that does not parse), empty
    values left out."""
    typed, bad = typed_properties(raw, types)
    for name in bad:
        dropped(name)
    pruned: dict[str, Any] = prune_empty(typed)
    return pruned


# -- events a person gives (`/v1/events` bodies, `Enricher.track()`) ----------------------------


def as_event(given: Event | Mapping[str, Any], path: str) -> Event:
    """An event a host gave (`Event` or a plain mapping such as `{"name": "VideoCompletion",
    "time": "...", "properties": {...}}`), checked as a `/v1/events` body's event is: a
    `RequestError` names the first bad field (`events[0].time`)."""
    if isinstance(given, Event):
        data: Any = msgspec.structs.asdict(given)
    elif isinstance(given, Mapping):
        data = dict(given)
    else:
        expected = "an Event or a mapping with name, time and properties"
        raise RequestError(path, expected, got_text=type(given).__name__)
    try:
        body = msgspec.convert(data, EventBody)
    except msgspec.ValidationError as e:
        where, text = msgspec_problem(e)
        expected = "a known field" if text == "unknown field" else text.removeprefix("expected ")
        raise RequestError(f"{path}{where}", expected) from None
    errors: list[FieldError] = []
    properties = check_event(body, path, errors)
    if errors:
        raise RequestError(errors[0].field, errors[0].expected)
    return Event(
        name=body.name,
        time=body.time,
        properties=properties,
        view_id=body.view_id,
        session_id=body.session_id,
    )


def check_event(ev: EventBody, path: str, errors: list[FieldError]) -> dict[str, Any]:
    """The event's properties without empty values; its time and engagement metrics checked."""
    try:
        parse_event_time(ev.time, f"{path}.time")
    except RequestError as e:
        errors.append(FieldError(e.field, e.expected))
    props: dict[str, Any] = prune_empty(without_nulls(ev.properties, f"{path}.properties", errors))
    spent = props.get("time_spent_seconds")
    if spent is not None and not (_is_number(spent) and spent >= 0):
        errors.append(FieldError(f"{path}.properties.time_spent_seconds", "a number >= 0"))
    share = props.get("percentage_watched")
    if share is not None and not (_is_number(share) and 0 <= share <= 1):
        errors.append(FieldError(f"{path}.properties.percentage_watched", "a number from 0 to 1"))
    return props


def without_nulls(value: Any, path: str, errors: list[FieldError], depth: int = 0) -> Any:
    """`value` with every null left out: the CCS API wants absent properties omitted.

    Numbers must be finite (JSON has no NaN; an overflowing literal such as 1e999 decodes to
    infinity, which would go out as null).
    """
    if depth > 32:
        errors.append(FieldError(path, "at most 32 levels of nesting"))
        return value
    if isinstance(value, dict):
        return {
            k: without_nulls(v, f"{path}.{k}", errors, depth + 1)
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [
            without_nulls(v, f"{path}[{i}]", errors, depth + 1)
            for i, v in enumerate(value)
            if v is not None
        ]
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError(path, "a finite number"))
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
