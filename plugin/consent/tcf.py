"""IAB TCF v2 TC string decoder: the core segment, and the publisher TC segment.

The core segment runs to the end of the publisher restrictions: a restriction can forbid a
purpose for a vendor the user consented to, so a segment that stops before them is refused
rather than read as "no restrictions". The publisher TC segment (segment type 3, after a `.`)
holds the purposes the user consented to for the publisher itself: the gate reads it only
with `[consent] tcf_basis = "publisher"` (`decode_publisher_tc`).

Our own decoder rather than a consent library: it runs on every ad request, so it works on one
big integer made from the base64url text, and identical strings (one user's many ad requests)
are decoded once.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from enum import IntEnum
from functools import lru_cache
from typing import Any, Literal

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


def letters(value: int) -> str:
    """Two 6-bit letters (0 = 'A'), as in ConsentLanguage and PublisherCC."""
    return chr(65 + (value >> 6)) + chr(65 + (value & 0x3F))


def id_set(field: int, width: int) -> frozenset[int]:
    """Ids whose bit is set in a fixed-width field whose first (leftmost) bit is id 1."""
    return frozenset(i + 1 for i in range(width) if (field >> (width - 1 - i)) & 1)


VendorEncoding = Literal["bitfield", "range"]
Ranges = tuple[tuple[int, int], ...]
"""Inclusive (start, end) vendor id pairs; a single id is (id, id)."""


def in_vector(
    vendor_id: int, max_id: int, encoding: VendorEncoding, bitfield: int, ranges: Ranges
) -> bool:
    """Membership in a vendor section (consent or LI). Ids above its MaxVendorId never are."""
    if vendor_id < 1 or vendor_id > max_id:
        return False
    if encoding == "bitfield":
        return bool((bitfield >> (max_id - vendor_id)) & 1)
    return any(start <= vendor_id <= end for start, end in ranges)


def _vector_ids(
    max_id: int, encoding: VendorEncoding, bitfield: int, ranges: Ranges
) -> frozenset[int]:
    if encoding == "bitfield":
        return id_set(bitfield, max_id)
    return frozenset(v for start, end in ranges for v in range(start, min(end, max_id) + 1))


class RestrictionType(IntEnum):
    """A publisher restriction's 2-bit RestrictionType."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LI = 2
    UNDEFINED = 3
    """Reserved by the spec: a string carrying it is malformed, so read it as a denial."""


_MOST_RESTRICTIVE_FIRST: tuple[RestrictionType, ...] = (
    RestrictionType.NOT_ALLOWED,
    RestrictionType.UNDEFINED,
    RestrictionType.REQUIRE_LI,
    RestrictionType.REQUIRE_CONSENT,
)
"""For a vendor that relies on consent: which of several matching types wins."""


class PublisherRestriction(msgspec.Struct, frozen=True):
    """One PubRestrictionEntry: a restriction on one purpose for the vendors in its ranges."""

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ranges: Ranges

    def covers(self, vendor_id: int) -> bool:
        return any(start <= vendor_id <= end for start, end in self.vendor_ranges)


class CoreHeader(msgspec.Struct, frozen=True):
    """The fields every TC string core starts with, the EU's and IAB Canada's alike."""

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


class TcString(CoreHeader, frozen=True):
    """The core segment of a TC string. Vendor consents and LI stay in their encoded form (a
    bitfield integer or a tuple of inclusive ranges); ask `vendor_consent(id)`,
    `vendor_legitimate_interest(id)` and `restriction_type(purpose, id)`."""

    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_optins: frozenset[int]
    purposes_consent: frozenset[int]
    purposes_li_transparency: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    max_vendor_id: int
    vendor_encoding: VendorEncoding
    vendor_bitfield: int = 0
    """Bitfield encoding: `max_vendor_id` bits, vendor 1 first (most significant)."""
    vendor_ranges: Ranges = ()
    """Range encoding of the vendor consents."""
    vendor_li_max_id: int = 0
    """MaxVendorId of the vendor legitimate-interest section."""
    vendor_li_encoding: VendorEncoding = "bitfield"
    vendor_li_bitfield: int = 0
    vendor_li_ranges: Ranges = ()
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    """In the order encoded; more than one may name the same purpose and vendor."""

    def vendor_consent(self, vendor_id: int) -> bool:
        """Whether `vendor_id` has consent. Ids above MaxVendorId never have."""
        return in_vector(
            vendor_id,
            self.max_vendor_id,
            self.vendor_encoding,
            self.vendor_bitfield,
            self.vendor_ranges,
        )

    def vendor_consents(self) -> frozenset[int]:
        """All vendors with consent (materialised: for tests and diagnostics, not the hot path)."""
        return _vector_ids(
            self.max_vendor_id, self.vendor_encoding, self.vendor_bitfield, self.vendor_ranges
        )

    def vendor_legitimate_interest(self, vendor_id: int) -> bool:
        """Whether `vendor_id` has its legitimate interest established (not objected to)."""
        return in_vector(
            vendor_id,
            self.vendor_li_max_id,
            self.vendor_li_encoding,
            self.vendor_li_bitfield,
            self.vendor_li_ranges,
        )

    def vendor_legitimate_interests(self) -> frozenset[int]:
        """All vendors with legitimate interest (materialised, like `vendor_consents`)."""
        return _vector_ids(
            self.vendor_li_max_id,
            self.vendor_li_encoding,
            self.vendor_li_bitfield,
            self.vendor_li_ranges,
        )

    def restriction_type(self, purpose_id: int, vendor_id: int) -> RestrictionType | None:
        """The publisher restriction on `purpose_id` for `vendor_id`, or None if there is none.

        The spec allows one type per purpose and vendor; a string naming several is malformed,
        and the one most restrictive for a vendor relying on consent is returned (0, 3, 2, 1),
        so a contradiction never loosens the gate.
        """
        found = {
            r.restriction_type
            for r in self.publisher_restrictions
            if r.purpose_id == purpose_id and r.covers(vendor_id)
        }
        return next((t for t in _MOST_RESTRICTIVE_FIRST if t in found), None)


