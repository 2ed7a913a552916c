"""GPP section 5, tcfcav1: the IAB Canada TCF core subsection, and the consent rule for it.

Laid out like the EU TC string's core, with "express" consent where the EU has consent and
"implied" consent where it has legitimate interest. Vendor sets are GPP OptimizedRanges:
MaxVendorId(16), IsRangeEncoding(1), then a bitfield or a Range(Fibonacci), as both IAB
reference libraries write them; publisher restrictions are an N-ArrayOfRanges(6, 2) whose ids
are OptimizedRanges too.

Strings from @iabgpp/cmpapi before 3.2 wrote the ranges with 16-bit integers instead of
Fibonacci coding (the EU string's Range(Int)); the reference decoder still reads them. So do
we: both readings are tried, and the one that ends where the string does wins. Where both do
and they differ, the one an encoder would write back bit for bit wins (the specified one
first, as in the reference decoder); a core that fits neither, or both equally, is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from itertools import pairwise
from typing import Literal

import msgspec

from plugin.consent.gpp import (
    MAX_GPP_LENGTH,
    GppDecodeError,
    fibonacci_length,
    read_fibonacci_ranges,
)
from plugin.consent.tcf import (
    Bits,
    BitsError,
    CoreHeader,
    Ranges,
    RestrictionType,
    TcfDecodeError,
    VendorEncoding,
    id_set,
    in_vector,
    read_core_header,
    read_ranges,
    read_restriction,
    read_vendor_section,
)

Outcome = Literal["granted", "restricted", "purpose_denied", "vendor_denied"]
Basis = Literal["express", "implied"]

PURPOSE_NOT_USED = 1
""""Note that purpose 1 bit is not used in TCF Canada" (the section's specification)."""
_MAX_PADDING_BITS = 24
"""Zero bits a core may carry after its last field: base64url padding, nothing more."""


class VendorVector(msgspec.Struct, frozen=True):
    """A vendor set as encoded: a bitfield integer or inclusive ranges, up to `max_id`."""

    max_id: int
    encoding: VendorEncoding
    bitfield: int = 0
    ranges: Ranges = ()

    def __contains__(self, vendor_id: object) -> bool:
        if not isinstance(vendor_id, int):
            return False
        return in_vector(vendor_id, self.max_id, self.encoding, self.bitfield, self.ranges)


class CaRestriction(msgspec.Struct, frozen=True):
    """One PubRestrictions entry: the publisher's restriction on a purpose for some vendors."""

    purpose_id: int
    restriction_type: RestrictionType
    """0 not allowed, 1 require express consent, 2 require implied consent, 3 undefined."""
    vendors: VendorVector


class TcfCa(CoreHeader, frozen=True):
    """The tcfcav1 core subsection."""

    use_non_standard_stacks: bool
    special_feature_express_consent: frozenset[int]
    purposes_express: frozenset[int]
    purposes_implied: frozenset[int]
    vendor_express: VendorVector
    vendor_implied: VendorVector
    publisher_restrictions: tuple[CaRestriction, ...] = ()
    legacy_ranges: bool = False
    """Read the pre-3.2 way (16-bit integer ranges)."""

    def consent(self, purposes: Iterable[int], vendor_id: int) -> Outcome:
        """May `vendor_id` process for every one of `purposes`?

        Each purpose needs consent of one kind, express or implied, given both to the purpose
        and to the vendor (a vendor relies on one legal basis per purpose). Restriction type 0
        (not allowed) or 3 (undefined) on any of the purposes denies; type 1 leaves express
        consent only, type 2 implied only (both: nothing). Purpose 1 is not used in TCF Canada,
        so it is not looked for; with no other purpose, the vendor's consent of either kind is
        enough.
        """
        bases: set[Basis] = {"express", "implied"}
        wanted = tuple(purposes)
        for purpose in wanted:
            types = {
                r.restriction_type
                for r in self.publisher_restrictions
                if r.purpose_id == purpose and vendor_id in r.vendors
            }
            if RestrictionType.NOT_ALLOWED in types or RestrictionType.UNDEFINED in types:
                return "restricted"
            if RestrictionType.REQUIRE_CONSENT in types:
                bases.discard("implied")
            if RestrictionType.REQUIRE_LI in types:
                bases.discard("express")
        if not bases:
            return "restricted"
        for purpose in (p for p in wanted if p != PURPOSE_NOT_USED):
            given = [b for b in bases if purpose in self._purposes(b)]
            if not given:
                return "purpose_denied"
            if not any(vendor_id in self._vendors(b) for b in given):
                return "vendor_denied"
        if not any(vendor_id in self._vendors(b) for b in bases):
            return "vendor_denied"
        return "granted"

    def _purposes(self, basis: Basis) -> frozenset[int]:
        return self.purposes_express if basis == "express" else self.purposes_implied

    def _vendors(self, basis: Basis) -> VendorVector:
        return self.vendor_express if basis == "express" else self.vendor_implied


def decode_tcfca(text: str) -> TcfCa:
    """The core subsection (before the first '.') of a tcfcav1 section; raises GppDecodeError."""
    if not isinstance(text, str):
        raise GppDecodeError("not a string")
    if len(text) > MAX_GPP_LENGTH:
        raise GppDecodeError("too long")
    return _decode_cached(text.strip())


@lru_cache(maxsize=1024)
def _decode_cached(text: str) -> TcfCa:
    core = text.split(".", 1)[0]
    problem = "bits other than padding left over, read either way"
    fits: list[tuple[int, int, TcfCa]] = []
    for legacy in (False, True):
        try:
            bits = Bits.from_base64url(core)
            decoded = _decode_core(bits, legacy)
        except (BitsError, TcfDecodeError, GppDecodeError) as e:
            problem = str(e)
            continue
        used, left = bits.pos, bits.remaining()
        if left < _MAX_PADDING_BITS and bits.read(left) == 0:
            fits.append((used, bits.length, decoded))
    if not fits:
        raise GppDecodeError(f"tcfcav1: {problem}")
    if len(fits) == 1 or fits[0][2] == msgspec.structs.replace(fits[1][2], legacy_ranges=False):
        return fits[0][2]
    for used, length, decoded in fits:
        if length in _padded_lengths(used) and _as_an_encoder_writes_it(decoded):
            return decoded
    raise GppDecodeError("tcfcav1: read either way, with different meanings")


def _decode_core(bits: Bits, legacy: bool) -> TcfCa:
    header = read_core_header(bits, 1)
    ranges: Callable[[Bits], Ranges] = read_ranges if legacy else read_fibonacci_ranges
    use_non_standard_stacks = bits.read_bool()
    special_features = id_set(bits.read(12), 12)
    purposes_express = id_set(bits.read(24), 24)
    purposes_implied = id_set(bits.read(24), 24)
    vendor_express = VendorVector(*read_vendor_section(bits, ranges))
    vendor_implied = VendorVector(*read_vendor_section(bits, ranges))
    reader = _read_legacy_restriction if legacy else _read_restriction
    restrictions = tuple(reader(bits) for _ in range(bits.read(12)))
    return TcfCa(
        **header,
        use_non_standard_stacks=use_non_standard_stacks,
        special_feature_express_consent=special_features,
        purposes_express=purposes_express,
        purposes_implied=purposes_implied,
        vendor_express=vendor_express,
        vendor_implied=vendor_implied,
        publisher_restrictions=restrictions,
        legacy_ranges=legacy,
    )


def _read_restriction(bits: Bits) -> CaRestriction:
    """Key: PurposeId(6), Type(2), then the vendor ids as an OptimizedRange."""
    purpose_id = bits.read(6)
    restriction_type = RestrictionType(bits.read(2))
    vendors = VendorVector(*read_vendor_section(bits, read_fibonacci_ranges))
    return CaRestriction(purpose_id, restriction_type, vendors)


def _read_legacy_restriction(bits: Bits) -> CaRestriction:
    """As the EU string's: PurposeId(6), Type(2), then a Range(Int) (ids in any order)."""
    restriction = read_restriction(bits)
    ranges = restriction.vendor_ranges
    top = max((end for _, end in ranges), default=0)
    vendors = VendorVector(top, "range", 0, ranges)
    return CaRestriction(restriction.purpose_id, restriction.restriction_type, vendors)


# --- which layout, where both readings fit ---


def _padded_lengths(used: int) -> tuple[int, ...]:
    """Lengths an encoder pads `used` bits to: whole characters, whole bytes then characters
    (@iabgpp/cmpapi), or whole 24-bit groups."""
    return (-(-used // 6) * 6, -(-(-(-used // 8) * 8) // 6) * 6, -(-used // 24) * 24)


def _as_an_encoder_writes_it(ca: TcfCa) -> bool:
    """Every OptimizedRange as both reference encoders write one: MaxId the highest id, the
    shorter of bitfield and range (range on a tie), ranges ascending with adjacent ids merged.
    Only asked where both readings fit, which a string of either layout rarely does."""
    legacy = ca.legacy_ranges
    vectors = [ca.vendor_express, ca.vendor_implied]
    if not legacy:
        vectors += [r.vendors for r in ca.publisher_restrictions]
    elif not all(_ascending(r.vendors.ranges) for r in ca.publisher_restrictions):
        return False
    return all(_canonical(v, legacy) for v in vectors)


def _canonical(vector: VendorVector, legacy: bool) -> bool:
    if vector.encoding == "bitfield":
        if vector.max_id and not vector.bitfield & 1:
            return False  # MaxId is not the highest id
        bits = format(vector.bitfield, f"0{vector.max_id}b") if vector.max_id else ""
        groups: Iterable[tuple[int, int]] = ((m.start() + 1, m.end()) for m in _ONES.finditer(bits))
    else:
        if not _ascending(vector.ranges) or _last(vector.ranges) != vector.max_id:
            return False
        groups = vector.ranges
    range_is_shorter = _range_bits(groups, legacy, stop_above=vector.max_id) <= vector.max_id
    return range_is_shorter is (vector.encoding == "range")


_ONES = re.compile("1+")


def _last(ranges: Ranges) -> int:
    return ranges[-1][1] if ranges else 0


def _range_bits(groups: Iterable[tuple[int, int]], legacy: bool, stop_above: int) -> int:
    """The length of `groups` as a Range(Int) (`legacy`) or a Range(Fibonacci), counted only
    until it passes `stop_above`."""
    total, last = 12, 0
    for start, end in groups:
        if total > stop_above:
            break
        if legacy:
            total += 17 if start == end else 33
        else:
            total += 1 + fibonacci_length(start - last)
            total += fibonacci_length(end - start) if end > start else 0
        last = end
    return total


def _ascending(ranges: Ranges) -> bool:
    """Ascending, with a gap between ranges (an encoder merges adjacent ids into one range)."""
    return all(b[0] > a[1] + 1 for a, b in pairwise(ranges))
