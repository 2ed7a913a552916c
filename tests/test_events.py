"""Player events as the Direct API guide defines them: RFC 3339 times with a time zone inside a
sane window, empty properties left out (recursively), URL text typed by `[events.properties]`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.errors import RequestError
from plugin.signals.events import is_empty, parse_event_time, prune_empty, typed_properties

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-03T11:00:00Z",
        "2026-12-03t11:00:00z",
        "2026-12-03T11:00:00.123Z",
        "2026-12-03T11:00:00.123456789Z",  # nanoseconds: kept to the microsecond
        "2026-12-03T13:30:00+02:00",
        "2026-11-04T12:00:01Z",  # just inside 30 days
        "2026-12-03T12:04:59Z",  # just inside 5 minutes ahead
    ],
)
def test_rfc3339_times_in_the_window_are_accepted(value: str) -> None:
    t = parse_event_time(value, "events[0].time", now=NOW)
    assert t.tzinfo is not None and NOW - timedelta(days=30) <= t <= NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-15", "RFC 3339"),  # a date is not a date-time
        ("20240115T140730Z", "RFC 3339"),  # ISO 8601 basic format is not RFC 3339
        ("2026-12-03T11:00:00", "RFC 3339"),  # no time zone
        ("2026-12-03 11:00:00Z", "RFC 3339"),
        ("0001-01-01T00:00:00Z", "within the last 30 days"),
        ("9999-12-31T23:59:59Z", "within the last 30 days"),
        ("2026-02-30T00:00:00Z", "RFC 3339"),  # no such day
        ("2026-12-03T12:06:00Z", "within the last 30 days"),  # too far ahead
        ("yesterday", "RFC 3339"),
        (1733227200, "RFC 3339"),
        (None, "RFC 3339"),
    ],
)
def test_anything_else_is_an_error_naming_the_field(value: Any, expected: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_event_time(value, "events[2].time", now=NOW)
    assert e.value.field == "events[2].time"
    assert expected in e.value.expected


@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.binary(max_size=20)))
def test_the_parser_fails_only_with_a_request_error(value: Any) -> None:
    try:
        t = parse_event_time(value, now=NOW)
    except RequestError:
        return
    assert t.tzinfo is not None


@given(st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1)))
def test_a_time_round_trips_or_is_outside_the_window(t: datetime) -> None:
    text = t.isoformat().replace("+00:00", "Z")
    inside = NOW - timedelta(days=30) <= t <= NOW + timedelta(minutes=5)
    if inside:
        assert parse_event_time(text, now=NOW) == t
    else:
        with pytest.raises(RequestError):
            parse_event_time(text, now=NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


def _has_empty(value: Any) -> bool:
    if isinstance(value, dict):
        return any(is_empty(v) or _has_empty(v) for v in value.values())
    if isinstance(value, list):
        return any(is_empty(v) or _has_empty(v) for v in value)
    return False


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [] if is_empty(value) else [value]


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=6))
def test_pruning_leaves_no_empty_value_and_keeps_every_other(props: dict[str, Any]) -> None:
    pruned = prune_empty(props)
    assert not _has_empty(pruned)
    assert sorted(map(repr, _leaves(pruned))) == sorted(map(repr, _leaves(props)))
    assert prune_empty(pruned) == pruned


def test_url_text_is_typed_and_what_does_not_parse_is_dropped() -> None:
    types = {"categories": "list", "season": "number", "live": "boolean", "title": "string"}
    raw = {
        "categories": "sports, football,,",
        "season": "2026",
        "live": "no",
        "title": "Cup final",
        "rating": "4.5",  # no type: stays text
        "duration": {"seconds": 90},  # already typed (a host's JSON): kept
    }
    typed, dropped = typed_properties({**raw, "episode": "x"}, {**types, "episode": "number"})
    assert typed == {
        "categories": ["sports", "football"],
        "season": 2026,
        "live": False,
        "title": "Cup final",
        "rating": "4.5",
        "duration": {"seconds": 90},
    }
    assert dropped == ["episode"]
    for bad in ("nan", "inf", "1e999", "x" * 40):
        assert typed_properties({"n": bad}, {"n": "number"})[1] == ["n"]
