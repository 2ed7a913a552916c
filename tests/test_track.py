"""`enricher.track()` as a host calls it: `plugin.Event` or plain dicts, checked as `/v1/events`
bodies are (a mistake names its field), delivered to the CCS API over loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from plugin import Enricher, Event, RequestError
from tests.helpers.fakes import FakePermutive, config
from tests.helpers.samples import DEVICE


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_plain_dicts_and_events_are_delivered_alike(fake: FakePermutive) -> None:
    completion: dict[str, Any] = {
        "name": "VideoCompletion",
        "time": now(),
        "properties": {"percentage_watched": 0.9, "time_spent_seconds": 1200, "note": None},
    }
    async with Enricher(config(fake)) as enricher:
        sent = await enricher.track(
            [completion, Event(name="VideoPause", time=now(), properties={"x": ""})],
            identity=DEVICE,
            consent=True,
        )
    assert sent == 2
    events = fake.bodies["ccs"][0]["body"]["events"]
    assert [e["name"] for e in events] == ["VideoCompletion", "VideoPause"]
    # nulls and empty values left out, as the CCS API wants
    assert events[0]["properties"] == {"percentage_watched": 0.9, "time_spent_seconds": 1200}
    assert "properties" not in events[1] or events[1]["properties"] == {}


@pytest.mark.parametrize(
    ("event", "field", "expected"),
    [
        ({"time": "2024-01-15T14:00:00Z", "properties": {}}, "events[0].name", "is required"),
        ({"name": "", "time": now(), "properties": {}}, "events[0].name", "at least 1 character"),
        ({"name": "X", "time": "yesterday", "properties": {}}, "events[0].time", "RFC 3339"),
        ({"name": "X", "time": now(), "typo": 1}, "events[0].typo", "a known field"),
        (
            {"name": "X", "time": now(), "properties": {"percentage_watched": 90}},
            "events[0].properties.percentage_watched",
            "a number from 0 to 1",
        ),
        ("VideoCompletion", "events[0]", "an Event or a mapping"),
    ],
)
async def test_a_bad_event_names_its_field_whatever_the_consent(
    fake: FakePermutive, event: Any, field: str, expected: str
) -> None:
    async with Enricher(config(fake)) as enricher:
        for consent in (True, False):
            with pytest.raises(RequestError) as e:
                await enricher.track([event], identity=DEVICE, consent=consent)
            assert e.value.field == field, str(e.value)
            assert expected in str(e.value)
    assert fake.calls["ccs"] == 0


async def test_without_consent_nothing_is_sent(fake: FakePermutive) -> None:
    event = {"name": "VideoCompletion", "time": now(), "properties": {}}
    async with Enricher(config(fake)) as enricher:
        assert await enricher.track([event], identity=DEVICE, consent=False) == 0
    assert fake.calls["ccs"] == 0
