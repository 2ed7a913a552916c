"""`POST /v1/enrich` and `POST /v1/events` over loopback, against the fake Permutive APIs."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plugin.commands.cli import main as cli_main
from tests.helpers.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.times import recent
from tests.helpers.waiting import until

GAM = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&output=vast"
    "&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"
)
USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
ROOT = Path(__file__).resolve().parent.parent
GRANTED = {"granted": True}


async def post(r: Running, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = await r.client.post(path, data=data, headers={"Content-Type": "application/json"})
    return resp.status, await resp.json()


def event(t: str, name: str = "Videoview", **props: Any) -> dict[str, Any]:
    return {"name": name, "time": t, "properties": {"video_id": "v1", **props}}


# -- /v1/enrich ---------------------------------------------------------------------------------


async def test_enrich_answers_like_the_cli_json(side: Running, fake: FakePermutive) -> None:
    body = {"url": GAM, "context": {"identity": {"user_id": USER}, "consent": GRANTED}}
    status, doc = await post(side, "/v1/enrich", body)

    assert status == 200
    out = io.StringIO()
    with redirect_stdout(out):
        rc = await asyncio.to_thread(
            cli_main,
            [
                "enrich",
                GAM,
                "--json",
                "--user-id",
                USER,
                "--consent",
                "granted",
                "--api-key",
                API_KEY,
                "--ccs-url",
                fake.url,
                "--ctx-url",
                fake.url,
            ],
        )
    assert rc == 0
    cli = json.loads(out.getvalue())
    for varying in ("elapsed_ms",):
        doc.pop(varying)
        cli.pop(varying)
    assert doc == cli
    assert doc["keyvalues"] == {"permutive": ["12345", "67890", "99999"]}
    assert doc["url"].endswith("&cust_params=permutive%3D12345%2C67890%2C99999")
    assert doc["consent"] == {"allowed": True, "reason": "override_granted"}


async def test_enrich_omits_null_platform_and_user_id(side: Running) -> None:
    status, doc = await post(side, "/v1/enrich", {"url": "https://unknown.example/x?y=1"})
    assert status == 200
    assert doc["url"] == "https://unknown.example/x?y=1"
    assert "platform" not in doc and "user_id" not in doc


async def test_enrich_names_each_bad_field(side: Running, fake: FakePermutive) -> None:
    body = {
        "url": 7,
        "platform": "dfp",
        "extra": True,
        "context": {
            "identity": {"user_id": "not-a-uuid"},
            "consent": {"granted": "yes", "gdpr": 1},
            "content": {"url": "", "properties": []},
        },
    }
    status, doc = await post(side, "/v1/enrich", body)
    assert status == 400
    assert doc["error"] == "invalid request"
    fields = {f["field"]: f["expected"] for f in doc["fields"]}
    assert fields == {
        "url": "an ad request URL",
        "extra": "no such field (one of: body, context, method, platform, url)",
        "context.identity.user_id": "a UUIDv4",
        "context.consent.granted": "a boolean",
        "context.consent.gdpr": "a boolean",
        "context.content.url": "a non-empty string",
        "context.content.properties": "an object (null values are left out, as if absent)",
    }
    assert sum(fake.calls.values()) == 0


async def test_enrich_semantic_errors_are_named_too(side: Running) -> None:
    body = {
        "url": GAM,
        "platform": "dfp",
        "context": {
            "identity": {"alias": {"tag": "idfa", "id": "x"}, "user_id": USER},
            "consent": {"granted": True, "gdpr": True},
        },
    }
    status, doc = await post(side, "/v1/enrich", body)
    assert status == 400
    fields = {f["field"]: f["expected"] for f in doc["fields"]}
    assert fields == {
        "platform": "one of: adswizz, auto, freewheel, gam, openrtb, query",
        "context.identity": "exactly one of user_id, alias, aliases",
        "context.consent": "either granted, or raw signals (gdpr, tc_string, ...), not both",
    }


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        (
            b"{not json",
            "body",
            "a JSON object (JSON is malformed: object keys must be strings (byte 1))",
        ),
        (b'{"url": 1e999}', "body", "a JSON object (Number out of range - at `$[...]`)"),
        (b"[]", "body", "an object"),
        (b"{}", "url", "a value (required)"),
        (
            b'{"url": "x", "context": {"identity": {"aliases": [{"tag": "a", "id": "1"}]}}}',
            "context.identity.aliases[0].priority",
            "an integer >= 0, unique",
        ),
        (
            b'{"url": "x", "context": {"identity": {"aliases": [{"tag": " ", "id": "1"}]}}}',
            "context.identity.aliases[0].tag",
            "a non-blank string",
        ),
        (
            b'{"url": "x", "context": {"consent": {"gpp_sid": [2, "a"]}}}',
            "context.consent.gpp_sid[1]",
            "an integer",
        ),
        (
            b'{"url": "x", "context": {"consent": {"us_privacy": "%s"}}}' % (b"1" * 65),
            "context.consent.us_privacy",
            "a string of at most 64 characters",
        ),
        (
            b'{"url": "x", "context": {"consent": {"gpp_sid": [%s]}}}' % b",".join([b"2"] * 65),
            "context.consent.gpp_sid",
            "an array of at most 64 items",
        ),
        (b'{"url": "x", "method": "PUT"}', "method", "one of: GET, POST"),
    ],
)
async def test_enrich_bad_bodies(side: Running, raw: bytes, field: str, expected: str) -> None:
    status, doc = await post(side, "/v1/enrich", raw)
    assert status == 400
    assert {"field": field, "expected": expected} in doc["fields"]


async def test_enrich_raw_consent_signals_go_to_the_gate(
    side: Running, fake: FakePermutive
) -> None:
    body = {
        "url": GAM,
        "context": {"identity": {"user_id": USER}, "consent": {"gdpr": False}},
    }
    status, doc = await post(side, "/v1/enrich", body)
    assert status == 200
    assert doc["consent"] == {"allowed": True, "reason": "gdpr_not_applicable"}
    assert fake.calls["ccs"] == 1


# -- /v1/events ---------------------------------------------------------------------------------


async def test_events_are_delivered_in_order_in_batches_of_ten(
    side: Running, fake: FakePermutive
) -> None:
    times = [recent(m) for m in range(25)]
    shuffled = times[13:] + times[:13]
    body = {
        "identity": {"alias": {"tag": "idfa", "id": "DEV-1"}},
        "consent": GRANTED,
        "events": [event(t) for t in shuffled],
    }
    status, doc = await post(side, "/v1/events", body)
    assert (status, doc) == (202, {"accepted": 25, "reason": "override_granted"})

    await until(lambda: side.sample("cohortkv_events_total", state="sent") == 25)
    batches = [c["body"] for c in fake.bodies["ccs"]]
    assert [len(b["events"]) for b in batches] == [10, 10, 5]
    assert [e["time"] for b in batches for e in b["events"]] == times
    assert all(b["alias"] == {"tag": "idfa", "id": "DEV-1"} for b in batches)
    assert side.sample("cohortkv_events_total", state="queued") == 25
    assert side.sample("cohortkv_events_queue_depth") == 0


async def test_a_retry_refused_by_the_open_breaker_waits_instead_of_using_up_the_tries(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    """One failure opens the breaker; the batch's second and last try comes while it is open.
    Nothing went out, so the try is not spent: the batch waits for the breaker's probe and is
    delivered once the API is back."""
    from plugin.config import HttpConfig

    http = HttpConfig(breaker_failures=1, breaker_open_s=0.5, breaker_max_open_s=0.5)
    cfg = sidecar_config(
        fake, ads, events_max_attempts=2, events_backoff_ms=10, events_backoff_max_ms=20
    ).with_overrides(http=http)
    fake.replies["ccs"] = [503]  # then the API recovers
    body = {"identity": {"user_id": USER}, "consent": GRANTED, "events": [event(recent(1))]}
    async with running(cfg) as side:
        status, _ = await post(side, "/v1/events", body)
        assert status == 202
        await until(
            lambda: (
                side.sample("cohortkv_events_total", state="sent") == 1
                or side.total("cohortkv_events_dropped_total") > 0
            )
        )
        refused = side.sample("cohortkv_upstream_errors_total", api="ccs", kind="breaker_open")
        assert side.total("cohortkv_events_dropped_total") == 0
        assert side.sample("cohortkv_events_total", state="sent") == 1
    assert refused >= 1  # the breaker did refuse a try
    assert [c["status"] for c in fake.bodies["ccs"]] == [503, 200]


async def test_completion_event_shares_the_view_of_the_proxied_play_event(
    side: Running, fake: FakePermutive
) -> None:
    content = "https://example.com/v/7"
    target = (
        "/proxy/gam/gampad/ads?iu=/1/x&description_url=https%3A%2F%2Fexample.com%2Fv%2F7"
        f"&cohortkv_sid=mt-session-1&cohortkv_uid={USER}&cohortkv_consent=granted"
    )
    resp = await side.client.get(target)
    assert resp.status == 200
    body = {
        "identity": {"user_id": USER},
        "consent": GRANTED,
        "ssai_session_id": "mt-session-1",
        "content_url": content,
        "events": [
            event(
                recent(7, 30),
                "VideoCompletion",
                time_spent_seconds=450,
                percentage_watched=0.75,
            )
        ],
    }
    status, _ = await post(side, "/v1/events", body)
    assert status == 202
    await until(lambda: fake.calls["ccs"] == 2)
    play, completion = (c["body"]["events"][0] for c in fake.bodies["ccs"])
    assert play["name"] == "Videoview" and completion["name"] == "VideoCompletion"
    assert completion["view_id"] == play["view_id"]
    assert completion["session_id"] == play["session_id"]
    assert completion["properties"]["percentage_watched"] == 0.75


async def test_given_ids_are_kept_or_mapped_to_uuids_and_nulls_left_out(
    side: Running, fake: FakePermutive
) -> None:
    view = str(uuid.uuid4())
    ev = event(recent(0), genre=None, tags=["a", None], meta={"x": None, "y": 1})
    body = {
        "identity": {"user_id": USER},
        "consent": GRANTED,
        "session_id": "player-session-9",
        "events": [{**ev, "view_id": view}],
    }
    await post(side, "/v1/events", body)
    await until(lambda: fake.calls["ccs"] == 1)
    (sent,) = fake.bodies["ccs"][0]["body"]["events"]
    assert sent["view_id"] == view
    assert uuid.UUID(sent["session_id"]).version == 5
    assert sent["properties"] == {"video_id": "v1", "tags": ["a"], "meta": {"y": 1}}


async def test_events_names_each_bad_field(side: Running, fake: FakePermutive) -> None:
    body = {
        "identity": {"user_id": USER, "alias": {"tag": "idfa", "id": "x"}},
        "consent": GRANTED,
        "events": [
            {"name": "", "time": "yesterday", "properties": {}},
            event(recent(0), percentage_watched=1.5, time_spent_seconds=-1),
            {"time": recent(0), "properties": {"percentage_watched": "half"}},
        ],
    }
    status, doc = await post(side, "/v1/events", body)
    assert status == 400
    fields = {f["field"]: f["expected"] for f in doc["fields"]}
    assert fields == {
        "events[0].name": "a non-blank string",
        "events[2].name": "a value (required)",
    }
    # Structure first; once it is right the rules are checked, each named.
    events: list[dict[str, Any]] = body["events"]  # type: ignore[assignment]
    events[0]["name"] = events[2]["name"] = "Videoview"
    status, doc = await post(side, "/v1/events", body)
    fields = {f["field"]: f["expected"] for f in doc["fields"]}
    assert fields == {
        "identity": "exactly one of user_id, alias, aliases",
        "events[0].time": "an RFC 3339 date-time with a time zone, e.g. 2024-01-15T14:00:00Z",
        "events[1].properties.time_spent_seconds": "a number >= 0",
        "events[1].properties.percentage_watched": "a number from 0 to 1",
        "events[2].properties.percentage_watched": "a number from 0 to 1",
    }
    assert sum(fake.calls.values()) == 0


async def test_events_without_consent_are_counted_and_never_queued(
    side: Running, fake: FakePermutive
) -> None:
    body = {"identity": {"user_id": USER}, "events": [event(recent(0))]}
    status, doc = await post(side, "/v1/events", body)
    assert (status, doc) == (202, {"accepted": 0, "reason": "no_signal"})
    status, doc = await post(side, "/v1/events", {**body, "consent": {"gdpr": True}})
    assert (status, doc) == (202, {"accepted": 0, "reason": "tcf_missing"})
    assert side.sample("cohortkv_events_total", state="unconsented") == 2
    assert side.sample("cohortkv_events_total", state="queued") == 0
    await asyncio.sleep(0)
    assert fake.calls["ccs"] == 0


async def test_full_queue_refuses_with_503_and_counts(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    fake.delay["ccs"] = 1.0
    async with running(sidecar_config(fake, ads, events_queue_max=3, events_workers=1)) as side:
        one = {"identity": {"user_id": USER}, "consent": GRANTED}
        status, _ = await post(side, "/v1/events", {**one, "events": [event(recent(0))] * 3})
        assert status == 202
        status, doc = await post(side, "/v1/events", {**one, "events": [event(recent(1))]})
        assert status == 503
        assert doc == {"error": "event queue full", "limit": 3}
        assert side.sample("cohortkv_events_dropped_total", reason="queue_full") == 1
        assert side.sample("cohortkv_events_total", state="dropped") == 1
        assert side.sample("cohortkv_events_queue_depth") == 3


async def test_5xx_is_retried_until_delivered(fake: FakePermutive, ads: FakeAdServer) -> None:
    fake.status["ccs"] = 503
    cfg = sidecar_config(fake, ads, events_backoff_ms=1, events_backoff_max_ms=5)
    async with running(cfg) as side:
        body = {"identity": {"user_id": USER}, "consent": GRANTED}
        await post(side, "/v1/events", {**body, "events": [event(recent(0))] * 2})
        await until(lambda: fake.calls["ccs"] >= 3)
        fake.status["ccs"] = 200
        await until(lambda: side.sample("cohortkv_events_total", state="sent") == 2)
        assert side.sample("cohortkv_events_total", state="retried") >= 4
        assert side.sample("cohortkv_events_total", state="dropped") == 0


async def test_4xx_is_dropped_without_retry(fake: FakePermutive, ads: FakeAdServer) -> None:
    fake.status["ccs"] = 400
    async with running(sidecar_config(fake, ads, events_backoff_ms=1)) as side:
        body = {"identity": {"user_id": USER}, "consent": GRANTED}
        await post(side, "/v1/events", {**body, "events": [event(recent(0))] * 2})
        await until(lambda: side.sample("cohortkv_events_total", state="dropped") == 2)
        assert fake.calls["ccs"] == 1
        assert side.sample("cohortkv_events_dropped_total", reason="rejected") == 2
        assert side.sample("cohortkv_events_total", state="retried") == 0


async def test_retries_give_up_after_max_attempts(fake: FakePermutive, ads: FakeAdServer) -> None:
    fake.status["ccs"] = 503
    cfg = sidecar_config(
        fake, ads, events_backoff_ms=1, events_backoff_max_ms=2, events_max_attempts=3
    )
    async with running(cfg) as side:
        body = {"identity": {"user_id": USER}, "consent": GRANTED}
        await post(side, "/v1/events", {**body, "events": [event(recent(0))]})
        await until(lambda: side.sample("cohortkv_events_dropped_total", reason="exhausted") == 1)
        assert fake.calls["ccs"] == 3
        assert side.sample("cohortkv_events_total", state="retried") == 2


async def test_the_events_example_in_the_docs_is_accepted_when_pasted(side: Running) -> None:
    """docs/sidecar.md's `/v1/events` example, with its shell `date` run as the shell would:
    the sidecar accepts it, today and every day."""
    text = (ROOT / "docs" / "sidecar.md").read_text(encoding="utf-8")
    section = text[text.index("## `POST /v1/events`") :]
    start = section.index("```sh\n") + 6
    block = section[start : section.index("\n```", start)]
    payload = block[block.index("-d '") + 4 : block.rindex("'")]
    date = "'\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"'"
    assert date in payload, "the example no longer writes the current time"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # what `date -u +...` prints
    status, doc = await post(side, "/v1/events", json.loads(payload.replace(date, now)))
    assert (status, doc) == (202, {"accepted": 1, "reason": "override_granted"})
    # The guide's own example time is refused, as the docs say.
    old = json.loads(payload.replace(date, "2024-01-15T14:07:30Z"))
    status, doc = await post(side, "/v1/events", old)
    assert status == 400 and doc["fields"][0]["field"] == "events[0].time"
