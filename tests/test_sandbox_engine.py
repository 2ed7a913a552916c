"""The cohort engine agrees with the most obvious evaluator on random histories and rule trees,
and recency windows follow the sandbox's clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from plugin.sandbox import make_app, parse_workspace
from plugin.sandbox.engine import Engine, StoredEvent, compile_predicate
from plugin.sandbox.users import UserStore
from plugin.sandbox.workspace import Predicate, Rule, Window, Workspace, workspace_from_dict

NOW = 1_700_000_000.0

# --- the reference: the most obvious possible code ---------------------------------------------


def ref_lookup(props: dict[str, Any], path: str) -> Any:
    value: Any = props
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def ref_equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is bool and type(b) is bool and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is str and type(b) is str:
        return bool(a == b)
    return False


def ref_is_number(v: Any) -> bool:
    return type(v) in (int, float)


def ref_predicate(p: Predicate, props: dict[str, Any]) -> bool:
    v = ref_lookup(props, p.path)
    if p.op == "exists":
        if p.value is False:
            return v is None
        return v is not None
    if v is None:
        return False
    if p.op == "eq":
        return ref_equal(v, p.value)
    if p.op == "ne":
        return not ref_equal(v, p.value)
    if p.op == "in":
        assert isinstance(p.value, list)
        if isinstance(v, list):
            return any(ref_equal(item, option) for item in v for option in p.value)
        return any(ref_equal(v, option) for option in p.value)
    if p.op == "contains":
        if isinstance(v, list):
            return any(ref_equal(item, p.value) for item in v)
        if isinstance(v, str) and isinstance(p.value, str):
            return p.value in v
        return False
    if not ref_is_number(v):
        return False
    if p.op == "gt":
        return bool(v > p.value)
    if p.op == "gte":
        return bool(v >= p.value)
    if p.op == "lt":
        return bool(v < p.value)
    assert p.op == "lte"
    return bool(v <= p.value)


def ref_rule(rule: Rule, events: list[StoredEvent], now: float) -> bool:
    if rule.all_ is not None:
        return all(ref_rule(r, events, now) for r in rule.all_)
    if rule.any_ is not None:
        return any(ref_rule(r, events, now) for r in rule.any_)
    if rule.not_ is not None:
        return not ref_rule(rule.not_, events, now)
    session = None
    view = None
    for e in events:  # the current ones: those of the latest event that has one
        if e.session_id is not None:
            session = e.session_id
        if e.view_id is not None:
            view = e.view_id
    count = 0
    for e in events:
        if e.name != rule.event:
            continue
        if isinstance(rule.within, Window) and e.ts < now - rule.within.seconds():
            continue
        if rule.within == "session" and (session is None or e.session_id != session):
            continue
        if rule.within == "view" and (view is None or e.view_id != view):
            continue
        if all(ref_predicate(p, e.properties) for p in rule.where):
            count += 1
    at_least = 1
    at_most = None
    if rule.count is not None:
        at_least = rule.count.at_least if rule.count.at_least is not None else 0
        at_most = rule.count.at_most
    return count >= at_least and (at_most is None or count <= at_most)


def ref_cohorts(ws: Workspace, events: list[StoredEvent], now: float) -> list[str]:
    return [c.code for c in ws.cohorts if ref_rule(c.rule, events, now)]


# --- random workspaces and histories -----------------------------------------------------------

SCALARS = [0, 1, 1.0, True, False, "a", "ab"]
PATHS = ["x", "x", "n.x", "y"]

scalar = st.sampled_from(SCALARS)
prop_value = st.one_of(
    scalar,
    st.none(),
    st.lists(scalar, max_size=3),
    st.fixed_dictionaries({}, optional={"x": scalar, "y": st.lists(scalar, max_size=2)}),
)


@st.composite
def predicates(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["eq", "ne", "in", "contains", "gt", "gte", "lt", "lte", "exists"]))
    p: dict[str, Any] = {"path": draw(st.sampled_from(PATHS)), "op": op}
    if op == "exists":
        choice = draw(st.sampled_from([None, True, False]))
        if choice is not None:
            p["value"] = choice
    elif op == "in":
        p["value"] = draw(st.lists(scalar, min_size=1, max_size=3))
    elif op in ("gt", "gte", "lt", "lte"):
        p["value"] = draw(st.sampled_from([0, 1, 0.5, 2, -1]))
    else:
        p["value"] = draw(scalar)
    return p


@st.composite
def conditions(draw: st.DrawFn, with_where: bool = True) -> dict[str, Any]:
    c: dict[str, Any] = {"event": draw(st.sampled_from(["A", "B"]))}
    where = draw(st.lists(predicates(), max_size=2)) if with_where else []
    if where:
        c["where"] = where
    count = draw(
        st.sampled_from([None, {"at_least": 1}, {"at_least": 2}, {"at_most": 0}, {"at_most": 1}])
        | st.builds(
            lambda lo, extra: {"at_least": lo, "at_most": lo + extra},
            st.integers(1, 3),
            st.integers(0, 2),
        )
    )
    if count is not None:
        c["count"] = count
    within = draw(
        st.sampled_from(
            [None, "session", "view", {"minutes": 1}, {"minutes": 30}, {"hours": 2}, {"days": 1}]
        )
    )
    if within is not None:
        c["within"] = within
    return c


rules = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.builds(lambda rs: {"all": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda rs: {"any": rs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda r: {"not": r}, inner),
    ),
    max_leaves=6,
)

# event times: around the window edges (exactly on a cutoff included), and in the future
OFFSETS = [0, 1, 59, 60, 61, 1799, 1800, 1801, 7200, 86399, 86400, 86401, 10**6, -30]

props_strategy = st.fixed_dictionaries(
    {}, optional={"x": prop_value, "y": prop_value, "n": prop_value}
)
events_strategy = st.lists(
    st.builds(
        lambda name, off, props, sess, view: (name, NOW - off, props, sess, view),
        st.sampled_from(["A", "B"]),
        st.sampled_from(OFFSETS),
        props_strategy,
        st.sampled_from([None, "s1", "s2"]),
        st.sampled_from([None, "v1", "v2"]),
    ),
    max_size=12,
)

SCHEMA = {
    "A": {"x": "object", "y": "object", "n": "object"},
    "B": {"x": "object", "y": "object", "n": "object"},
}


def _workspace(rule_dicts: list[dict[str, Any]]) -> Workspace:
    return workspace_from_dict(
        {
            "events": SCHEMA,
            "cohorts": [
                {"code": str(i), "name": f"c{i}", "rule": r} for i, r in enumerate(rule_dicts)
            ],
        }
    )


def _current(events: list[Any]) -> tuple[str | None, str | None]:
    """The session and view the reference calls current: those of the latest event naming
    one (the server takes them from the request's events the same way)."""
    session = view = None
    for e in events:
        session = e.session_id or session
        view = e.view_id or view
    return session, view


@given(rule_dicts=st.lists(rules, min_size=1, max_size=4), raw_events=events_strategy)
def test_engine_agrees_with_the_reference(
    rule_dicts: list[dict[str, Any]], raw_events: list[tuple[Any, ...]]
) -> None:
    ws = _workspace(rule_dicts)
    store = UserStore()
    user = store.user("u")
    for name, ts, props, sess, view in raw_events:
        store.add_event(user, name, ts, props, sess, view)
    kept = user.events()
    assert [(e.name, e.ts, e.properties) for e in kept] == [r[:3] for r in raw_events]
    assert Engine(ws).cohorts(user.context(NOW, *_current(kept))) == ref_cohorts(ws, kept, NOW)


@given(pred=predicates(), value=prop_value, noise=props_strategy)
def test_predicates_agree_with_the_reference(
    pred: dict[str, Any], value: Any, noise: dict[str, Any]
) -> None:
    ws = _workspace([{"event": "A", "where": [pred]}])
    p = ws.cohorts[0].rule.where[0]
    props = dict(noise)  # the predicate's path holds the drawn value
    if "." in p.path:
        props["n"] = {"x": value}
    else:
        props[p.path] = value
    assert compile_predicate(p)(props) is ref_predicate(p, props)
    assert compile_predicate(p)(noise) is ref_predicate(p, noise)


@given(
    conds=st.lists(conditions(with_where=False), min_size=1, max_size=8),
    raw_events=events_strategy,
)
def test_windows_and_counts_agree_with_the_reference(
    conds: list[dict[str, Any]], raw_events: list[tuple[Any, ...]]
) -> None:
    ws = _workspace(conds)
    store = UserStore()
    user = store.user("u")
    for name, ts, props, sess, view in raw_events:
        store.add_event(user, name, ts, props, sess, view)
    current = _current(user.events())
    assert Engine(ws).cohorts(user.context(NOW, *current)) == ref_cohorts(ws, user.events(), NOW)


# --- explicit cases of the semantics ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "props", "expected"),
    [
        ({"path": "x", "op": "eq", "value": 1}, {"x": True}, False),
        ({"path": "x", "op": "eq", "value": 1}, {"x": 1.0}, True),
        ({"path": "x", "op": "eq", "value": True}, {"x": 1}, False),
        ({"path": "x", "op": "ne", "value": 1}, {}, False),
        ({"path": "x", "op": "ne", "value": 1}, {"x": "1"}, True),
        ({"path": "x", "op": "in", "value": [1, "a"]}, {"x": ["b", "a"]}, True),
        ({"path": "x", "op": "in", "value": [1]}, {"x": [True]}, False),
        ({"path": "x", "op": "in", "value": [1, "b"]}, {"x": True}, False),
        ({"path": "x", "op": "in", "value": [True]}, {"x": True}, True),
        ({"path": "x", "op": "contains", "value": 1}, {"x": [True, "1"]}, False),
        ({"path": "x", "op": "contains", "value": "port"}, {"x": "sports"}, True),
        ({"path": "x", "op": "contains", "value": "port"}, {"x": ["sports"]}, False),
        ({"path": "n.x", "op": "gte", "value": 0.5}, {"n": {"x": 0.5}}, True),
        ({"path": "n.x", "op": "gt", "value": 0}, {"n": {"x": True}}, False),
        ({"path": "n.x", "op": "lt", "value": 1}, {"n": [{"x": 0}]}, False),
        ({"path": "x", "op": "exists", "value": False}, {"x": None}, True),
        ({"path": "x", "op": "exists"}, {"x": 0}, True),
    ],
)
def test_predicate_semantics(pred: dict[str, Any], props: dict[str, Any], expected: bool) -> None:
    ws = _workspace([{"event": "A", "where": [pred]}])
    store = UserStore()
    user = store.user("u")
    store.add_event(user, "A", NOW, props)
    assert (Engine(ws).cohorts(user.context(NOW)) == ["0"]) is expected
    assert ref_cohorts(ws, user.events(), NOW) == Engine(ws).cohorts(user.context(NOW))


