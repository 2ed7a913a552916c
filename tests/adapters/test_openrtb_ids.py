"""Device ids without `ifa_type`: the table in adapters/openrtb.py's docstring is what the code
does, row by row, and the spellings real bid requests use are read."""

from __future__ import annotations

import re

import pytest

import adapters.openrtb as openrtb
from adapters.openrtb import ifa_type_of

ROW = re.compile(r"^\| (.+?) \| (.+?) \| (.+?) \|$")


def _names(cell: str) -> list[str]:
    return [n.rstrip("…") for n in re.findall(r"`([^`]+)`", cell)]


def table() -> list[tuple[list[str], list[str] | None, str | None]]:
    """(OS names, makes or None for any, type or None for not used) per row."""
    doc = openrtb.__doc__ or ""
    start = doc.index("| `device.os` |")
    rows = []
    for line in doc[start:].splitlines()[2:]:
        m = ROW.match(line.strip())
        if m is None:
            break
        os_cell, make_cell, type_cell = m.groups()
        makes = None if make_cell.startswith("any") else _names(make_cell)
        types = _names(type_cell)
        rows.append((_names(os_cell), makes, types[0] if types else None))
    return rows


def test_the_table_covers_every_type_the_issue_names() -> None:
    types = {t for _, _, t in table()}
    assert types >= {"idfa", "aaid", "rida", "tifa", "lgudid", "afai", "msai", "vida", None}


@pytest.mark.parametrize(("names", "makes", "kind"), table())
def test_each_row_of_the_docstring_table(
    names: list[str], makes: list[str] | None, kind: str | None
) -> None:
    for name in names:
        for make in makes if makes is not None else ["Acme"]:
            got, why = ifa_type_of(name, make)
            assert got == kind, (name, make)
            assert (why is None) is (kind is not None)


@pytest.mark.parametrize(
    ("os", "make", "kind"),
    [
        ("android", "samsung", "aaid"),  # Prebid Server's test requests, Go and Java
        ("Android", "Google", "aaid"),
        ("iOS", "Apple", "idfa"),
        ("ios", None, "idfa"),
        ("iPadOS", None, "idfa"),
        ("iOS 17", None, "idfa"),
        ("Roku OS", "Roku", "rida"),
        ("Web0S", "LG", "lgudid"),
        ("Xbox One", None, "msai"),
        ("Android", "AMAZON", "afai"),
        ("Linux", "LG Electronics", "lgudid"),
        ("Linux", None, None),
        ("Windows", "Microsoft", None),
        ("mac os", "Apple", None),
        ("", None, None),
        (7, None, None),
    ],
)
def test_spellings_seen_in_bid_requests(os: object, make: str | None, kind: str | None) -> None:
    assert ifa_type_of(os, make)[0] == kind
