"""IAB TCF v2 TC string decoder: the core segment, which is all the consent gate needs.

Our own decoder rather than a consent library: it runs on every ad request, so it works on one
big integer made from the base64url text, and identical strings (one user's many ad requests)
are decoded once.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Literal

import msgspec

MAX_TC_STRING_LENGTH = 16_384
"""Longer strings are refused unread (a full range-encoded GVL is a few kilobytes)."""

_TO_STANDARD_B64 = str.maketrans("-_", "+/")


class TcfDecodeError(ValueError):
    """The text is not a decodable TCF v2 TC string (or GPP tcfeuv2 section)."""


class BitsError(ValueError):
    """Not base64url, or a field runs past the end of the bits."""


class Bits:
    """A string of bits held as one integer, read left to right (most significant bit first)."""

    __slots__ = ("length", "pos", "value")

    def __init__(self, value: int, length: int) -> None:
        self.value = value
        self.length = length
        self.pos = 0

    @classmethod
    def from_base64url(cls, text: str) -> Bits:
        """Each character gives 6 bits. Accepts `=` padding and the standard `+` `/` alphabet."""
        text = text.rstrip("=")
        if not text:
            raise BitsError("empty segment")
        # Pad with 'A' (six zero bits) to whole bytes for the C decoder, then shift the padding
        # off again so that a truncated string is noticed.
        pad = -len(text) % 4
        try:
            raw = base64.b64decode(text.translate(_TO_STANDARD_B64) + "A" * pad, validate=True)
        except (binascii.Error, ValueError):
            raise BitsError("not base64url") from None
        return cls(int.from_bytes(raw, "big") >> (6 * pad), 6 * len(text))

    def remaining(self) -> int:
        return self.length - self.pos

    def read(self, width: int) -> int:
        end = self.pos + width
        if end > self.length:
            raise BitsError(f"truncated at bit {self.pos}")
        self.pos = end
        return (self.value >> (self.length - end)) & ((1 << width) - 1)

    def read_bool(self) -> bool:
        return self.read(1) == 1


def _letters(value: int) -> str:
    """Two 6-bit letters (0 = 'A'), as in ConsentLanguage and PublisherCC."""
    return chr(65 + (value >> 6)) + chr(65 + (value & 0x3F))


def _id_set(field: int, width: int) -> frozenset[int]:
    """Ids whose bit is set in a fixed-width field whose first (leftmost) bit is id 1."""
    return frozenset(i + 1 for i in range(width) if (field >> (width - 1 - i)) & 1)


class TcString(msgspec.Struct, frozen=True):
    """The core segment of a TC string. Vendor consents stay in their encoded form (a bitfield
    integer or a tuple of inclusive ranges); ask `vendor_consent(id)`."""

    version: int
    created: int
    """Deciseconds since the Unix epoch, as encoded."""
    last_updated: int
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_optins: frozenset[int]
    purposes_consent: frozenset[int]
    purposes_li_transparency: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    max_vendor_id: int
    vendor_encoding: Literal["bitfield", "range"]
    vendor_bitfield: int = 0
    """Bitfield encoding: `max_vendor_id` bits, vendor 1 first (most significant)."""
    vendor_ranges: tuple[tuple[int, int], ...] = ()
    """Range encoding: inclusive (start, end) pairs; a single id is (id, id)."""

    def vendor_consent(self, vendor_id: int) -> bool:
        """Whether `vendor_id` has consent. Ids above MaxVendorId never have."""
        if vendor_id < 1 or vendor_id > self.max_vendor_id:
            return False
        if self.vendor_encoding == "bitfield":
            return bool((self.vendor_bitfield >> (self.max_vendor_id - vendor_id)) & 1)
        return any(start <= vendor_id <= end for start, end in self.vendor_ranges)

    def vendor_consents(self) -> frozenset[int]:
        """All vendors with consent (materialised: for tests and diagnostics, not the hot path)."""
        if self.vendor_encoding == "bitfield":
            return _id_set(self.vendor_bitfield, self.max_vendor_id)
        return frozenset(
            v
            for start, end in self.vendor_ranges
            for v in range(start, min(end, self.max_vendor_id) + 1)
        )


def decode_tc_string(text: str) -> TcString:
    """Decode the core segment of a TC string (everything after the first '.' is ignored).

    Raises TcfDecodeError for anything that is not a well-formed TCF v2 core segment.
    """
    if not isinstance(text, str):
        raise TcfDecodeError("not a string")
    if len(text) > MAX_TC_STRING_LENGTH:
        raise TcfDecodeError("too long")
    return _decode_cached(text.strip())


@lru_cache(maxsize=4096)
def _decode_cached(text: str) -> TcString:
    core = text.split(".", 1)[0]
    try:
        return _decode_core(Bits.from_base64url(core))
    except BitsError as e:
        raise TcfDecodeError(str(e)) from None


def _decode_core(bits: Bits) -> TcString:
    version = bits.read(6)
    if version != 2:
        raise TcfDecodeError(f"unsupported TCF version {version}")
    created = bits.read(36)
    last_updated = bits.read(36)
    cmp_id = bits.read(12)
    cmp_version = bits.read(12)
    consent_screen = bits.read(6)
    consent_language = _letters(bits.read(12))
    vendor_list_version = bits.read(12)
    policy_version = bits.read(6)
    is_service_specific = bits.read_bool()
    use_non_standard_texts = bits.read_bool()
    special_features = _id_set(bits.read(12), 12)
    purposes_consent = _id_set(bits.read(24), 24)
    purposes_li = _id_set(bits.read(24), 24)
    purpose_one_treatment = bits.read_bool()
    publisher_cc = _letters(bits.read(12))
    max_vendor_id = bits.read(16)
    is_range = bits.read_bool()
    bitfield = 0
    ranges: tuple[tuple[int, int], ...] = ()
    if is_range:
        ranges = _read_ranges(bits)
    else:
        bitfield = bits.read(max_vendor_id)
    return TcString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        policy_version=policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_features,
        purposes_consent=purposes_consent,
        purposes_li_transparency=purposes_li,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        max_vendor_id=max_vendor_id,
        vendor_encoding="range" if is_range else "bitfield",
        vendor_bitfield=bitfield,
        vendor_ranges=ranges,
    )


def _read_ranges(bits: Bits) -> tuple[tuple[int, int], ...]:
    entries = bits.read(12)
    out: list[tuple[int, int]] = []
    for _ in range(entries):
        is_a_range = bits.read_bool()
        start = bits.read(16)
        end = bits.read(16) if is_a_range else start
        if start < 1 or end < start:
            raise TcfDecodeError(f"bad vendor range {start}-{end}")
        out.append((start, end))
    return tuple(out)
