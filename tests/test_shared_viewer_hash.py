"""A viewer's fleet-wide state in Redis: one hash per identity holding its session, its views
and its behavioral answer, each session and view value with its own idle expiry inside it,
the key's expiry following the longest idle timeout."""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.cache.shared import RedisStore, pack_id, unpack_id
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer
from tests.helpers.redis import SharedRedis
from tests.helpers.waiting import until

SESSION_S = 30.0
VIEW_S = 60.0


@pytest.fixture
async def store(shared_redis: SharedRedis) -> AsyncIterator[tuple[RedisStore, Any, str]]:
    import redis.asyncio as redis

    mine = shared_redis.own()
    s = RedisStore(mine.url, Metrics(), prefix=mine.prefix)
    client = redis.Redis.from_url(mine.url)
    try:
        yield s, client, mine.prefix
    finally:
        await s.close()
        await client.aclose()


async def claim(
    s: RedisStore, identity: str, view_key: str, *, sid: str | None = None, known: bool = False
) -> tuple[str, str, bool]:
    got = await s.claim_view(
        identity,
        view_key,
        session_id=sid or str(uuid.uuid4()),
        view_id=str(uuid.uuid4()),
        fixed_session=False,
        given_view=False,
        known=known,
        session_ttl_s=SESSION_S,
        view_ttl_s=VIEW_S,
        wait_s=1.0,
    )
    assert got is not None
    return got


async def keys(client: Any, prefix: str) -> list[bytes]:
    return sorted([k async for k in client.scan_iter(match=f"{prefix}:*")])


def expired(sid: str, vid: str) -> bytes:
    """A view or session value whose expiry has passed (as the claim script packs it)."""
    s, v = pack_id(sid), pack_id(vid)
    return struct.pack(">I", 1) + bytes([len(s)]) + s + v


