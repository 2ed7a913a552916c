"""The docs say what the code does: their tables are checked against the code's own lists."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from adapters.registry import ADAPTERS
from plugin import reserved, result
from plugin.config import DEFAULT_PROPERTY_TYPES, MOVED
from plugin.consent import gate as consent
from plugin.consent.gpp_us import US_SECTIONS
from plugin.serve import outgoing
from plugin.signals.events import PropertyType

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PRIVACY = DOCS / "privacy.md"
SIGNALS = DOCS / "signals.md"

_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_CODE = re.compile(r"`([^`]+)`")


def _table(path: Path, heading: str, first: str | None = None) -> list[list[str]]:
    """The rows (cells, header and divider left out) of the first table under `heading`, or of
    the first there whose header starts with the column `first`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading) + 1
    tables: list[list[list[str]]] = []
    rows: list[list[str]] = []
    for line in [*lines[start:], ""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]])
            continue
        if rows:
            tables.append(rows)
            rows = []
        if line.startswith("#"):
            break
    for table in tables:
        if len(table) > 2 and (first is None or table[0][0] == first):
            return table[2:]
    raise AssertionError(f"{path.name}: no table under {heading!r} starting with {first!r}")


def _first_code(cell: str) -> str:
    found = _CODE.findall(cell)
    assert found, f"no `code` in {cell!r}"
    return found[0]


def _column(rows: list[list[str]], index: int = 0) -> list[str]:
    return [_first_code(row[index]) for row in rows]


def test_consent_reasons_table_is_every_reason_decide_can_return() -> None:
    documented = _column(_table(PRIVACY, "### Decision reasons"))
    assert len(documented) == len(set(documented)), "a reason is listed twice"
    assert set(documented) == set(consent.REASONS)


def test_consent_reasons_table_says_which_decision() -> None:
    for row in _table(PRIVACY, "### Decision reasons"):
        reason, decision = _first_code(row[0]), row[1]
        assert decision in ("allowed", "denied", "`consent.default`"), reason
        if reason.endswith("_undecodable"):
            assert decision == "`consent.default`", reason


def test_gpp_sections_table_is_every_us_section_the_gate_reads() -> None:
    rows = _table(PRIVACY, "### GPP sections")
    assert [(int(row[0]), _first_code(row[1])) for row in rows] == [
        (sid, layout.name) for sid, layout in US_SECTIONS.items()
    ]
    for row, layout in zip(rows, US_SECTIONS.values(), strict=True):
        assert (row[5] != "—") is layout.has_known_child, layout.name


def test_signal_reasons_table_is_plugin_result_reasons() -> None:
    rows = _table(SIGNALS, "### Signal reasons")
    documented = _column(rows)
    assert len(documented) == len(set(documented)), "a reason is listed twice"
    assert set(documented) == set(result.REASONS)
    sources = set(typing.get_args(result.Source))
    for row in rows:
        named = set(_CODE.findall(row[2]))
        assert named and named <= sources, row


def test_source_table_is_every_source() -> None:
    assert set(_column(_table(SIGNALS, "## Where each signal came from"))) == set(
        typing.get_args(result.Source)
    )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_per_adapter_table_matches_the_registry(adapter: typing.Any) -> None:
    rows = {_first_code(r[0]): r for r in _table(SIGNALS, "## Per-adapter settings")}
    assert adapter.name in rows, f"no row for platform {adapter.name}"
    row = rows[adapter.name]
    assert _first_code(row[1]) == adapter.default_play_event
    assert _first_code(row[2]) == adapter.default_content_section
    pairs = re.findall(r"`([^`]+)` → `([^`]+)`", row[3])
    assert dict(pairs) == dict(adapter.default_properties)
    assert len(pairs) == len(adapter.default_properties)


def test_default_property_types_table() -> None:
    rows = _table(SIGNALS, "### `[events.properties]`", first="Property")
    assert {_first_code(r[0]): _first_code(r[1]) for r in rows} == DEFAULT_PROPERTY_TYPES
    assert len(rows) == len(DEFAULT_PROPERTY_TYPES)


def test_property_type_table_is_every_type() -> None:
    rows = _table(SIGNALS, "### `[events.properties]`", first="Type")
    assert _column(rows) == list(typing.get_args(PropertyType))


def test_migration_table_names_every_moved_setting() -> None:
    documented = set(_column(_table(SIGNALS, "## Migration")))
    assert documented == {".".join(path) for path in MOVED}


def test_privacy_lists_every_reserved_parameter_and_header() -> None:
    rows = _table(PRIVACY, "### Sidecar: reserved parameters and headers")
    params = {c for r in rows for c in _CODE.findall(r[0])}
    headers = {c for r in rows for c in _CODE.findall(r[1])}
    assert set(reserved.PARAMS) <= params
    assert f"{reserved.PROPERTY_PREFIX}<name>" in params
    assert set(reserved.HEADERS.values()) | {reserved.PROPERTIES_HEADER} <= headers
    for param, header in reserved.HEADERS.items():
        assert any(param in r[0] and header in r[1] for r in rows), (param, header)


def test_privacy_lists_every_header_passed_to_the_ad_server() -> None:
    text = PRIVACY.read_text(encoding="utf-8")
    for name in (*outgoing.FORWARDED_HEADERS, *outgoing.BODY_HEADERS, "X-Forwarded-For"):
        assert f"`{name}`" in text, name


def _slug(heading: str) -> str:
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("path", [PRIVACY, SIGNALS], ids=lambda p: p.name)
def test_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        doc = path if not file else (path.parent / file)
        assert doc.is_file(), target
        if anchor:
            headings = [ln for ln in doc.read_text(encoding="utf-8").splitlines() if ln[:1] == "#"]
            assert anchor in {_slug(h) for h in headings}, target


def test_readme_links_both_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/privacy.md)" in readme
    assert "(docs/signals.md)" in readme
