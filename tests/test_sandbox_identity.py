"""Identity resolution as the Direct API guide describes it, over HTTP, plus the store's bounds."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from plugin.identity import is_uuid4
from plugin.sandbox import make_app
from plugin.sandbox.server import STATE
from plugin.sandbox.users import UserStore

CCS = "/ccs/v1/segmentation?k=sandbox"
VIDEO_ONLY = "10000"  # "Verification: any Videoview or AudioPlay" in the default workspace

Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> Client:
    result: Client = await aiohttp_client(make_app())
    return result


def video() -> dict[str, Any]:
    return {"name": "Videoview", "time": "2024-01-15T14:00:00Z", "properties": {"title": "t"}}


def page() -> dict[str, Any]:
    return {"name": "Pageview", "time": "2024-01-15T14:00:00Z", "properties": {}}


def aliases(*items: tuple[str, str, int]) -> dict[str, Any]:
    return {"aliases": [{"tag": t, "id": i, "priority": p} for t, i, p in items]}


async def send(client: Client, identity: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(CCS, json={**identity, "events": [event]})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_same_alias_same_user(client: Client) -> None:
    a = await send(client, {"alias": {"tag": "idfa", "id": "6D92078A"}}, page())
    b = await send(client, {"alias": {"tag": "idfa", "id": "6D92078A"}}, page())
    assert is_uuid4(a["user_id"]) and a["user_id"] == b["user_id"]
    # `alias` and a one-element `aliases` are the same identifier
    c = await send(client, aliases(("idfa", "6D92078A", 3)), page())
    assert c["user_id"] == a["user_id"]
    # another tag with the same id, or another id, is another user
    d = await send(client, {"alias": {"tag": "aaid", "id": "6D92078A"}}, page())
    e = await send(client, {"alias": {"tag": "idfa", "id": "6D92078B"}}, page())
    assert len({a["user_id"], d["user_id"], e["user_id"]}) == 3


async def test_given_user_id_is_that_user_and_history_accumulates(client: Client) -> None:
    uid = str(uuid.uuid4())
    first = await send(client, {"user_id": uid}, page())
    assert first == {"user_id": uid, "cohorts": []}
    second = await send(client, {"user_id": uid}, video())
    assert second["user_id"] == uid and VIDEO_ONLY in second["cohorts"]
    third = await send(client, {"user_id": uid}, page())  # earlier events still count
    assert VIDEO_ONLY in third["cohorts"]
    other = await send(client, {"user_id": str(uuid.uuid4())}, page())
    assert VIDEO_ONLY not in other["cohorts"]


async def test_highest_priority_known_alias_wins_and_history_is_not_merged(client: Client) -> None:
    # user A is known through alias x and has watched a video
    a = await send(client, aliases(("email_sha256", "x", 1)), video())
    assert VIDEO_ONLY in a["cohorts"]
    # user B is known through alias y and has only read pages
    b = await send(client, aliases(("idfa", "y", 1)), page())
    assert b["user_id"] != a["user_id"] and VIDEO_ONLY not in b["cohorts"]
    # both known: y has the higher priority (0), so B; A's video does not come along
    both = await send(client, aliases(("email_sha256", "x", 1), ("idfa", "y", 0)), page())
    assert both["user_id"] == b["user_id"]
    assert VIDEO_ONLY not in both["cohorts"]
    # from now on x resolves to B as well
    x_only = await send(client, aliases(("email_sha256", "x", 0)), page())
    assert x_only["user_id"] == b["user_id"]
    assert VIDEO_ONLY not in x_only["cohorts"]
    # A's history stays under A's user id
    again_a = await send(client, {"user_id": a["user_id"]}, page())
    assert VIDEO_ONLY in again_a["cohorts"]


async def test_unknown_higher_priority_alias_joins_the_known_user(client: Client) -> None:
    known = await send(client, {"alias": {"tag": "idfa", "id": "dev-1"}}, video())
    # the login (priority 0) is new, the device (priority 1) is known: the device's user
    both = await send(client, aliases(("email_sha256", "login", 0), ("idfa", "dev-1", 1)), page())
    assert both["user_id"] == known["user_id"]
    assert VIDEO_ONLY in both["cohorts"]  # same user, so its history counts
    login_only = await send(client, {"alias": {"tag": "email_sha256", "id": "login"}}, page())
    assert login_only["user_id"] == known["user_id"]


async def test_no_alias_known_makes_one_new_user_for_all(client: Client) -> None:
    first = await send(client, aliases(("email_sha256", "p", 0), ("idfa", "q", 1)), video())
    q_only = await send(client, {"alias": {"tag": "idfa", "id": "q"}}, page())
    p_only = await send(client, {"alias": {"tag": "email_sha256", "id": "p"}}, page())
    assert first["user_id"] == q_only["user_id"] == p_only["user_id"]
    assert VIDEO_ONLY in p_only["cohorts"]


async def test_events_are_stored_under_the_resolved_user(client: Client) -> None:
    body = await send(client, {"alias": {"tag": "idfa", "id": "z"}}, video())
    users = client.app[STATE].users
    user = users.get(body["user_id"])
    assert user is not None
    assert [e.name for e in user.events()] == ["Videoview"]
    assert users.lookup_alias("idfa", "z") == body["user_id"]


# --- the reference model of resolution ----------------------------------------------------

POOL = [
    ("email_sha256", "e1"),
    ("email_sha256", "e2"),
    ("idfa", "d1"),
    ("idfa", "d2"),
    ("tifa", "t"),
]

requests = st.lists(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True).flatmap(
        lambda chosen: st.permutations(list(range(len(chosen)))).map(
            lambda prios: [(t, i, p) for (t, i), p in zip(chosen, prios, strict=True)]
        )
    ),
    min_size=1,
    max_size=12,
)


@given(requests)
def test_resolution_matches_the_documented_model(reqs: list[list[tuple[str, str, int]]]) -> None:
    store = UserStore()
    model: dict[tuple[str, str], int] = {}  # alias -> model user number
    model_users = 0
    seen: dict[int, str] = {}  # model user number -> store user id
    for req in reqs:
        user = next(
            (model[(t, i)] for t, i, _ in sorted(req, key=lambda a: a[2]) if (t, i) in model),
            None,
        )
        if user is None:
            user = model_users
            model_users += 1
        for t, i, _ in req:
            model[(t, i)] = user
        got = store.resolve_aliases(req)
        if user in seen:
            assert got == seen[user]
        else:
            assert got not in seen.values()
            seen[user] = got
    assert len(set(seen.values())) == model_users


# --- bounds ---------------------------------------------------------------------------------


def test_least_recently_used_users_are_forgotten() -> None:
    store = UserStore(max_users=3)
    for uid in ("a", "b", "c"):
        store.user(uid)
    store.user("a")  # touch: b is now the oldest
    store.user("d")
    assert store.get("b") is None
    assert all(store.get(u) is not None for u in ("a", "c", "d"))
    assert len(store) == 3


def test_events_per_user_are_bounded_oldest_first() -> None:
    store = UserStore(max_events=4)
    u = store.user("u")
    for i, name in enumerate(["A", "B", "A", "C", "B", "A"]):
        store.add_event(u, name, float(i), {"i": i})
    assert [e.properties["i"] for e in u.events()] == [2, 3, 4, 5]
    assert u.size == 4 and sum(len(v) for v in u.by_name.values()) == 4


def test_aliases_are_bounded_and_forgotten_users_keep_their_id() -> None:
    store = UserStore(max_users=1, max_aliases=2)
    first = store.resolve_aliases([("idfa", "1", 0)])
    u = store.user(first)
    store.add_event(u, "Videoview", 0.0, {})
    second = store.resolve_aliases([("idfa", "2", 0)])
    store.user(second)  # pushes the first user out
    assert store.get(first) is None
    # the alias still resolves to the same id, with an empty history
    assert store.resolve_aliases([("idfa", "1", 0)]) == first
    assert store.user(first).events() == []
    store.resolve_aliases([("idfa", "3", 0)])  # now alias 2 is the least recently used
    assert store.lookup_alias("idfa", "2") is None
    assert store.resolve_aliases([("idfa", "2", 0)]) != second
