"""The sandbox workspace: event schemas, custom cohorts and contextual cohorts, read from TOML.

A workspace is what a publisher configures in the Permutive dashboard; here it is one TOML file
(schema in `plugin/sandbox/README.md`). Loading checks everything a person can get wrong
(unknown fields, unknown events or property paths, operators that do not fit a property's type,
bad regexes, duplicate codes) and says where: `workspace: cohorts[2].rule.all[0].where[0].op:
expected one of eq, ne, ...`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from plugin.errors import WorkspaceError as WorkspaceError
from plugin.errors import msgspec_problem

OPS = ("eq", "ne", "in", "contains", "gt", "gte", "lt", "lte", "exists")
SCALAR_TYPES = ("string", "number", "integer", "boolean")
PROPERTY_TYPES = (*SCALAR_TYPES, "string[]", "number[]", "object")
WINDOW_NAMES = ("session", "view")

Scalar: TypeAlias = str | int | float | bool
Value: TypeAlias = Scalar | list[Scalar]


class _Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    pass


class Predicate(_Struct, frozen=True):
    """`path op value` over an event's `properties` (or a Contextual request's page_properties)."""

    path: str
    op: str
    value: Value | None = None


class Count(_Struct, frozen=True):
    at_least: int | None = None
    at_most: int | None = None


class Window(_Struct, frozen=True):
    minutes: int | None = None
    hours: int | None = None
    days: int | None = None

    def seconds(self) -> int:
        return (self.minutes or 0) * 60 + (self.hours or 0) * 3600 + (self.days or 0) * 86400


class Rule(_Struct, frozen=True):
    """Either a combinator (`all`, `any`, `not`) or a condition (`event` + where/count/within)."""

    all_: list[Rule] | None = msgspec.field(default=None, name="all")
    any_: list[Rule] | None = msgspec.field(default=None, name="any")
    not_: Rule | None = msgspec.field(default=None, name="not")
    event: str | None = None
    where: list[Predicate] = []
    count: Count | None = None
    within: str | Window | None = None


class Cohort(_Struct, frozen=True):
    code: str
    name: str
    rule: Rule
    activations: list[str] = []


class UrlMatch(_Struct, frozen=True):
    """Parts of a contextual match; every part that is given must match."""

    url_prefix: str | None = None
    url_glob: str | None = None
    url_regex: str | None = None
    page_properties: list[Predicate] = []


class ContextualCohort(_Struct, frozen=True):
    """Top-level parts must all match, and so must at least one entry of `any` when given."""

    code: str
    name: str
    activations: list[str] = []
    url_prefix: str | None = None
    url_glob: str | None = None
    url_regex: str | None = None
    page_properties: list[Predicate] = []
    any_: list[UrlMatch] | None = msgspec.field(default=None, name="any")


class Workspace(_Struct, frozen=True):
    api_keys: list[str] = []
    events: dict[str, dict[str, Any]] = {}
    cohorts: list[Cohort] = []
    contextual: list[ContextualCohort] = []


def default_workspace() -> Workspace:
    """The shipped demo publisher (`plugin/sandbox/default_workspace.toml`)."""
    text = resources.files("plugin.sandbox").joinpath("default_workspace.toml").read_text("utf-8")
    return parse_workspace(text)


def load_workspace(path: str | Path) -> Workspace:
    try:
        text = Path(path).read_text("utf-8")
    except OSError as e:
        raise WorkspaceError(f"workspace: cannot read {str(path)!r}: {e.strerror or e}") from e
    try:
        return parse_workspace(text)
    except WorkspaceError as e:
        raise WorkspaceError(f"{path}: {e}") from e


def parse_workspace(text: str) -> Workspace:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WorkspaceError(f"workspace: invalid TOML: {e}") from e
    return workspace_from_dict(data)


def workspace_from_dict(data: Mapping[str, Any]) -> Workspace:
    try:
        ws = msgspec.convert(data, Workspace)
    except msgspec.ValidationError as e:
        raise WorkspaceError(_msgspec_message(e)) from None
    check_workspace(ws)
    return ws


def _msgspec_message(e: msgspec.ValidationError) -> str:
    """msgspec's `Expected `str`, got `int` - at `$.a[0].b`` as `workspace: a[0].b: ...`."""
    path, msg = msgspec_problem(e)
    msg = re.sub(r"`([^`]*)`", r"\1", msg)
    return f"workspace: {path.lstrip('.') or '(top level)'}: {msg}"


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _fail(path: str, msg: str) -> WorkspaceError:
    return WorkspaceError(f"workspace: {path}: {msg}")


