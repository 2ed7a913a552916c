"""Workspace loading: the shipped workspace is valid, and every mistake names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.sandbox import WorkspaceError, default_workspace, load_workspace, parse_workspace
from plugin.sandbox.workspace import Workspace, workspace_from_dict

BASE: dict[str, Any] = {
    "api_keys": ["sandbox", "other"],
    "events": {
        "Videoview": {
            "video_id": "string",
            "title": "string",
            "categories": "string[]",
            "duration_seconds": "number",
            "live": "boolean",
            "client": "object",
        },
        "Pageview": {"article": {"section": "string", "word_count": "integer"}},
    },
    "cohorts": [
        {
            "code": "1",
            "name": "one",
            "activations": ["dfp"],
            "rule": {
                "all": [
                    {
                        "event": "Videoview",
                        "where": [{"path": "categories", "op": "contains", "value": "x"}],
                    }
                ]
            },
        }
    ],
    "contextual": [{"code": "2", "name": "two", "url_prefix": "https://a/"}],
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """BASE with one field replaced; `path` like `cohorts.0.rule.all.0.where.0.op`."""
    data = copy.deepcopy(BASE)
    node: Any = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()
RULE0 = "cohorts.0.rule.all.0"


def test_base_is_valid() -> None:
    ws = workspace_from_dict(BASE)
    assert [c.code for c in ws.cohorts] == ["1"]
    assert ws.api_keys == ["sandbox", "other"]


def test_default_workspace_is_a_realistic_publisher() -> None:
    ws = default_workspace()
    assert ws.api_keys == ["sandbox"]
    assert {"Videoview", "VideoCompletion", "AudioPlay", "AudioCompletion", "Pageview"} <= set(
        ws.events
    )
    by_code = {c.code: c for c in ws.cohorts}
    verify = by_code["10000"]
    assert verify.name == "Verification: any Videoview or AudioPlay"
    assert set(verify.activations) == {"freewheel", "dfp", "adswizz_keyvalue"}
    platforms = {p for c in ws.cohorts for p in c.activations}
    assert platforms == {"freewheel", "dfp", "adswizz_keyvalue"}
    # not every cohort goes everywhere
    assert any(set(c.activations) != platforms for c in ws.cohorts)
    assert all(
        set(c.activations) == platforms for c in ws.contextual if c.code in ("20001", "20002")
    )
    # all codes are numeric strings and unique
    codes = [c.code for c in ws.cohorts] + [c.code for c in ws.contextual]
    assert all(code.isdigit() for code in codes) and len(set(codes)) == len(codes)


def test_default_workspace_round_trips_through_builtins() -> None:
    ws = default_workspace()
    again = workspace_from_dict(msgspec.to_builtins(ws))
    assert again == ws


def test_load_workspace_from_file(tmp_path: Path) -> None:
    f = tmp_path / "ws.toml"
    f.write_text(
        """
