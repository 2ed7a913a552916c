"""A test-only TC string encoder (the IAB reference vectors are in tests/vectors/), shared by
the consent tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "tcf_vectors.json").read_text()
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# --- a test-only encoder: the decoder's mirror image, written from the spec's field table ---


def bits_to_base64url(bits: str) -> str:
    bits += "0" * (-len(bits) % 6)
    return "".join(B64URL[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def _int(value: int, width: int) -> str:
    assert 0 <= value < (1 << width)
    return format(value, f"0{width}b")


def _field(ids: frozenset[int] | set[int], width: int) -> str:
    return "".join("1" if i in ids else "0" for i in range(1, width + 1))


def _letters(code: str) -> str:
    return _int(ord(code[0]) - 65, 6) + _int(ord(code[1]) - 65, 6)


def to_ranges(ids: set[int] | frozenset[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(ids):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _range_entries(entries: Sequence[tuple[int, int]]) -> str:
    """NumEntries, then each entry: IsARange, StartOrOnlyVendorId, EndVendorId for a range."""
    bits = _int(len(entries), 12)
    for start, end in entries:
        if start == end:
            bits += "0" + _int(start, 16)
        else:
            bits += "1" + _int(start, 16) + _int(end, 16)
    return bits


def _vendor_section(
    ids: set[int] | frozenset[int],
    encoding: str,
    max_id: int | None,
    ranges: list[tuple[int, int]] | None,
) -> str:
    if max_id is None:
        max_id = max(ids, default=0)
    if encoding == "bitfield":
        return _int(max_id, 16) + "0" + _field(ids, max_id)
    return _int(max_id, 16) + "1" + _range_entries(to_ranges(ids) if ranges is None else ranges)


Restriction = tuple[int, int, list[tuple[int, int]]]
"""(PurposeId, RestrictionType, vendor ranges) as encoded."""


def encode_tc_bits(
    *,
    purposes: set[int] | frozenset[int] = frozenset(),
    vendors: set[int] | frozenset[int] = frozenset(),
    encoding: str = "bitfield",
    ranges: list[tuple[int, int]] | None = None,
    max_vendor_id: int | None = None,
    li_vendors: set[int] | frozenset[int] = frozenset(),
    li_encoding: str = "bitfield",
    li_ranges: list[tuple[int, int]] | None = None,
    li_max_vendor_id: int | None = None,
    restrictions: Sequence[Restriction] = (),
    stop_after: Literal["vendors", "li", "restrictions"] = "restrictions",
    version: int = 2,
    cmp_id: int = 7,
    cmp_version: int = 1,
    vendor_list_version: int = 200,
    policy_version: int = 4,
    service_specific: bool = False,
    special_features: set[int] | frozenset[int] = frozenset(),
    purposes_li: set[int] | frozenset[int] = frozenset(),
    language: str = "FR",
    publisher_cc: str = "GB",
    created_ds: int = 17_000_000_000,
) -> str:
    """The bits of a TC string core segment. `ranges` / `li_ranges` override the range entries
    (to encode bad ones); `stop_after` cuts the segment after a section (to truncate it)."""
    bits = (
        _int(version, 6)
        + _int(created_ds, 36)
        + _int(created_ds, 36)
        + _int(cmp_id, 12)
        + _int(cmp_version, 12)
        + _int(1, 6)
        + _letters(language)
        + _int(vendor_list_version, 12)
        + _int(policy_version, 6)
        + ("1" if service_specific else "0")
        + "0"  # UseNonStandardTexts
        + _field(special_features, 12)
        + _field(purposes, 24)
        + _field(purposes_li, 24)
        + "0"  # PurposeOneTreatment
        + _letters(publisher_cc)
        + _vendor_section(vendors, encoding, max_vendor_id, ranges)
    )
    if stop_after == "vendors":
        return bits
    bits += _vendor_section(li_vendors, li_encoding, li_max_vendor_id, li_ranges)
    if stop_after == "li":
        return bits
    bits += _int(len(restrictions), 12)
    for purpose_id, restriction_type, entries in restrictions:
        bits += _int(purpose_id, 6) + _int(restriction_type, 2) + _range_entries(entries)
    return bits


def encode_tc_core(**fields: Any) -> str:
    """A TC string core segment: `encode_tc_bits` in base64url."""
    return bits_to_base64url(encode_tc_bits(**fields))


def base64url_to_bits(text: str) -> str:
    return "".join(format(B64URL.index(c), "06b") for c in text)