# --- semantic checks ---------------------------------------------------------------------------


def check_workspace(ws: Workspace) -> None:
    for i, key in enumerate(ws.api_keys):
        if not key.strip():
            raise _fail(f"api_keys[{i}]", "expected a non-empty string")
    for name, schema in ws.events.items():
        if not name:
            raise _fail("events", "expected non-empty event names")
        _check_schema(schema, f"events.{name}")
    codes: dict[str, str] = {}
    for i, c in enumerate(ws.cohorts):
        where = f"cohorts[{i}]"
        _check_common(c.code, c.activations, where, codes)
        _check_rule(c.rule, f"{where}.rule", ws.events)
    for i, x in enumerate(ws.contextual):
        where = f"contextual[{i}]"
        _check_common(x.code, x.activations, where, codes)
        own = UrlMatch(x.url_prefix, x.url_glob, x.url_regex, x.page_properties)
        _check_match(own, where)
        if x.any_ is not None:
            if not x.any_:
                raise _fail(f"{where}.any", "expected at least one alternative")
            for j, alt in enumerate(x.any_):
                if alt == UrlMatch():
                    raise _fail(
                        f"{where}.any[{j}]",
                        "expected at least one of url_prefix, url_glob, url_regex, page_properties",
                    )
                _check_match(alt, f"{where}.any[{j}]")
        elif own == UrlMatch():
            raise _fail(
                where,
                "expected at least one of url_prefix, url_glob, url_regex, page_properties, any",
            )


def _check_schema(schema: Mapping[str, Any], where: str) -> None:
    for prop, typ in schema.items():
        path = f"{where}.{prop}"
        if not prop or "." in prop:
            raise _fail(path, "expected a property name without dots (nest tables instead)")
        if isinstance(typ, dict):
            _check_schema(typ, path)
        elif typ not in PROPERTY_TYPES:
            raise _fail(
                path, f"expected a table or one of {', '.join(PROPERTY_TYPES)}, got {typ!r}"
            )


def _check_common(code: str, activations: list[str], where: str, codes: dict[str, str]) -> None:
    if not code.strip():
        raise _fail(f"{where}.code", "expected a non-empty string")
    if code in codes:
        raise _fail(f"{where}.code", f"code {code!r} is already used by {codes[code]}")
    codes[code] = where
    for j, platform in enumerate(activations):
        if not platform.strip():
            raise _fail(f"{where}.activations[{j}]", "expected a non-empty platform name")


def _check_rule(rule: Rule, where: str, events: Mapping[str, Mapping[str, Any]]) -> None:
    kinds = [
        k
        for k, v in (
            ("all", rule.all_),
            ("any", rule.any_),
            ("not", rule.not_),
            ("event", rule.event),
        )
        if v is not None
    ]
    if len(kinds) != 1:
        got = ", ".join(kinds) if kinds else "none"
        raise _fail(where, f"expected exactly one of all, any, not, event; got {got}")
    kind = kinds[0]
    if kind != "event" and (rule.where or rule.count is not None or rule.within is not None):
        raise _fail(where, "where, count and within belong to a condition with an event")
    if kind in ("all", "any"):
        children = rule.all_ if kind == "all" else rule.any_
        assert children is not None
        if not children:
            raise _fail(f"{where}.{kind}", "expected at least one rule")
        for j, child in enumerate(children):
            _check_rule(child, f"{where}.{kind}[{j}]", events)
        return
    if kind == "not":
        assert rule.not_ is not None
        _check_rule(rule.not_, f"{where}.not", events)
        return
    assert rule.event is not None
    if rule.event not in events:
        known = ", ".join(sorted(events)) or "none defined"
        raise _fail(
            f"{where}.event", f"expected an event of the schema ({known}), got {rule.event!r}"
        )
    schema = events[rule.event]
    for j, p in enumerate(rule.where):
        _check_predicate(p, f"{where}.where[{j}]", schema, rule.event)
    _check_count(rule.count, f"{where}.count")
    _check_window(rule.within, f"{where}.within")


def _check_count(count: Count | None, where: str) -> None:
    if count is None:
        return
    if count.at_least is None and count.at_most is None:
        raise _fail(where, "expected at_least and/or at_most")
    if count.at_least is not None and count.at_least < 1:
        raise _fail(f"{where}.at_least", f"expected an integer >= 1, got {count.at_least}")
    if count.at_most is not None and count.at_most < 0:
        raise _fail(f"{where}.at_most", f"expected an integer >= 0, got {count.at_most}")
    if count.at_least is not None and count.at_most is not None and count.at_most < count.at_least:
        raise _fail(where, f"at_most ({count.at_most}) is below at_least ({count.at_least})")


