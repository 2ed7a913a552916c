"""Cohort evaluation: the workspace's rules compiled once into closures, run per request.

Semantics (the reference evaluator in tests/test_sandbox_engine.py spells them out naively):

- A predicate on a missing (or null) property is false, except `exists = false`. `ne` means
  "present and different". Booleans never equal numbers.
- `in`: a single value is one of the list; a list property has an element in the list.
  `contains`: a list property has the value as an element; a string property contains it.
  `gt/gte/lt/lte`: the property is a number and compares so.
- A condition counts the user's stored events of its name whose properties satisfy every
  `where` predicate and that fall in its window, and checks the count against `at_least`
  (default 1) and `at_most`.
- Windows: `{minutes|hours|days = N}` keeps events with time >= now - N (later ones count as
  recent); "session" / "view" keep events whose session_id / view_id equals the current one
  (that of the most recent stored event carrying one); with no current one they keep nothing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from plugin.sandbox.workspace import (
    ContextualCohort,
    Predicate,
    Rule,
    UrlMatch,
    Window,
    Workspace,
)


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One valid event as kept for a user; `ts` is epoch seconds, `seq` its arrival number."""

    name: str
    ts: float
    properties: dict[str, Any]
    session_id: str | None = None
    view_id: str | None = None
    seq: int = 0


class EvalContext:
    """What one evaluation looks at: the user's events by name, the time and current ids."""

    __slots__ = ("by_name", "now", "session_id", "view_id")

    def __init__(
        self,
        by_name: Mapping[str, Sequence[StoredEvent]],
        now: float,
        session_id: str | None = None,
        view_id: str | None = None,
    ) -> None:
        self.by_name = by_name
        self.now = now
        self.session_id = session_id
        self.view_id = view_id


PropsTest = Callable[[Mapping[str, Any]], bool]
RuleTest = Callable[[EvalContext], bool]


