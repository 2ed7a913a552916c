"""The one events gate (`Enricher.prepare_events`): a denied viewer's events never reach the
CCS API, whether a host calls `track()` or posts to `/v1/events` (with either queue), and
`send_batch` sends nothing that did not pass the gate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from plugin import Config, Enricher, Event
from plugin.context import ConsentSignals
from plugin.identity import Identity
from plugin.tracking import Denied, Prepared
from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import SharedRedis
from tests.helpers.samples import DEVICE
from tests.helpers.waiting import until
from tests.test_event_stream import config as redis_queue_config
from tests.test_event_stream import replicas


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def completion() -> dict[str, Any]:
    return {"name": "VideoCompletion", "time": now(), "properties": {"percentage_watched": 1}}


DENIALS: list[tuple[ConsentSignals | bool, str]] = [
    (False, "override_denied"),
    (ConsentSignals(override=False), "override_denied"),
    (ConsentSignals(gdpr=True), "tcf_missing"),
]


@pytest.mark.parametrize(("consent", "reason"), DENIALS)
async def test_a_denied_viewers_tracked_events_never_reach_the_ccs_api(
    fake: FakePermutive, consent: ConsentSignals | bool, reason: str
) -> None:
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    async with Enricher(cfg) as e:
        got = await e.prepare_events([completion()], identity=DEVICE, consent=consent)
        assert got == Denied(reason, 1)
        assert await e.track([completion()], identity=DEVICE, consent=consent) == 0
        assert await e.track([completion()], identity=DEVICE, consent=True) == 1
    assert fake.calls["ccs"] == 1, "only the consented event went out"


async def test_v1_events_of_a_denied_viewer_never_reach_the_ccs_api(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    identity = {"user_id": "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"}
    async with running(sidecar_config(fake, ads)) as side:
        for consent in ({"granted": False}, {"gdpr": True}):
            body = {"identity": identity, "consent": consent, "events": [completion()]}
            resp = await side.client.post("/v1/events", json=body)
            assert resp.status == 202 and (await resp.json())["accepted"] == 0
        granted = {"identity": identity, "consent": {"granted": True}, "events": [completion()]}
        assert (await side.client.post("/v1/events", json=granted)).status == 202
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 1)
    assert fake.calls["ccs"] == 1, "only the consented event went out"


async def test_the_redis_queue_holds_only_what_the_gate_prepared(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    identity = {"alias": {"tag": "t", "id": "u1"}}
    async with replicas(redis_queue_config(fake, shared_redis.own(), partitions=1)) as (side,):
        denied = {"identity": identity, "consent": {"granted": False}, "events": [completion()]}
        resp = await side.client.post("/v1/events", json=denied)
        assert (await resp.json())["accepted"] == 0
        granted = {**denied, "consent": {"granted": True}}
        assert (await side.client.post("/v1/events", json=granted)).status == 202
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 1)
        assert side.sample("cohortkv_events_total", state="queued") == 1
    assert fake.calls["ccs"] == 1


async def test_send_batch_takes_only_a_prepared_batch(fake: FakePermutive) -> None:
    cfg = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    event = Event(name="VideoCompletion", time=now(), properties={})
    with pytest.raises(TypeError, match="prepare_events"):
        Prepared(DEVICE, [event], gate=object())
    async with Enricher(cfg) as e:
        with pytest.raises(TypeError, match="Prepared"):
            await e.send_batch((DEVICE, [event]))  # type: ignore[arg-type]
        got = await e.prepare_events([event], identity=DEVICE, consent=True)
        assert isinstance(got, Prepared)
        await e.send_batch(got)
    assert fake.calls["ccs"] == 1


def test_prepared_batches_of_different_users_are_never_joined() -> None:
    event = Event(name="VideoCompletion", time=now(), properties={})
    a = Prepared.restored(Identity(user_id="a"), event)
    b = Prepared.restored(Identity(user_id="b"), event)
    with pytest.raises(ValueError, match="different identities"):
        Prepared.joined([a, b])