def _check_window(within: str | Window | None, where: str) -> None:
    if within is None:
        return
    if isinstance(within, str):
        if within not in WINDOW_NAMES:
            raise _fail(
                where,
                f'expected "session", "view" or a table like {{ days = 30 }}, got {within!r}',
            )
        return
    given = [(k, v) for k, v in msgspec.structs.asdict(within).items() if v is not None]
    if len(given) != 1:
        raise _fail(where, "expected exactly one of minutes, hours, days")
    k, v = given[0]
    if v < 1:
        raise _fail(f"{where}.{k}", f"expected an integer >= 1, got {v}")


def property_type(schema: Mapping[str, Any], path: str) -> str | None:
    """The declared type at a dotted path; "object" past an opaque object; None if unknown."""
    node: Any = schema
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return "object" if node == "object" else None
        if part not in node:
            return None
        node = node[part]
    return "object" if isinstance(node, Mapping) else str(node)


def _check_predicate(
    p: Predicate, where: str, schema: Mapping[str, Any] | None, event: str
) -> None:
    if p.op not in OPS:
        raise _fail(f"{where}.op", f"expected one of {', '.join(OPS)}, got {p.op!r}")
    if not p.path or any(not part for part in p.path.split(".")):
        raise _fail(f"{where}.path", f"expected a dotted property path, got {p.path!r}")
    typ = "object"  # page_properties have no schema: anything goes
    if schema is not None:
        found = property_type(schema, p.path)
        if found is None:
            known = ", ".join(sorted(schema)) or "none"
            raise _fail(
                f"{where}.path",
                f"{p.path!r} is not a property of {event} (top-level properties: {known})",
            )
        typ = found
    _check_value(p, where, typ)


def _check_value(p: Predicate, where: str, typ: str) -> None:
    v, op = p.value, p.op
    vw = f"{where}.value"
    if op == "exists":
        if v is not None and not isinstance(v, bool):
            raise _fail(vw, f"expected true or false for exists, got {v!r}")
        return
    if v is None:
        raise _fail(vw, f"required for op {op!r}")
    if op in ("gt", "gte", "lt", "lte"):
        if not _is_number(v):
            raise _fail(vw, f"expected a number for {op}, got {v!r}")
        if typ not in ("number", "integer", "object"):
            raise _fail(
                f"{where}.op", f"{op} needs a number or integer property, {p.path} is {typ}"
            )
        return
    if op == "in":
        if not isinstance(v, list) or not v:
            raise _fail(vw, f"expected a non-empty list for in, got {v!r}")
        for item in v:
            _check_scalar_for(item, typ, vw, p.path)
        return
    if isinstance(v, list):
        raise _fail(vw, f'expected a single value for {op} (use op = "in" for a list), got {v!r}')
    if op == "contains":
        if typ in ("string[]", "number[]"):
            _check_scalar_for(v, typ, vw, p.path)
        elif typ == "string":
            if not isinstance(v, str):
                raise _fail(vw, f"expected a string to look for in {p.path}, got {v!r}")
        elif typ != "object":
            raise _fail(
                f"{where}.op", f"contains needs a list or string property, {p.path} is {typ}"
            )
        return
    if typ in ("string[]", "number[]"):  # eq, ne
        raise _fail(
            f"{where}.op", f"{op} needs a single-valued property (use contains), {p.path} is {typ}"
        )
    _check_scalar_for(v, typ, vw, p.path)


def _check_scalar_for(v: Any, typ: str, where: str, path: str) -> None:
    elem = typ.removesuffix("[]")
    ok = {
        "string": isinstance(v, str),
        "number": _is_number(v),
        "integer": _is_number(v),
        "boolean": isinstance(v, bool),
        "object": True,
    }.get(elem, True)
    if not ok:
        raise _fail(where, f"expected a {elem} value to compare with {path}, got {v!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_match(m: UrlMatch, where: str) -> None:
    if m.url_prefix is not None and not m.url_prefix:
        raise _fail(f"{where}.url_prefix", "expected a non-empty prefix")
    if m.url_glob is not None and not m.url_glob:
        raise _fail(f"{where}.url_glob", "expected a non-empty glob pattern")
    if m.url_regex is not None:
        try:
            re.compile(m.url_regex)
        except re.error as e:
            raise _fail(f"{where}.url_regex", f"expected a valid regular expression: {e}") from None
    for j, p in enumerate(m.page_properties):
        _check_predicate(p, f"{where}.page_properties[{j}]", None, "page_properties")
