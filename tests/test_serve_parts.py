"""The sidecar's parts on their own: reserved-parameter removal, path safety, body decoding,
the error window and the event queue."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from plugin.identity import Identity
from plugin.permutive.clients import UpstreamError
from plugin.permutive.wire import Event
from plugin.reserved import CONFLICT, split_reserved
from plugin.serve.bodies import EnrichBody, EventsBody
from plugin.serve.delivery import RetryPolicy
from plugin.serve.events import MemoryQueue
from plugin.serve.health import ErrorWindow
from plugin.serve.metrics import ServeMetrics
from plugin.serve.proxy import safe_path
from plugin.serve.validate import BodyError, decode
from plugin.tracking import Prepared
from tests.helpers.times import recent

# -- reserved parameters ------------------------------------------------------------------------

plain = st.text(alphabet="abcxyz_=%2CF.-+[]|09", max_size=12).filter(
    lambda f: not f.startswith("cohortkv_")
)
reserved = st.builds(
    lambda name, value: f"cohortkv_{name}={value}",
    st.sampled_from(["sid", "uid", "consent", "content_url", "vid", "other"]),
    st.text(alphabet="abc-%2F09", max_size=8),
)
sections = st.lists(st.lists(st.one_of(plain, reserved), max_size=6), min_size=1, max_size=4)


@given(sections)
def test_reserved_fields_are_removed_and_nothing_else_moves(secs: list[list[str]]) -> None:
    query = ";".join("&".join(fields) for fields in secs)
    out, found = split_reserved(query)
    kept = [[f for f in fields if not f.startswith("cohortkv_")] for fields in secs]
    assert out == ";".join("&".join(fields) for fields in kept)
    assert "cohortkv_" not in out.replace("=cohortkv_", "")
    names = [f.partition("=")[0] for fields in secs for f in fields if f.startswith("cohortkv_")]
    assert set(found) == set(names)


@pytest.mark.parametrize(
    ("query", "out", "found"),
    [
        ("a=1&cohortkv_sid=s%2F1&b=2", "a=1&b=2", {"cohortkv_sid": "s/1"}),
        ("cohortkv_sid=1", "", {"cohortkv_sid": "1"}),
        ("a;cohortkv_sid=1;b", "a;;b", {"cohortkv_sid": "1"}),
        ("a=1;cohortkv_sid=1&k=v;", "a=1;k=v;", {"cohortkv_sid": "1"}),
        # given twice, differently: a conflict, never either value
        (
            "x=cohortkv_sid&cohortkv_uid=u&cohortkv_uid=v",
            "x=cohortkv_sid",
            {"cohortkv_uid": CONFLICT},
        ),
    ],
)
def test_reserved_examples(query: str, out: str, found: dict[str, str]) -> None:
    assert split_reserved(query) == (out, found)


def test_a_query_without_reserved_fields_is_returned_as_is() -> None:
    query = "iu=/1/x&cust_params=a%3Db"
    assert split_reserved(query)[0] is query


# -- path safety --------------------------------------------------------------------------------

segment = st.text(alphabet="abz09-_~%2F", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)
dots = st.sampled_from([".", "..", "%2e", "%2E%2e", ".%2E", "%2e.", "a%2f..", "..%5c"])


@given(st.lists(segment, max_size=5))
def test_paths_without_dot_segments_are_safe(segs: list[str]) -> None:
    path = "/" + "/".join(segs)
    from urllib.parse import unquote

    assert safe_path(path) == all(s not in (".", "..") for s in unquote(path).split("/"))


@given(st.lists(segment, max_size=3), dots, st.lists(segment, max_size=3))
def test_dot_segments_are_refused_however_encoded(a: list[str], d: str, b: list[str]) -> None:
    assert not safe_path("/" + "/".join([*a, d, *b]))


# -- body decoding ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_decode_never_raises_anything_but_a_named_body_error(raw: bytes) -> None:
    for tp in (EnrichBody, EventsBody):
        try:
            decode(raw, tp)
        except BodyError as e:
            assert e.fields and all(f.field and f.expected for f in e.fields)


def test_every_wrong_field_is_named_once() -> None:
    raw = json.dumps(
        {
            "identity": {"user_id": 1, "alias": {"tag": ""}},
            "events": [{"name": 1, "time": None, "properties": [], "view_id": ""}, 7],
            "extra": 1,
        }
    ).encode()
    with pytest.raises(BodyError) as e:
        decode(raw, EventsBody)
    assert [(f.field, f.expected) for f in e.value.fields] == [
        ("extra", "no such field (one of: consent, content_url, events, identity, "
         "session_id, ssai_session_id, view_id)"),
        ("identity.user_id", "a UUIDv4"),
        ("identity.alias.tag", "a non-blank string"),
        ("identity.alias.id", "a value (required)"),
        ("events[0].name", "a non-blank string"),
        ("events[0].time", "an ISO 8601 timestamp"),
        ("events[0].properties", "an object (null values are left out, as if absent)"),
        ("events[0].view_id", "a non-empty string"),
        ("events[1]", "an object"),
    ]  # fmt: skip


# -- error window -------------------------------------------------------------------------------


def test_error_window_ages_failures_out() -> None:
    now = [1000.0]
    w = ErrorWindow(60.0, clock=lambda: now[0])
    for _ in range(6):
        w.record(True)
    w.record(False)
    assert w.counts() == (7, 6) and w.degraded(0.5)
    now[0] += 30
    assert w.degraded(0.5)
    now[0] += 31
    assert w.counts() == (0, 0) and not w.degraded(0.5)
    for _ in range(4):
        w.record(True)
    assert not w.degraded(0.5)  # too few requests to say


# -- event queue --------------------------------------------------------------------------------


def ev(t: int) -> Event:
    return Event(name="e", time=recent(0, t), properties={})


class Recorder:
    def __init__(self, **fail: list[UpstreamError]) -> None:
        self.batches: list[tuple[str, list[str]]] = []
        self.calls: Counter[str] = Counter()
        self.fail = fail
        """Per user id, the failures its next calls meet."""
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, prepared: Prepared) -> Any:
        identity, events = prepared.identity, prepared.events
        await self.gate.wait()
        user = identity.user_id or ""
        self.calls[user] += 1
        if self.fail.get(user):
            raise self.fail[user].pop(0)
        self.batches.append((user, [e.time[-3:-1] for e in events]))


def queue(send: Recorder, **kw: Any) -> tuple[MemoryQueue, CollectorRegistry]:
    registry = CollectorRegistry()
    policy = RetryPolicy(
        **{k: kw.pop(k) for k in ("backoff_s", "backoff_max_s", "max_attempts", "retry") if k in kw}
    )
    q = MemoryQueue(
        send, ServeMetrics(registry), max_events=kw.pop("max_events", 100), policy=policy, **kw
    )
    return q, registry


def batch(user: str, events: Sequence[Event]) -> Prepared:
    """A batch as the Redis queue reads one back: these tests are about delivery, not the
    gate (`tests/test_events_gate.py`)."""
    identity = Identity(user_id=user)
    return Prepared.joined([Prepared.restored(identity, e) for e in events])


async def test_one_users_events_go_in_time_order_one_batch_at_a_time() -> None:
    send = Recorder()
    send.gate.clear()
    q, _ = queue(send, workers=4)
    q.start()
    assert await q.offer(batch("u1", [ev(30), ev(5)])) == "accepted"
    await asyncio.sleep(0)  # the first batch is taken and waits at the gate
    assert await q.offer(batch("u1", [ev(i) for i in range(20, 8, -1)])) == "accepted"
    send.gate.set()
    assert await q.close(5.0) == 0
    assert send.batches == [
        ("u1", ["05", "30"]),
        ("u1", [f"{i:02d}" for i in range(9, 19)]),
        ("u1", ["19", "20"]),
    ]


async def test_close_drops_what_cannot_be_sent_in_time_and_counts_it() -> None:
    send = Recorder()
    send.gate.clear()  # the API never answers
    q, registry = queue(send)
    q.start()
    await q.offer(batch("u1", [ev(1)] * 12))
    await q.offer(batch("u2", [ev(1)]))
    await asyncio.sleep(0)
    assert await q.close(0.05) == 13
    dropped = registry.get_sample_value("cohortkv_events_dropped_total", {"reason": "shutdown"})
    assert dropped == 13
    assert q.depth == 0
    assert registry.get_sample_value("cohortkv_events_queue_depth") == 0


def err(kind: str, status: int | None = None, unsent: bool = False) -> UpstreamError:
    return UpstreamError("ccs", kind, status=status, unsent=unsent)  # type: ignore[arg-type]


def failures() -> dict[str, list[UpstreamError]]:
    """Per user, what its calls meet: u1 only failures the API provably did not process
    (no connection, 429, 503), u2 a refusal, u3 an unreadable 2xx, u4 a timeout after
    sending and u5 a 500 (either may have landed)."""
    return {
        "u1": [err("connect", unsent=True), err("http_5xx", 503), err("http_429", 429)],
        "u2": [err("http_4xx", 400)],
        "u3": [err("decode")],
        "u4": [err("timeout")],
        "u5": [err("http_5xx", 500), err("connect")],
    }


@pytest.mark.parametrize("policy", ["safe", "always"])
async def test_retry_decisions_by_what_the_api_may_have_processed(policy: str) -> None:
    send = Recorder(**failures())
    q, registry = queue(
        send, workers=1, backoff_s=0.001, backoff_max_s=0.002, retry=policy, max_attempts=4
    )
    q.start()
    for n, user in enumerate(["u1", "u2", "u3", "u4", "u5"], 1):
        assert await q.offer(batch(user, [ev(n)])) == "accepted"
    assert await q.close(5.0) == 1  # u2's event, refused while the queue was being flushed

    def count(state: str) -> float | None:
        return registry.get_sample_value("cohortkv_events_total", {"state": state})

    assert registry.get_sample_value("cohortkv_events_dropped_total", {"reason": "rejected"}) == 1
    assert send.calls["u1"] == 4 and send.calls["u2"] == send.calls["u3"] == 1
    if policy == "safe":
        # A batch that may have landed is never sent again: it is counted uncertain.
        assert send.batches == [("u1", ["01"])]
        assert (send.calls["u4"], send.calls["u5"]) == (1, 1)
        assert (count("sent"), count("retried"), count("uncertain")) == (2, 3, 2)
    else:
        assert send.batches == [("u1", ["01"]), ("u4", ["04"]), ("u5", ["05"])]
        assert (send.calls["u4"], send.calls["u5"]) == (2, 3)
        assert (count("sent"), count("retried"), count("uncertain")) == (4, 6, 0)
    assert count("dropped") == 1
