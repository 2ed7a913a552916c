"""The sandbox over real HTTP: wire errors, validation modes, activations, contextual matching,
and the running handle (counts, bodies, delays, serve_forever)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from plugin.identity import is_uuid4
from plugin.sandbox import (
    SANDBOX_API_KEY,
    default_workspace,
    make_app,
    parse_workspace,
    serve_forever,
    start_sandbox,
)
from plugin.sandbox.engine import Engine
from plugin.sandbox.server import ApiError, parse_events, parse_identity
from tests.helpers.waiting import until

CCS = "/ccs/v1/segmentation"
CTX = "/ctx/v1/segment"
USER = "2008c38f-dece-4570-976d-87593ed001c3"
KEY = {"X-Api-Key": SANDBOX_API_KEY}

Client = TestClient[Any, Any]


def videoview(**props: Any) -> dict[str, Any]:
    return {
        "name": "Videoview",
        "time": "2024-01-15T14:00:00Z",
        "view_id": "a2b3c4d5-e6f7-8901-2345-6789abcdef01",
        "session_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "properties": props or {"video_id": "vid_456", "categories": ["sports", "football"]},
    }


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> Client:
    result: Client = await aiohttp_client(make_app())
    return result


async def assert_error(resp: aiohttp.ClientResponse, status: int, message: str) -> dict[str, Any]:
    """The error body has exactly the documented shape, and its message names the field."""
    assert resp.status == status
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"request_id", "error"}
    assert is_uuid4(body["request_id"])
    err = body["error"]
    assert set(err) <= {"status", "code", "message", "cause", "docs"}
    assert err["status"] == HTTPStatus(status).phrase  # "Bad Request", as Permutive sends it
    assert isinstance(err["code"], int) and err["code"] >= 2000
    assert message in err["message"], err["message"]
    return err  # type: ignore[no-any-return]


# --- authentication -----------------------------------------------------------------------------


async def test_missing_key_is_401(client: Client) -> None:
    resp = await client.post(CCS, json={"user_id": USER, "events": [videoview()]})
    err = await assert_error(resp, 401, "missing API key")
    assert err["code"] == 2001
    resp = await client.post(CTX, json={"url": "https://example.com/"})
    await assert_error(resp, 401, "missing API key")


async def test_unknown_key_is_401_and_not_echoed(client: Client) -> None:
    resp = await client.post(CCS + "?k=s3cret-guess", json={"user_id": USER, "events": []})
    err = await assert_error(resp, 401, "unknown API key")
    assert "s3cret-guess" not in json.dumps(err)
    resp = await client.post(CTX, json={"url": "x"}, headers={"X-Api-Key": "nope"})
    await assert_error(resp, 401, "unknown API key")


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?k=sandbox", {}), ("", KEY), ("?k=wrong", KEY)],
)
async def test_key_in_header_or_query(client: Client, query: str, headers: dict[str, str]) -> None:
    resp = await client.post(
        CCS + query, json={"user_id": USER, "events": [videoview()]}, headers=headers
    )
    assert resp.status == 200
    resp = await client.post(CTX + query, json={"url": "https://example.com/"}, headers=headers)
    assert resp.status == 200


async def test_workspace_keys_are_accepted(aiohttp_client: Callable[..., Any]) -> None:
    ws = parse_workspace('api_keys = ["pub-1"]\n[events.Videoview]\ntitle = "string"\n')
    c: Client = await aiohttp_client(make_app(ws))
    for key in ("pub-1", "sandbox"):
        resp = await c.post(f"{CCS}?k={key}", json={"user_id": USER, "events": [videoview()]})
        assert resp.status == 200
    resp = await c.post(f"{CCS}?k=pub-2", json={"user_id": USER, "events": [videoview()]})
    assert resp.status == 401


# --- CCS request errors -------------------------------------------------------------------------


def _ev(**over: Any) -> dict[str, Any]:
    e = videoview()
    for k, v in over.items():
        if v is _DROP:
            del e[k]
        else:
            e[k] = v
    return e


_DROP = object()

CCS_ERRORS: list[tuple[Any, str]] = [
    ({"user_id": USER, "events": [videoview()] * 11}, "events: expected at most 10 events, got 11"),
    ({"user_id": USER, "events": []}, "events: expected at least 1 event, got 0"),
    ({"user_id": USER}, "events: expected a list of 1 to 10 events, got nothing"),
    ({"user_id": USER, "events": None}, "events: expected a list of 1 to 10 events, got null"),
    ({"user_id": USER, "events": {"name": "x"}}, "events: expected a list of 1 to 10 events"),
    (
        {"user_id": USER, "alias": {"tag": "idfa", "id": "1"}, "events": [videoview()]},
        "identity: expected exactly one of user_id, alias, aliases; got user_id, alias",
    ),
    (
        {
            "alias": {"tag": "idfa", "id": "1"},
            "aliases": [{"tag": "idfa", "id": "1", "priority": 0}],
            "events": [videoview()],
        },
        "got alias, aliases",
    ),
    (
        {"events": [videoview()]},
        "identity: expected exactly one of user_id, alias, aliases; got none",
    ),
    (
        {"user_id": "not-a-uuid", "events": [videoview()]},
        "user_id: expected a UUIDv4 string, got 'not-a-uuid'",
    ),
    (
        {"user_id": str(uuid.uuid1()), "events": [videoview()]},
        "user_id: expected a UUIDv4 string",
    ),
    ({"user_id": None, "events": [videoview()]}, "user_id: expected a UUIDv4 string, got null"),
    (
        {"user_id": USER, "events": [videoview(), videoview(), videoview(), _ev(properties=None)]},
        "events[3].properties: expected an object, got null",
    ),
    (
        {"user_id": USER, "events": [_ev(properties=["a"])]},
        "events[0].properties: expected an object, got a list",
    ),
    (
        {"user_id": USER, "events": [_ev(properties="x")]},
        "events[0].properties: expected an object, got 'x'",
    ),
    (
        {"user_id": USER, "events": [_ev(properties=_DROP)]},
        "events[0].properties: expected an object, got nothing",
    ),
    (
        {"user_id": USER, "events": [_ev(name=_DROP)]},
        "events[0].name: expected a non-empty string, got nothing",
    ),
    (
        {"user_id": USER, "events": [_ev(name="")]},
        "events[0].name: expected a non-empty string, got ''",
    ),
    (
        {"user_id": USER, "events": [_ev(name=7)]},
        "events[0].name: expected a non-empty string, got 7",
    ),
    (
        {"user_id": USER, "events": [_ev(time="yesterday")]},
        "events[0].time: expected an ISO 8601 timestamp string, got 'yesterday'",
    ),
    (
        {"user_id": USER, "events": [_ev(time="2024-13-45T00:00:00Z")]},
        "events[0].time: expected an ISO 8601",
    ),
    (
        {"user_id": USER, "events": [_ev(time=1705327200)]},
        "events[0].time: expected an ISO 8601 timestamp string, got 1705327200",
    ),
    (
        {"user_id": USER, "events": [_ev(time=_DROP)]},
        "events[0].time: expected an ISO 8601 timestamp string, got nothing",
    ),
    (
        {"user_id": USER, "events": [_ev(session_id=None)]},
        "events[0].session_id: expected a non-empty string, got null",
    ),
    (
        {"user_id": USER, "events": [_ev(view_id="")]},
        "events[0].view_id: expected a non-empty string",
    ),
    ({"user_id": USER, "events": ["Videoview"]}, "events[0]: expected an object, got 'Videoview'"),
    (
        {"alias": {"tag": "", "id": "1"}, "events": [videoview()]},
        "alias.tag: expected a non-empty string, got ''",
    ),
    (
        {"alias": {"tag": "idfa", "id": " "}, "events": [videoview()]},
        "alias.id: expected a non-empty string",
    ),
    (
        {"alias": {"tag": "idfa"}, "events": [videoview()]},
        "alias.id: expected a non-empty string, got nothing",
    ),
    ({"alias": "idfa:1", "events": [videoview()]}, "alias: expected an object with tag and id"),
    ({"aliases": [], "events": [videoview()]}, "aliases: expected a non-empty list"),
    (
        {
            "aliases": [
                {"tag": "a", "id": "1", "priority": 0},
                {"tag": "b", "id": "", "priority": 1},
            ],
            "events": [videoview()],
        },
        "aliases[1].id: expected a non-empty string",
    ),
    (
        {
            "aliases": [
                {"tag": "a", "id": "1", "priority": 0},
                {"tag": "b", "id": "2", "priority": 0},
            ],
            "events": [videoview()],
        },
        "aliases[1].priority: priority 0 is also used by aliases[0]",
    ),
    (
        {"aliases": [{"tag": "a", "id": "1"}], "events": [videoview()]},
        "aliases[0].priority: expected an integer >= 0 (0 is highest), got nothing",
    ),
    (
        {"aliases": [{"tag": "a", "id": "1", "priority": -1}], "events": [videoview()]},
        "aliases[0].priority: expected an integer >= 0",
    ),
    (
        {"aliases": [{"tag": "a", "id": "1", "priority": True}], "events": [videoview()]},
        "aliases[0].priority: expected an integer >= 0 (0 is highest), got true",
    ),
    ([{"user_id": USER}], "body: expected a JSON object, got a list"),
]


@pytest.mark.parametrize(("body", "message"), CCS_ERRORS)
async def test_ccs_bad_requests(client: Client, body: Any, message: str) -> None:
    resp = await client.post(CCS, json=body, headers=KEY)
    await assert_error(resp, 400, message)


async def test_invalid_json_is_400(client: Client) -> None:
    for path in (CCS, CTX):
        resp = await client.post(
            path, data=b'{"user_id": ', headers={**KEY, "Content-Type": "application/json"}
        )
        err = await assert_error(resp, 400, "body: expected a JSON object")
        assert err["code"] == 2002
        assert err["cause"]


async def test_a_rejected_request_stores_nothing() -> None:
    async with await start_sandbox() as sb, aiohttp.ClientSession() as s:
        bad = {"alias": {"tag": "idfa", "id": "X"}, "events": [videoview(), _ev(properties=None)]}
        async with s.post(sb.base_url + CCS, json=bad, headers=KEY) as resp:
            assert resp.status == 400
        assert len(sb.state.users) == 0
        assert sb.state.users.lookup_alias("idfa", "X") is None


CTX_ERRORS: list[tuple[Any, str]] = [
    ({}, "url: expected a non-empty string identifying the content, got nothing"),
    ({"url": None}, "url: expected a non-empty string identifying the content, got null"),
    ({"url": 42}, "url: expected a non-empty string identifying the content, got 42"),
    ({"url": ""}, "url: expected a non-empty string"),
    (
        {"url": "https://example.com/", "page_properties": None},
        "page_properties: expected an object, got null",
    ),
    (
        {"url": "https://example.com/", "page_properties": ["video"]},
        "page_properties: expected an object, got a list",
    ),
    ("https://example.com/", "body: expected a JSON object, got 'https://example.com/'"),
]


@pytest.mark.parametrize(("body", "message"), CTX_ERRORS)
async def test_ctx_bad_requests(client: Client, body: Any, message: str) -> None:
    resp = await client.post(CTX + "?k=sandbox", json=body)
    await assert_error(resp, 400, message)


# --- synchronous validation ----------------------------------------------------------------------


async def _ccs(client: Client, query: str, *events: dict[str, Any], user: str = USER) -> Any:
    return await client.post(
        f"{CCS}?k=sandbox&{query}", json={"user_id": user, "events": list(events)}
    )


async def test_schema_mismatch_is_ignored_without_sync_validation(client: Client) -> None:
    resp = await _ccs(client, "", videoview(categories="sports"))
    assert resp.status == 200
    assert (await resp.json())["cohorts"] == []  # not even the "any Videoview" test cohort
    # a valid event in the same request still counts
    resp = await _ccs(client, "", videoview(categories="sports"), videoview(categories=["sports"]))
    assert resp.status == 200
    assert {"10000", "10001"} <= set((await resp.json())["cohorts"])


async def test_schema_mismatch_is_400_with_sync_validation(client: Client) -> None:
    resp = await _ccs(
        client, "synchronous-validation=true", videoview(), videoview(categories="sports")
    )
    err = await assert_error(
        resp,
        400,
        "events[1].properties.categories: expected string[] (schema of Videoview), got 'sports'",
    )
    assert err["code"] == 2003
    # nested property, and a null property (null is never valid: omit it instead)
    page = {
        "name": "Pageview",
        "time": "2024-01-15T14:00:00Z",
        "properties": {"article": {"section": 5}},
    }
    resp = await _ccs(client, "synchronous-validation=true", page)
    await assert_error(
        resp,
        400,
        "events[0].properties.article.section: expected string (schema of Pageview), got 5",
    )
    resp = await _ccs(client, "synchronous-validation=true", videoview(title=None))
    await assert_error(
        resp, 400, "events[0].properties.title: expected string (schema of Videoview), got null"
    )
    # nothing of the rejected requests was kept
    resp = await _ccs(client, "", _ev(name="NotInSchema"))
    assert (await resp.json())["cohorts"] == []


async def test_unknown_event_name(client: Client) -> None:
    resp = await _ccs(client, "synchronous-validation=true", _ev(name="VideoView"))
    err = await assert_error(
        resp, 400, "events[0].name: 'VideoView' is not an event of the workspace schema"
    )
    assert "Videoview" in err["message"]  # lists the known ones
    resp = await _ccs(client, "synchronous-validation=false", _ev(name="VideoView"))
    assert resp.status == 200
    assert (await resp.json())["cohorts"] == []


async def test_undeclared_properties_are_allowed(client: Client) -> None:
    resp = await _ccs(
        client, "synchronous-validation=true", videoview(categories=["x"], extra={"a": 1})
    )
    assert resp.status == 200
    assert "10000" in (await resp.json())["cohorts"]


# --- responses and activations ------------------------------------------------------------------


async def test_verification_flow_of_the_guide(client: Client) -> None:
    """Seed 'Verifying Your Integration': stable user id, test cohort entered, activations."""
    body = {"aliases": [{"tag": "tifa", "id": "a1b2", "priority": 0}], "events": [videoview()]}
    first = await (await client.post(CCS + "?k=sandbox", json=body)).json()
    assert set(first) == {"user_id", "cohorts"}  # no activations unless asked
    assert is_uuid4(first["user_id"])
    assert "10000" in first["cohorts"]
    second = await (await client.post(CCS + "?k=sandbox&activations=true", json=body)).json()
    assert second["user_id"] == first["user_id"]
    acts = second["activations"]
    assert set(acts) == {"freewheel", "dfp", "adswizz_keyvalue"}
    assert (
        "10000" in acts["freewheel"]
        and "10000" in acts["dfp"]
        and "10000" in acts["adswizz_keyvalue"]
    )
    # activations are the workspace's: sports fans (10001) go to dfp and freewheel only
    assert "10001" in second["cohorts"]
    assert "10001" in acts["dfp"] and "10001" in acts["freewheel"]
    assert "10001" not in acts["adswizz_keyvalue"]
    for codes in acts.values():
        assert set(codes) <= set(second["cohorts"])


async def test_activations_only_when_asked(client: Client) -> None:
    for query, present in (("", False), ("activations=false", False), ("activations=true", True)):
        resp = await _ccs(client, query, videoview())
        assert ("activations" in await resp.json()) is present


async def test_new_user_without_cohorts_gets_empty_lists(client: Client) -> None:
    page = {"name": "Pageview", "time": "2024-01-15T14:00:00Z", "properties": {}}
    uid = str(uuid.uuid4())
    resp = await _ccs(client, "activations=true", page, user=uid)
    assert await resp.json() == {"user_id": uid, "cohorts": [], "activations": {}}


async def test_engagement_and_podcast_cohorts(client: Client) -> None:
    done = _ev(
        name="VideoCompletion", properties={"percentage_watched": 0.75, "time_spent_seconds": 450}
    )
    audio = _ev(name="AudioCompletion", properties={"time_spent_seconds": 31})
    resp = await _ccs(client, "synchronous-validation=true", done, audio)
    cohorts = (await resp.json())["cohorts"]
    assert "10003" in cohorts and "10004" in cohorts
    half = _ev(name="VideoCompletion", properties={"percentage_watched": 0.49})
    short = _ev(name="AudioCompletion", properties={"time_spent_seconds": 30})
    resp = await _ccs(client, "", half, short, user=str(uuid.uuid4()))
    cohorts = (await resp.json())["cohorts"]
    assert "10003" not in cohorts and "10004" not in cohorts


# --- contextual -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "page_properties", "expected"),
    [
        ("https://example.com/sport/tennis-final", {}, ["20001"]),
        (
            "https://example.com/shows/pl-highlights/",
            {"video": {"categories": ["sports", "football"]}},
            ["20001", "20003"],
        ),
        ("https://example.com/sport/football/week-20", None, ["20001", "20003"]),
        ("https://example.com/news/election", {}, ["20002"]),
        ("https://example.com/a", {"article": {"section": "news"}}, ["20002"]),
        ("myapp://podcast/1234", {"audio": {"show": "x"}}, ["20004"]),
        ("smartspeaker://station/abc123", {}, ["20005"]),
        ("smartspeaker://station/abc-123", {}, []),
        ("https://example.com/weather", {"video": {"categories": ["tennis"]}}, []),
        ("https://example.com/weather", {"video": {"categories": "motorsports"}}, ["20001"]),
    ],
)
async def test_contextual_matching(
    client: Client, url: str, page_properties: dict[str, Any] | None, expected: list[str]
) -> None:
    body: dict[str, Any] = {"url": url}
    if page_properties is not None:
        body["page_properties"] = {"client": {"url": url, "type": "web"}, **page_properties}
    resp = await client.post(CTX + "?k=sandbox", json=body)
    assert resp.status == 200
    got = await resp.json()
    assert set(got) == {"cohorts", "activations"}
    assert got["cohorts"] == expected
    platforms = {c.code: c.activations for c in default_workspace().contextual}
    want: dict[str, list[str]] = {}
    for code in expected:
        for platform in platforms[code]:
            want.setdefault(platform, []).append(code)
    assert got["activations"] == want


def test_default_contextual_cohorts_go_to_all_three_platforms() -> None:
    for c in default_workspace().contextual[:4]:
        assert set(c.activations) == {"dfp", "freewheel", "adswizz_keyvalue"}


# --- the running handle ---------------------------------------------------------------------------


async def test_sandbox_handle_counts_records_and_closes() -> None:
    sb = await start_sandbox()
    async with sb:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sb.base_url)
        assert sb.ccs_url == sb.ctx_url == sb.base_url
        assert sb.api_key == "sandbox"
        assert sb.delays == {"ccs": 0.0, "ctx": 0.0}
        async with aiohttp.ClientSession() as s:
            await (
                await s.post(
                    sb.base_url + CCS, json={"user_id": USER, "events": [videoview()]}, headers=KEY
                )
            ).read()
            await (
                await s.post(sb.base_url + CCS, json={"events": []})
            ).read()  # 401, still counted
            await (await s.post(sb.base_url + CTX + "?k=sandbox", json={"url": "u"})).read()
            await (await s.post(sb.base_url + CTX + "?k=sandbox", data=b"{nope")).read()
        assert sb.calls == {"ccs": 2, "ctx": 2}
        assert [api for api, _ in sb.bodies] == ["ccs", "ccs", "ctx", "ctx"]
        assert sb.bodies[0][1]["user_id"] == USER
        assert sb.bodies[2][1] == {"url": "u"}
        assert sb.bodies[3][1] == "{nope"  # undecodable bodies are kept as text
        assert sb.state.users.get(USER) is not None
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as s:
            await s.post(sb.base_url + CTX + "?k=sandbox", json={"url": "u"})


async def test_recorded_bodies_are_bounded() -> None:
    async with await start_sandbox() as sb, aiohttp.ClientSession() as s:
        sb.state.max_bodies = 3
        for i in range(5):
            async with s.post(sb.base_url + CTX + "?k=sandbox", json={"url": f"u{i}"}) as r:
                assert r.status == 200
        assert [b["url"] for _, b in sb.bodies] == ["u2", "u3", "u4"]
        assert sb.calls["ctx"] == 5


async def test_delays_hold_the_answer_back() -> None:
    async with await start_sandbox() as sb, aiohttp.ClientSession() as s:
        sb.delays["ctx"] = 0.5
        with pytest.raises(asyncio.TimeoutError):
            async with s.post(
                sb.base_url + CTX + "?k=sandbox",
                json={"url": "https://example.com/sport/x"},
                timeout=aiohttp.ClientTimeout(total=0.05),
            ) as r:
                await r.read()
        # the other API is not delayed, and the delayed one still answers correctly
        async with s.post(
            sb.base_url + CCS, json={"user_id": USER, "events": [videoview()]}, headers=KEY
        ) as r:
            assert r.status == 200
        sb.delays["ctx"] = 0.0
        async with s.post(
            sb.base_url + CTX + "?k=sandbox", json={"url": "https://example.com/sport/x"}
        ) as r:
            assert (await r.json())["cohorts"] == ["20001"]


async def _listening_line(caplog: pytest.LogCaptureFixture) -> str:
    """The sandbox's start line (a log line: JSON with `[log] json`, like every other)."""

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "cohortkv.sandbox"]

    await until(said, what="the sandbox's listening line")
    return said()[0]