api_keys = ["k1"]
[events.Videoview]
categories = "string[]"
[[cohorts]]
code = "7"
name = "seven"
rule = { event = "Videoview", within = "session" }
"""
    )
    ws = load_workspace(f)
    assert ws.cohorts[0].rule.within == "session"
    assert ws.api_keys == ["k1"]


def test_load_workspace_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[[cohorts]]\ncode = "1"\nname = "x"\nrule = { event = "Nope" }\n')
    with pytest.raises(WorkspaceError, match=r"bad\.toml: workspace: cohorts\[0\]\.rule\.event"):
        load_workspace(f)
    with pytest.raises(WorkspaceError, match="cannot read"):
        load_workspace(tmp_path / "missing.toml")


def test_invalid_toml() -> None:
    with pytest.raises(WorkspaceError, match="workspace: invalid TOML"):
        parse_workspace("cohorts = [")


def test_error_message_format_of_the_brief() -> None:
    data = _with(f"{RULE0}.where.0.op", "equals")
    with pytest.raises(WorkspaceError) as e:
        workspace_from_dict(data)
    assert str(e.value) == (
        "workspace: cohorts[0].rule.all[0].where[0].op: expected one of eq, ne, in, contains, "
        "gt, gte, lt, lte, exists, got 'equals'"
    )


BAD: list[tuple[str, Any, str]] = [
    ("cohorts.0.code", 1001, "workspace: cohorts[0].code: expected str, got int"),
    ("cohorts.0.code", " ", "workspace: cohorts[0].code: expected a non-empty string"),
    ("cohorts.0.name", _DELETE, "workspace: cohorts[0].name: expected a value (the field is"),
    ("cohorts.0.rule.all.0.evnt", "x", "workspace: cohorts[0].rule.all[0].evnt: unknown field"),
    ("cohorts.0.activations", ["dfp", ""], "cohorts[0].activations[1]: expected a non-empty"),
    (f"{RULE0}.event", "VideoView", "cohorts[0].rule.all[0].event: expected an event of the"),
    (f"{RULE0}.where.0.path", "categries", "where[0].path: 'categries' is not a property of"),
    (f"{RULE0}.where.0.path", "title.x", "where[0].path: 'title.x' is not a property"),
    (f"{RULE0}.where.0.path", "a..b", "where[0].path: expected a dotted property path"),
    (f"{RULE0}.where.0", {"path": "categories", "op": "contains", "value": 3}, "where[0].value"),
    (f"{RULE0}.where.0", {"path": "title", "op": "gt", "value": 3}, "where[0].op: gt needs a"),
    (f"{RULE0}.where.0", {"path": "duration_seconds", "op": "gt", "value": "3"}, "a number"),
    (f"{RULE0}.where.0", {"path": "title", "op": "eq", "value": 3}, "where[0].value: expected"),
    (f"{RULE0}.where.0", {"path": "live", "op": "eq", "value": 1}, "expected a boolean value"),
    (f"{RULE0}.where.0", {"path": "categories", "op": "eq", "value": "x"}, "use contains"),
    (f"{RULE0}.where.0", {"path": "title", "op": "in", "value": []}, "non-empty list for in"),
    (f"{RULE0}.where.0", {"path": "title", "op": "in", "value": "x"}, "non-empty list for in"),
    (f"{RULE0}.where.0", {"path": "title", "op": "eq"}, "where[0].value: required for op 'eq'"),
    (f"{RULE0}.where.0", {"path": "title", "op": "exists", "value": 1}, "true or false"),
    (f"{RULE0}.where.0", {"path": "live", "op": "contains", "value": 1}, "contains needs a"),
    (f"{RULE0}.within", "week", 'all[0].within: expected "session", "view" or a table'),
    (f"{RULE0}.within", {"days": 1, "hours": 2}, "within: expected exactly one of minutes"),
    (f"{RULE0}.within", {"days": 0}, "all[0].within.days: expected an integer >= 1, got 0"),
    (f"{RULE0}.within", {"weeks": 1}, "all[0].within.weeks: unknown field"),
    (f"{RULE0}.count", {"at_least": 0}, "all[0].count.at_least: expected an integer >= 1"),
    (f"{RULE0}.count", {"at_most": -1}, "all[0].count.at_most: expected an integer >= 0"),
    (f"{RULE0}.count", {}, "all[0].count: expected at_least and/or at_most"),
    (f"{RULE0}.count", {"at_least": 3, "at_most": 2}, "at_most (2) is below at_least (3)"),
    ("cohorts.0.rule", {"all": []}, "cohorts[0].rule.all: expected at least one rule"),
    ("cohorts.0.rule", {}, "cohorts[0].rule: expected exactly one of all, any, not, event; got"),
    (
        "cohorts.0.rule",
        {"all": [{"event": "Videoview"}], "event": "Videoview"},
        "cohorts[0].rule: expected exactly one of all, any, not, event; got all, event",
    ),
    (
        "cohorts.0.rule",
        {"not": {"event": "Pageview"}, "within": "session"},
        "cohorts[0].rule: where, count and within belong to a condition",
    ),
    (
        "cohorts.0.rule",
        {"any": [{"not": {"event": "Pageview", "where": [{"path": "article.x", "op": "exists"}]}}]},
        "cohorts[0].rule.any[0].not.where[0].path: 'article.x' is not a property of Pageview",
    ),
    ("contextual.0.code", "1", "contextual[0].code: code '1' is already used by cohorts[0]"),
    ("contextual.0.url_prefix", _DELETE, "contextual[0]: expected at least one of url_prefix"),
    ("contextual.0.url_regex", "(", "contextual[0].url_regex: expected a valid regular"),
    ("contextual.0.url_glob", "", "contextual[0].url_glob: expected a non-empty glob"),
    ("contextual.0.any", [], "contextual[0].any: expected at least one alternative"),
    ("contextual.0.any", [{}], "contextual[0].any[0]: expected at least one of url_prefix"),
    (
        "contextual.0.any",
        [{"page_properties": [{"path": "video.categories", "op": "has", "value": "x"}]}],
        "contextual[0].any[0].page_properties[0].op: expected one of eq",
    ),
    ("events.Videoview.categories", "list", "events.Videoview.categories: expected a table or"),
    ("events.Videoview.categories", 3, "events.Videoview.categories: expected a table or one of"),
    ("api_keys", ["ok", ""], "workspace: api_keys[1]: expected a non-empty string"),
    ("api_keys", "sandbox", "workspace: api_keys: expected array, got str"),
]


@pytest.mark.parametrize(("path", "value", "expected"), BAD)
def test_mistakes_name_the_field(path: str, value: Any, expected: str) -> None:
    with pytest.raises(WorkspaceError) as e:
        workspace_from_dict(_with(path, value))
    assert expected in str(e.value)
    assert str(e.value).startswith("workspace: ")


@pytest.mark.parametrize(
    "where",
    [
        {"path": "article.section", "op": "eq", "value": "news"},
        {"path": "article.word_count", "op": "gte", "value": 300},
        {"path": "article", "op": "exists"},
    ],
)
def test_nested_paths_are_accepted(where: dict[str, Any]) -> None:
    data = _with(RULE0, {"event": "Pageview", "where": [where]})
    workspace_from_dict(data)


def test_paths_below_an_object_property_are_accepted() -> None:
    data = _with(f"{RULE0}.where.0", {"path": "client.url", "op": "contains", "value": "x"})
    assert workspace_from_dict(data).cohorts[0].rule.all_ is not None


def test_contextual_page_properties_need_no_schema() -> None:
    data = _with(
        "contextual.0",
        {
            "code": "9",
            "name": "n",
            "page_properties": [{"path": "video.categories", "op": "contains", "value": "x"}],
        },
    )
    assert workspace_from_dict(data).contextual[0].page_properties[0].path == "video.categories"


# --- a loader never fails with anything but WorkspaceError -------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)

_PATHS = [
    "api_keys",
    "cohorts.0.code",
    "cohorts.0.activations",
    "cohorts.0.rule",
    RULE0,
    f"{RULE0}.where",
    f"{RULE0}.where.0",
    f"{RULE0}.where.0.value",
    f"{RULE0}.within",
    f"{RULE0}.count",
    "contextual.0",
    "contextual.0.any",
    "events.Videoview",
    "events.Pageview.article",
]


@given(path=st.sampled_from(_PATHS), value=_json)
def test_any_value_anywhere_loads_or_names_a_field(path: str, value: Any) -> None:
    try:
        ws = workspace_from_dict(_with(path, value))
    except WorkspaceError as e:
        assert str(e).startswith("workspace: ")
        assert str(e).split(": ")[1]  # a field path (or "(top level)")
    else:
        assert isinstance(ws, Workspace)