SEGMENT_PUBLISHER_TC = 3
"""SegmentType of the publisher TC segment (1 is disclosed vendors, 2 allowed vendors)."""


class PublisherTc(msgspec.Struct, frozen=True):
    """The publisher TC segment: purposes consented (and LI established) for the publisher,
    and the publisher's custom purposes."""

    purposes_consent: frozenset[int]
    purposes_li_transparency: frozenset[int]
    custom_purposes_consent: frozenset[int] = frozenset()
    custom_purposes_li_transparency: frozenset[int] = frozenset()


def decode_publisher_tc(text: str) -> PublisherTc | None:
    """The publisher TC segment of a TC string (or GPP tcfeuv2 section); None when it has
    none. The core segment must decode too. Raises TcfDecodeError for a malformed string, a
    malformed publisher segment, or more than one of them (the spec allows one)."""
    decode_tc_string(text)
    return _publisher_cached(text.strip())


@lru_cache(maxsize=4096)
def _publisher_cached(text: str) -> PublisherTc | None:
    found: PublisherTc | None = None
    for segment in text.split(".")[1:]:
        try:
            bits = Bits.from_base64url(segment)
            if bits.read(3) != SEGMENT_PUBLISHER_TC:
                continue
            if found is not None:
                raise TcfDecodeError("more than one publisher TC segment")
            found = _decode_publisher(bits)
        except BitsError as e:
            raise TcfDecodeError(f"optional segment: {e}") from None
    return found


def _decode_publisher(bits: Bits) -> PublisherTc:
    consent = id_set(bits.read(24), 24)
    li = id_set(bits.read(24), 24)
    custom = bits.read(6)
    return PublisherTc(
        purposes_consent=consent,
        purposes_li_transparency=li,
        custom_purposes_consent=id_set(bits.read(custom), custom),
        custom_purposes_li_transparency=id_set(bits.read(custom), custom),
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


def read_core_header(bits: Bits, version: int) -> dict[str, Any]:
    """`CoreHeader`'s fields: Version (which must be `version`), the CMP and vendor list."""
    found = bits.read(6)
    if found != version:
        raise TcfDecodeError(f"unsupported TCF version {found}")
    return dict(
        version=found,
        created=bits.read(36),
        last_updated=bits.read(36),
        cmp_id=bits.read(12),
        cmp_version=bits.read(12),
        consent_screen=bits.read(6),
        consent_language=letters(bits.read(12)),
        vendor_list_version=bits.read(12),
        policy_version=bits.read(6),
    )


def _decode_core(bits: Bits) -> TcString:
    header = read_core_header(bits, 2)
    is_service_specific = bits.read_bool()
    use_non_standard_texts = bits.read_bool()
    special_features = id_set(bits.read(12), 12)
    purposes_consent = id_set(bits.read(24), 24)
    purposes_li = id_set(bits.read(24), 24)
    purpose_one_treatment = bits.read_bool()
    publisher_cc = letters(bits.read(12))
    max_vendor_id, encoding, bitfield, ranges = read_vendor_section(bits)
    li_max_id, li_encoding, li_bitfield, li_ranges = read_vendor_section(bits)
    restrictions = tuple(read_restriction(bits) for _ in range(bits.read(12)))
    return TcString(
        **header,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_features,
        purposes_consent=purposes_consent,
        purposes_li_transparency=purposes_li,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        max_vendor_id=max_vendor_id,
        vendor_encoding=encoding,
        vendor_bitfield=bitfield,
        vendor_ranges=ranges,
        vendor_li_max_id=li_max_id,
        vendor_li_encoding=li_encoding,
        vendor_li_bitfield=li_bitfield,
        vendor_li_ranges=li_ranges,
        publisher_restrictions=restrictions,
    )


def read_vendor_section(
    bits: Bits, ranges: Callable[[Bits], Ranges] | None = None
) -> tuple[int, VendorEncoding, int, Ranges]:
    """MaxVendorId, IsRangeEncoding, then a bitfield (read as one integer) or range entries
    (`read_ranges`, or the GPP OptimizedRange's Fibonacci `ranges`)."""
    max_id = bits.read(16)
    if bits.read_bool():
        return max_id, "range", 0, (ranges or read_ranges)(bits)
    return max_id, "bitfield", bits.read(max_id), ()


def read_restriction(bits: Bits) -> PublisherRestriction:
    """PurposeId (6 bits), RestrictionType (2 bits), then range entries like a vendor section."""
    purpose_id = bits.read(6)
    restriction_type = RestrictionType(bits.read(2))
    return PublisherRestriction(purpose_id, restriction_type, read_ranges(bits))


def read_ranges(bits: Bits) -> Ranges:
    """NumEntries (12 bits), then IsARange, StartOrOnlyVendorId and, for a range, EndVendorId."""
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