async def test_serve_forever_logs_url_and_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cohortkv.sandbox")
    task = asyncio.create_task(serve_forever("127.0.0.1", 0, None))
    try:
        line = await _listening_line(caplog)
        m = re.search(r"(http://127\.0\.0\.1:\d+) \(api key: sandbox\)", line)
        assert m, line
        async with (
            aiohttp.ClientSession() as s,
            s.post(m.group(1) + CTX + "?k=sandbox", json={"url": "myapp://podcast/1"}) as r,
        ):
            assert (await r.json())["cohorts"] == ["20004"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_serve_forever_with_a_workspace_file(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cohortkv.sandbox")
    f = tmp_path / "ws.toml"
    f.write_text(
        'api_keys = ["mine"]\n[[contextual]]\ncode = "c1"\nname = "all"\nurl_regex = "."\n'
    )
    task = asyncio.create_task(serve_forever("127.0.0.1", 0, str(f)))
    try:
        line = await _listening_line(caplog)
        m = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert m, line
        async with (
            aiohttp.ClientSession() as s,
            s.post(m.group(1) + CTX + "?k=mine", json={"url": "x"}) as r,
        ):
            assert (await r.json())["cohorts"] == ["c1"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- the request decoder never fails with anything but a named 400 --------------------------------

FIELDS = ["name", "time", "properties", "session_id", "view_id", "tag", "id", "priority"]
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 12)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=11)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.sampled_from([USER, "x", None, 1]),
        "alias": _json,
        "aliases": _json,
        "events": st.lists(_json | st.just(videoview()), max_size=11) | _json,
    },
)