def test_at_most_zero_means_never() -> None:
    ws = _workspace([{"event": "A", "count": {"at_most": 0}}])
    store = UserStore()
    user = store.user("u")
    assert Engine(ws).cohorts(user.context(NOW)) == ["0"]
    store.add_event(user, "A", NOW, {})
    assert Engine(ws).cohorts(user.context(NOW)) == []


def test_contextual_parts_must_all_match() -> None:
    ws = parse_workspace(
        """
[[contextual]]
code = "1"
name = "prefix and property"
url_prefix = "https://x/"
page_properties = [{ path = "video.live", op = "eq", value = true }]

[[contextual]]
code = "2"
name = "glob or regex"
any = [{ url_glob = "*/football/*" }, { url_regex = "^myapp://radio/[0-9]+$" }]
"""
    )
    engine = Engine(ws)
    assert engine.contextual("https://x/a", {"video": {"live": True}}) == ["1"]
    assert engine.contextual("https://x/a", {"video": {"live": 1}}) == []
    assert engine.contextual("https://y/a", {"video": {"live": True}}) == []
    assert engine.contextual("https://x/football/1", {"video": {"live": True}}) == ["1", "2"]
    assert engine.contextual("myapp://radio/12", {}) == ["2"]
    assert engine.contextual("myapp://radio/12a", {}) == []


