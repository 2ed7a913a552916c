"""Sessions, views and the "play event already sent" mark shared through Redis by replicas
that are real OS processes (`cohortkv enrich` each), as the shared-cache tests do."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from plugin import Config, ConsentSignals, Content, Context, Enricher, Identity
from plugin.identity import Alias
from plugin.permutive.wire import Event
from plugin.signals.tracker import EventIds
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.redis import SharedRedis
from tests.helpers.samples import GAM_SAMPLE
from tests.helpers.times import recent

ROOT = Path(__file__).resolve().parent.parent


def replica(fake: FakePermutive, redis: SharedRedis, alias: str, content: str) -> dict[str, Any]:
    """One ad request through a replica of its own: `cohortkv enrich --json` in a new process."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COHORTKV_")},
        "COHORTKV_API_KEY": API_KEY,
        "COHORTKV_CCS_URL": fake.url,
        "COHORTKV_CTX_URL": fake.url,
        **redis.env(),
    }
    out = subprocess.run(
        [sys.executable, "-m", "plugin", "enrich", GAM_SAMPLE, "--json", "--alias", alias,
         "--consent", "granted", "--content-url", content],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def ccs_events(fake: FakePermutive) -> list[dict[str, Any]]:
    return [ev for call in fake.bodies["ccs"] for ev in call["body"]["events"]]


async def test_breaks_of_one_view_on_two_replicas_send_one_play_event(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    alias = f"tifa:{uuid.uuid4()}"
    show = f"https://example.com/v/{uuid.uuid4()}"
    pre = await asyncio.to_thread(replica, fake, shared_redis, alias, show)
    mid = await asyncio.to_thread(replica, fake, shared_redis, alias, show)
    assert pre["behavioral"]["reason"] == "live"
    # the second replica knows the view's play event went out, and reuses its answer
    assert mid["behavioral"] == {
        "source": "cache",
        "cohorts": pre["behavioral"]["cohorts"],
        "reason": "view_reuse",
    }
    assert fake.calls["ccs"] == 1

    # the next content on the second replica: a new view of the same, shared, session
    await asyncio.to_thread(replica, fake, shared_redis, alias, show + "-next")
    first, second = ccs_events(fake)
    assert second["session_id"] == first["session_id"]
    assert second["view_id"] != first["view_id"]
    assert uuid.UUID(first["session_id"]).version == 4


async def test_redis_down_means_per_replica_state_never_a_failed_request(
    fake: FakePermutive,
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = SharedRedis(f"redis://127.0.0.1:{s.getsockname()[1]}/0", "cohortkv-down")
    alias = f"tifa:{uuid.uuid4()}"
    show = f"https://example.com/v/{uuid.uuid4()}"
    a = await asyncio.to_thread(replica, fake, down, alias, show)
    b = await asyncio.to_thread(replica, fake, down, alias, show)
    assert a["behavioral"]["reason"] == b["behavioral"]["reason"] == "live"
    assert a["keyvalues"] and b["keyvalues"]
    first, second = ccs_events(fake)  # each replica on its own: one play event each
    assert first["view_id"] != second["view_id"]


async def test_a_host_play_event_on_one_replica_opens_the_view_for_the_fleet(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    """The player's own Videoview lands on replica A; the view's ad request on replica B sends
    no play event of its own: the view was claimed with the key ad requests use."""
    config = Config(
        api_key=API_KEY,
        ccs_url=fake.url,
        ctx_url=fake.url,
        cache=shared_redis.cache(),
    )
    device = Identity(alias=Alias(tag="tifa", id=str(uuid.uuid4())))
    show = f"https://example.com/v/{uuid.uuid4()}"
    play = Event(name="Videoview", time=recent(), properties={"video_id": "v1"})
    context = Context(
        identity=device, consent=ConsentSignals(override=True), content=Content(url=show)
    )
    async with Enricher(config) as a, Enricher(config) as b:
        assert await a.track([play], identity=device, consent=True, ids=EventIds(content_url=show))
        r = await b.enrich(GAM_SAMPLE, context)
    assert (r.behavioral.reason, fake.calls["ccs"]) == ("view_reuse", 1)
    assert r.behavioral.cohorts == ["12345", "67890"]  # the play event's answer, through Redis