async def test_a_viewer_is_one_key_with_its_session_views_and_answer(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, prefix = store
    identity = uuid.uuid4().hex
    sid, first, new = await claim(s, identity, uuid.uuid4().hex)
    assert new
    _, second, new = await claim(s, identity, uuid.uuid4().hex)
    assert new and second != first
    answer = Answer(("1", "2"), (("dfp", ("1",)),), "user")
    s.put("b", identity, answer, 600)

    async def stored() -> bool:
        return await s.get("b", identity, 600) == answer

    await until(stored, what="the answer's fire-and-forget write")
    other = uuid.uuid4().hex  # a second viewer with the same cohorts
    s.put("b", other, Answer(answer.cohorts, answer.activations, "other"), 600)
    await until(lambda: s.get("b", other, 600), what="the second viewer's answer")
    found = await keys(client, prefix)
    profiles = [k for k in found if k.startswith(f"{prefix}:p:".encode())]
    assert len(profiles) == 1, "one profile for every viewer with those cohorts"
    assert sorted(set(found) - set(profiles)) == sorted(
        [s.viewer_key(identity), s.viewer_key(other)]
    )
    assert await client.hlen(s.viewer_key(identity)) == 4  # session, two views, answer
    # every value small: Redis keeps the hash as a listpack, not a hash table
    assert await client.object("encoding", s.viewer_key(identity)) == b"listpack"
    assert await s.find_view(identity, None, session_id=str(uuid.uuid4()), session_ttl_s=30) == (
        sid,
        second,
    )


async def test_the_key_expires_with_the_longest_idle_timeout_and_each_claim_refreshes_it(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, _ = store
    identity = uuid.uuid4().hex
    name = s.viewer_key(identity)
    await claim(s, identity, uuid.uuid4().hex)
    assert VIEW_S * 1000 < await client.pttl(name) <= (VIEW_S + 2) * 1000
    await client.pexpire(name, 5000)
    await claim(s, identity, uuid.uuid4().hex)
    assert await client.pttl(name) > VIEW_S * 1000, "a claim refreshes the viewer's key"
    await client.pexpire(name, 5000)
    await s.find_view(identity, None, session_id=str(uuid.uuid4()), session_ttl_s=SESSION_S)
    assert await client.pttl(name) > SESSION_S * 1000, "an event refreshes it too"


async def test_an_answer_kept_longer_than_the_views_keeps_the_key_that_long(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, _ = store
    identity = uuid.uuid4().hex
    name = s.viewer_key(identity)
    s.put("b", identity, Answer(("1",)), 3600)
    await until(lambda: s.get("b", identity, 3600), what="the answer's write")
    await claim(s, identity, uuid.uuid4().hex)
    assert await client.pttl(name) > 3000 * 1000, "a claim never shortens the key's life"


async def test_an_expired_view_inside_the_hash_is_a_new_view(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, _ = store
    identity, view = uuid.uuid4().hex, uuid.uuid4().hex
    name = s.viewer_key(identity)
    sid, vid, new = await claim(s, identity, view)
    assert new
    assert (await claim(s, identity, view))[1:] == (vid, False), "a later break of the view"
    await client.hset(name, bytes.fromhex(view), expired(sid, vid))
    _, again, new = await claim(s, identity, view)
    assert new and again != vid, "past its idle timeout the view starts anew (a play event)"


async def test_an_expired_session_starts_a_new_one(store: tuple[RedisStore, Any, str]) -> None:
    s, client, _ = store
    identity = uuid.uuid4().hex
    sid, vid, _ = await claim(s, identity, uuid.uuid4().hex)
    await client.hset(s.viewer_key(identity), "s", expired(sid, vid))
    candidate = str(uuid.uuid4())
    got, _, new = await claim(s, identity, uuid.uuid4().hex, sid=candidate)
    assert (got, new) == (candidate, True)


async def test_expired_views_are_pruned_once_a_viewer_has_many(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, _ = store
    identity = uuid.uuid4().hex
    name = s.viewer_key(identity)
    sid, vid, _ = await claim(s, identity, uuid.uuid4().hex)
    for _ in range(12):
        await client.hset(name, uuid.uuid4().bytes, expired(sid, vid))
    await claim(s, identity, uuid.uuid4().hex)
    assert await client.hlen(name) == 3  # the session and the two live views


async def test_a_released_view_is_claimed_as_new_again(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, _, _ = store
    identity, view = uuid.uuid4().hex, uuid.uuid4().hex
    await claim(s, identity, view)
    s.release_view(identity, view)

    async def released() -> bool:
        return (await claim(s, identity, view))[2]

    await until(released, what="the release")


async def test_a_view_redis_lost_but_the_replica_knows_is_not_new(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, _ = store
    identity, view = uuid.uuid4().hex, uuid.uuid4().hex
    sid, _, _ = await claim(s, identity, view)
    await client.delete(s.viewer_key(identity))  # a Redis restart
    got, _, new = await claim(s, identity, view, sid=sid, known=True)
    assert (got, new) == (sid, False)
    assert await client.hexists(s.viewer_key(identity), bytes.fromhex(view))


@given(st.uuids())
def test_ids_are_stored_as_16_bytes_and_read_back_as_given(u: uuid.UUID) -> None:
    text = str(u)
    assert len(pack_id(text)) == 16
    assert unpack_id(pack_id(text)) == text
    upper = text.upper()  # a host's id, as it gave it
    assert unpack_id(pack_id(upper)) == upper.encode()


async def test_an_answer_whose_cohort_set_is_gone_is_a_miss(
    store: tuple[RedisStore, Any, str],
) -> None:
    s, client, prefix = store
    identity = uuid.uuid4().hex
    s.put("b", identity, Answer(("7",), None, "user"), 600)
    await until(lambda: s.get("b", identity, 600), what="the answer's write")
    async for name in client.scan_iter(match=f"{prefix}:p:*"):
        await client.delete(name)  # evicted, or expired first
    assert await s.get("b", identity, 600) is None
    assert await client.hexists(s.viewer_key(identity), "a"), "the reference alone is harmless"