# --- recency windows over HTTP with an injectable clock ----------------------------------------

WINDOWS = """
[events.Videoview]
categories = "string[]"

[[cohorts]]
code = "m"
name = "in the last 10 minutes"
rule = { event = "Videoview", within = { minutes = 10 } }

[[cohorts]]
code = "d"
name = "in the last 2 days"
rule = { event = "Videoview", within = { days = 2 } }

[[cohorts]]
code = "s"
name = "twice this session"
rule = { event = "Videoview", within = "session", count = { at_least = 2 } }

[[cohorts]]
code = "v"
name = "football this view"
rule = { event = "Videoview", within = "view", where = [
  { path = "categories", op = "contains", value = "football" },
] }
"""

T0 = datetime(2024, 1, 15, 14, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


Client = Callable[..., Any]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def client(aiohttp_client: Client, clock: FakeClock) -> TestClient[Any, Any]:
    app = make_app(parse_workspace(WINDOWS), clock=clock)
    result: TestClient[Any, Any] = await aiohttp_client(app)
    return result


def _event(
    at: datetime, session: str | None = None, view: str | None = None, cats: tuple[str, ...] = ()
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": "Videoview",
        "time": at.isoformat().replace("+00:00", "Z"),
        "properties": {"categories": list(cats)},
    }
    if session:
        e["session_id"] = session
    if view:
        e["view_id"] = view
    return e


async def _send(client: TestClient[Any, Any], *events: dict[str, Any]) -> list[str]:
    body = {"user_id": "2008c38f-dece-4570-976d-87593ed001c3", "events": list(events)}
    resp = await client.post("/ccs/v1/segmentation?k=sandbox", json=body)
    assert resp.status == 200, await resp.text()
    cohorts: list[str] = (await resp.json())["cohorts"]
    return sorted(cohorts)


async def test_minutes_and_days_follow_the_clock(
    client: TestClient[Any, Any], clock: FakeClock
) -> None:
    clock.now = T0 + timedelta(minutes=5)
    assert await _send(client, _event(T0)) == ["d", "m"]
    # a later request re-evaluates the same history at the new time
    clock.now = T0 + timedelta(minutes=10)
    assert await _send(client, {**_event(T0), "name": "Other"}) == ["d", "m"]  # edge: included
    clock.now = T0 + timedelta(minutes=10, seconds=1)
    assert await _send(client, {**_event(T0), "name": "Other"}) == ["d"]
    clock.now = T0 + timedelta(days=2, seconds=1)
    assert await _send(client, {**_event(T0), "name": "Other"}) == []
    # an old event arriving now does not make the user recent
    assert await _send(client, _event(T0 + timedelta(days=1))) == ["d"]


async def test_this_session(client: TestClient[Any, Any], clock: FakeClock) -> None:
    clock.now = T0 + timedelta(days=10)  # recency windows out of the way
    assert await _send(client, _event(T0, session="s1")) == []
    assert await _send(client, _event(T0, session="s1")) == ["s"]
    assert await _send(client, _event(T0, session="s2")) == []  # a new session starts empty
    # an event without a session id is in no session: "this session" is the request's own
    assert await _send(client, _event(T0)) == []
    assert await _send(client, _event(T0, session="s2")) == ["s"]
    # two events of a new session in one request
    assert await _send(client, _event(T0, session="s3"), _event(T0, session="s3")) == ["s"]


async def test_this_view(client: TestClient[Any, Any], clock: FakeClock) -> None:
    clock.now = T0 + timedelta(days=10)
    assert await _send(client, _event(T0, view="v1", cats=("football",))) == ["v"]
    assert await _send(client, _event(T0, view="v2", cats=("tennis",))) == []
    # back to a view with football in it? Only the current view counts.
    assert await _send(client, _event(T0, view="v2")) == []
    assert await _send(client, _event(T0, view="v3", cats=("sports", "football"))) == ["v"]