@given(body=_bodies)
def test_ccs_decoder_accepts_or_names_the_field(body: dict[str, Any]) -> None:
    engine = Engine(default_workspace())
    try:
        identity = parse_identity(body)
        events = parse_events(body)
    except ApiError as e:
        assert e.status == 400
        assert re.match(r"^(identity|user_id|alias|aliases|events)[\[\].\w]*: ", e.message)
        return
    assert (identity.user_id is None) != (not identity.aliases)
    assert 1 <= len(events) <= 10
    for i, ev in enumerate(events):
        problem = engine.check_event(ev.name, ev.properties, f"events[{i}]")
        assert problem is None or problem.startswith(f"events[{i}].")


async def test_this_session_is_the_session_of_the_current_request(client: Client) -> None:
    """A user read news in an old session: a request from a new session, or one naming no
    session, is not "this session" (cohort 10005, News readers this session)."""

    def pageview(session: str | None) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "name": "Pageview",
            "time": "2024-01-15T14:00:00Z",
            "properties": {"article": {"section": "news"}},
        }
        if session is not None:
            ev["session_id"] = session
        return ev

    old, new = str(uuid.uuid4()), str(uuid.uuid4())

    async def cohorts(events: list[dict[str, Any]]) -> list[str]:
        resp = await client.post(CCS, json={"user_id": USER, "events": events}, headers=KEY)
        assert resp.status == 200, await resp.text()
        got: list[str] = (await resp.json())["cohorts"]
        return got

    assert "10005" in await cohorts([pageview(old)])
    assert "10005" in await cohorts([{**videoview(), "session_id": old}])
    assert "10005" not in await cohorts([{**videoview(), "session_id": new}])
    assert "10005" not in await cohorts([videoview()])  # yet another session
    no_session = {k: v for k, v in videoview().items() if k != "session_id"}
    assert "10005" not in await cohorts([no_session])  # a request naming no session
    assert "10005" in await cohorts([{**videoview(), "session_id": old}])  # the old one again