# --- predicates --------------------------------------------------------------------------------


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = tuple(path.split("."))
    if len(parts) == 1:
        key = parts[0]
        return lambda d: d.get(key)

    def get(d: Mapping[str, Any]) -> Any:
        node: Any = d
        for p in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(p)
        return node

    return get


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def same(a: Any, b: Any) -> bool:
    """JSON equality: booleans equal only booleans, 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def _key(v: Any) -> tuple[str, Any] | None:
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int | float):
        return ("n", v)
    if isinstance(v, str):
        return ("s", v)
    return None


def compile_predicate(p: Predicate) -> PropsTest:
    get = _getter(p.path)
    v = p.value
    op = p.op
    if op == "exists":
        want = v is not False

        def exists(d: Mapping[str, Any]) -> bool:
            return (get(d) is not None) is want

        return exists
    if op == "eq":
        return lambda d: same(get(d), v)
    if op == "ne":

        def ne(d: Mapping[str, Any]) -> bool:
            x = get(d)
            return x is not None and not same(x, v)

        return ne
    if op == "in":
        assert isinstance(v, list)
        members = frozenset(k for k in map(_key, v) if k is not None)

        def in_(d: Mapping[str, Any]) -> bool:
            x = get(d)
            if isinstance(x, list):
                return any(_key(e) in members for e in x)
            return _key(x) in members

        return in_
    if op == "contains":

        def contains(d: Mapping[str, Any]) -> bool:
            x = get(d)
            if isinstance(x, list):
                return any(same(e, v) for e in x)
            return isinstance(x, str) and isinstance(v, str) and v in x

        return contains
    cmp: Callable[[Any, Any], bool] = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }[op]

    def compare(d: Mapping[str, Any]) -> bool:
        x = get(d)
        return _is_number(x) and cmp(x, v)

    return compare


def _conjunction(tests: Sequence[PropsTest]) -> PropsTest | None:
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    tup = tuple(tests)
    return lambda d: all(t(d) for t in tup)


# --- rules -------------------------------------------------------------------------------------


def compile_rule(rule: Rule) -> RuleTest:
    if rule.all_ is not None:
        kids = tuple(compile_rule(r) for r in rule.all_)
        return lambda ctx: all(k(ctx) for k in kids)
    if rule.any_ is not None:
        kids = tuple(compile_rule(r) for r in rule.any_)
        return lambda ctx: any(k(ctx) for k in kids)
    if rule.not_ is not None:
        inner = compile_rule(rule.not_)
        return lambda ctx: not inner(ctx)
    assert rule.event is not None
    return _compile_condition(rule)


def _compile_condition(rule: Rule) -> RuleTest:
    name = rule.event or ""
    match = _conjunction([compile_predicate(p) for p in rule.where])
    lo = 1
    hi: int | None = None
    if rule.count is not None:
        lo = rule.count.at_least or 0
        hi = rule.count.at_most
    stop = hi + 1 if hi is not None else lo  # counting further cannot change the answer
    within = rule.within
    span = within.seconds() if isinstance(within, Window) else 0
    select: Callable[[EvalContext, Sequence[StoredEvent]], Iterable[StoredEvent]]
    if within is None:
        select = lambda _ctx, evs: evs  # noqa: E731
    elif isinstance(within, Window):

        def select(ctx: EvalContext, evs: Sequence[StoredEvent]) -> Iterable[StoredEvent]:
            cutoff = ctx.now - span
            return (e for e in evs if e.ts >= cutoff)

    elif within == "session":

        def select(ctx: EvalContext, evs: Sequence[StoredEvent]) -> Iterable[StoredEvent]:
            cur = ctx.session_id
            return () if cur is None else (e for e in evs if e.session_id == cur)

    else:

        def select(ctx: EvalContext, evs: Sequence[StoredEvent]) -> Iterable[StoredEvent]:
            cur = ctx.view_id
            return () if cur is None else (e for e in evs if e.view_id == cur)

    def condition(ctx: EvalContext) -> bool:
        events = ctx.by_name.get(name)
        n = 0
        if events:
            for e in select(ctx, events):
                if match is None or match(e.properties):
                    n += 1
                    if n >= stop:
                        break
        return n >= lo and (hi is None or n <= hi)

    return condition


# --- contextual --------------------------------------------------------------------------------

UrlTest = Callable[[str, Mapping[str, Any]], bool]


def compile_match(m: UrlMatch) -> UrlTest:
    tests: list[UrlTest] = []
    if m.url_prefix is not None:
        prefix = m.url_prefix
        tests.append(lambda url, _pp: url.startswith(prefix))
    if m.url_glob is not None:
        glob = re.compile(fnmatch.translate(m.url_glob)).match
        tests.append(lambda url, _pp: glob(url) is not None)
    if m.url_regex is not None:
        rx = re.compile(m.url_regex).search
        tests.append(lambda url, _pp: rx(url) is not None)
    props = _conjunction([compile_predicate(p) for p in m.page_properties])
    if props is not None:
        pp_test = props
        tests.append(lambda _url, pp: pp_test(pp))
    tup = tuple(tests)
    return lambda url, pp: all(t(url, pp) for t in tup)


def compile_contextual(c: ContextualCohort) -> UrlTest:
    own = compile_match(UrlMatch(c.url_prefix, c.url_glob, c.url_regex, c.page_properties))
    if c.any_ is None:
        return own
    alts = tuple(compile_match(a) for a in c.any_)
    return lambda url, pp: own(url, pp) and any(a(url, pp) for a in alts)


# --- schema ------------------------------------------------------------------------------------


def _type_ok(typ: Any, v: Any) -> bool:
    if isinstance(typ, dict):
        return isinstance(v, dict)
    if typ == "string":
        return isinstance(v, str)
    if typ == "number":
        return _is_number(v)
    if typ == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer()
        )
    if typ == "boolean":
        return isinstance(v, bool)
    if typ == "string[]":
        return isinstance(v, list) and all(isinstance(e, str) for e in v)
    if typ == "number[]":
        return isinstance(v, list) and all(_is_number(e) for e in v)
    return isinstance(v, dict)  # "object"


def describe(v: Any) -> str:
    """How a wrong value is shown in an error message."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_mismatch(
    schema: Mapping[str, Any], props: Mapping[str, Any], prefix: str, event: str
) -> str | None:
    """The first property that does not fit the schema, as `path: expected T ..., got V`.

    Properties the schema does not declare are allowed (and ignored); declared ones are optional.
    """
    for name, value in props.items():
        typ = schema.get(name)
        if typ is None:
            continue
        if not _type_ok(typ, value):
            want = "an object" if isinstance(typ, dict) else typ
            return f"{prefix}.{name}: expected {want} (schema of {event}), got {describe(value)}"
        if isinstance(typ, dict):
            inner = schema_mismatch(typ, value, f"{prefix}.{name}", event)
            if inner is not None:
                return inner
    return None


# --- the compiled workspace --------------------------------------------------------------------


class Engine:
    """A workspace compiled for serving: evaluation is closures over pre-parsed rules."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.api_keys = frozenset(workspace.api_keys)
        self.schemas: dict[str, dict[str, Any]] = workspace.events
        self._cohorts = tuple((c.code, compile_rule(c.rule)) for c in workspace.cohorts)
        self._ctx = tuple((c.code, compile_contextual(c)) for c in workspace.contextual)
        self._platforms: dict[str, tuple[str, ...]] = {
            c.code: tuple(dict.fromkeys(c.activations)) for c in workspace.cohorts
        }
        self._platforms.update(
            (c.code, tuple(dict.fromkeys(c.activations))) for c in workspace.contextual
        )

    def check_event(self, name: str, props: Mapping[str, Any], prefix: str) -> str | None:
        """Why this event does not fit the workspace schema (message names the field), or None."""
        schema = self.schemas.get(name)
        if schema is None:
            known = ", ".join(sorted(self.schemas)) or "none"
            return f"{prefix}.name: {name!r} is not an event of the workspace schema ({known})"
        return schema_mismatch(schema, props, f"{prefix}.properties", name)

    def cohorts(self, ctx: EvalContext) -> list[str]:
        return [code for code, test in self._cohorts if test(ctx)]

    def contextual(self, url: str, page_properties: Mapping[str, Any]) -> list[str]:
        return [code for code, test in self._ctx if test(url, page_properties)]

    def activations(self, codes: Sequence[str]) -> dict[str, list[str]]:
        """Cohorts grouped by the platforms they are activated on; platforms with none omitted."""
        out: dict[str, list[str]] = {}
        for code in codes:
            for platform in self._platforms.get(code, ()):
                out.setdefault(platform, []).append(code)
        return out
