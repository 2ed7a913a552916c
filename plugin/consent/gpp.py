"""IAB Global Privacy Platform (GPP) string: the header, the section ids, and Fibonacci coding.

`HEADER~SECTION~SECTION...`: the header lists the section ids in the order the sections follow.
The sections the consent gate reads are decoded elsewhere: tcfeuv2 (2, a TC string:
`plugin.consent.tcf`), tcfcav1 (5: `plugin.consent.tcfca`), uspv1 (6, a `1YNN` string:
`plugin.consent.usp`), usnat (7) and the US state sections (8-27: `plugin.consent.gpp_us`).
"""

from __future__ import annotations

from bisect import bisect_right
from functools import lru_cache

import msgspec

from plugin.consent.tcf import Bits, BitsError, Ranges

SECTION_TCFEUV2 = 2
SECTION_TCFCAV1 = 5
SECTION_USPV1 = 6
SECTION_USNAT = 7

MAX_GPP_LENGTH = 32_768
MAX_SECTION_IDS = 64
"""More section ids than this in one header is garbage (fewer than 30 are defined)."""
MAX_RANGE_ID = 0xFFFF
"""Ids in a Fibonacci range never exceed this (vendor ids are 16-bit everywhere else)."""

# Fibonacci weights 1, 2, 3, 5, 8, ... (F(2) onwards); 30 of them reach past a million.
_FIB = [1, 2]
while len(_FIB) < 30:
    _FIB.append(_FIB[-1] + _FIB[-2])


class GppDecodeError(ValueError):
    """The text is not a decodable GPP string or section."""


class GppString(msgspec.Struct, frozen=True):
    version: int
    section_ids: tuple[int, ...]
    sections: tuple[str, ...]
    """Raw section texts, in the order of `section_ids`."""

    def section(self, section_id: int) -> str | None:
        for sid, text in zip(self.section_ids, self.sections, strict=True):
            if sid == section_id:
                return text
        return None


def read_fibonacci(bits: Bits) -> int:
    """One Fibonacci-coded integer: weights 1, 2, 3, 5, ... ended by two consecutive 1 bits."""
    value = 0
    prev = 0
    for i in range(len(_FIB) + 1):
        bit = bits.read(1)
        if bit and prev:
            return value
        if bit:
            if i == len(_FIB):
                break
            value += _FIB[i]
        prev = bit
    raise BitsError("Fibonacci integer too long")


def fibonacci_length(n: int) -> int:
    """Bits in the Fibonacci code of n >= 1: one per weight up to the largest <= n, plus the
    closing 1."""
    return bisect_right(_FIB, n) + 1


def read_fibonacci_ranges(bits: Bits) -> Ranges:
    """Range(Fibonacci): Int(12) entries, each IsARange(1), its offset from the previous id, and
    for a group its length (end = start + length). Inclusive (start, end) pairs, ascending."""
    count = bits.read(12)
    out: list[tuple[int, int]] = []
    last = 0
    for _ in range(count):
        is_group = bits.read(1)
        start = last + read_fibonacci(bits)
        end = start + read_fibonacci(bits) if is_group else start
        if end > MAX_RANGE_ID:
            raise BitsError(f"id {end} out of range")
        out.append((start, end))
        last = end
    return tuple(out)


def read_fibonacci_range(bits: Bits) -> tuple[int, ...]:
    """A Range(Fibonacci) of at most MAX_SECTION_IDS ids (section or subsection ids), in order."""
    ids: list[int] = []
    for start, end in read_fibonacci_ranges(bits):
        if len(ids) + end - start + 1 > MAX_SECTION_IDS:
            raise BitsError("too many section ids")
        ids.extend(range(start, end + 1))
    return tuple(ids)


def decode_gpp(text: str) -> GppString:
    """Split a GPP string into its sections, named by the ids in its header.

    Raises GppDecodeError when the header is not a version 1 GPP header or does not name as
    many sections as follow it.
    """
    if not isinstance(text, str):
        raise GppDecodeError("not a string")
    if len(text) > MAX_GPP_LENGTH:
        raise GppDecodeError("too long")
    return _decode_gpp_cached(text.strip())


@lru_cache(maxsize=4096)
def _decode_gpp_cached(text: str) -> GppString:
    header, *sections = text.split("~")
    try:
        bits = Bits.from_base64url(header)
        kind = bits.read(6)
        version = bits.read(6)
        if kind != 3:
            raise GppDecodeError(f"header type {kind}, expected 3")
        if version != 1:
            raise GppDecodeError(f"unsupported GPP version {version}")
        section_ids = read_fibonacci_range(bits)
    except BitsError as e:
        raise GppDecodeError(f"header: {e}") from None
    if len(section_ids) != len(sections):
        raise GppDecodeError(
            f"header names {len(section_ids)} sections, string has {len(sections)}"
        )
    return GppString(version=version, section_ids=section_ids, sections=tuple(sections))
