"""GPP US sections: usnat (7) and the 20 state sections (8-27), described by one table.

Every field of every section is decoded as the IAB GPP specification lays it out; the consent
gate then reads a few of them (`UsSection.denial`, rule per field in docs/privacy.md).

Two layouts exist:

- *Classic* (usnat and states 8-23): `CORE[.SUBSECTION...]`. The core starts with Version(6),
  then notices, opt-outs, the sensitive-data list, the known-child consents and the MSPA fields,
  each value a 2-bit integer (0 not applicable, 1 and 2 as the field says). Each subsection
  starts with SubsectionType(2); type 1 is GPC, one Boolean.
- *Header* (usmd 24, usin 25, usky 26, usri 27): the spec puts a section header,
  SectionID(6) Version(6) SubSections(Range(Fibonacci)), in a segment of its own before the core
  (`HEADER.CORE[.SUBSECTION...]`, subsections in the order the header lists them), and the core
  starts with MspaVersion(6). The IAB's JavaScript library (@iabgpp/cmpapi 3.2) writes these
  sections without the header (`CORE[.SUBSECTION]`). Both are read: a first segment whose first
  6 bits are the section's own id, followed by more segments, is a header.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, NamedTuple

import msgspec

from plugin.consent.gpp import MAX_GPP_LENGTH, GppDecodeError, read_fibonacci_range
from plugin.consent.tcf import Bits, BitsError

Value = int | tuple[int, ...]
Denial = Literal["known_child", "opted_out", "gpc", "service_provider_mode", "no_notice"]


class Field(NamedTuple):
    name: str
    width: int = 2
    items: int = 0
    """0: one integer (Int(width)); n: a list of n of them (the spec's N-Bitfield(2, n))."""


class Layout(NamedTuple):
    name: str
    """The section's client-side API prefix (`usca`)."""
    cores: dict[int, tuple[Field, ...]]
    """Classic: Version → the core fields after Version. Header: {1: the core fields}."""
    gpc: bool
    """The specification defines a GPC subsection for this section."""
    header: bool = False
    by_length: bool = False
    """usnat: the core's length, not its Version, tells which of `cores` it is. Version 2 grew
    SensitiveDataProcessing from 12 to 16 entries and KnownChildSensitiveDataConsents from 2 to
    3, and @iabgpp/cmpapi before 3.2 wrote that longer core with Version 1; the reference
    decoder picks the layout by length as well."""
    sub1: tuple[Field, ...] = ()
    """Header layout: the fields of subsection 1 (GPC, or sensitive-data consents)."""

    @property
    def has_known_child(self) -> bool:
        return any(f.name == KNOWN_CHILD for core in self.cores.values() for f in core)


OPT_OUTS = ("SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut")
"""1 = opted out: denies."""
NOTICES = (
    "SharingNotice",
    "ProcessingNotice",
    "SaleOptOutNotice",
    "SharingOptOutNotice",
    "TargetedAdvertisingOptOutNotice",
)
"""2 = notice not given: denies (the viewer had no chance to opt out)."""
KNOWN_CHILD = "KnownChildSensitiveDataConsents"
"""Any entry 1 (no consent) denies."""


def _f(*names: str) -> tuple[Field, ...]:
    return tuple(Field(n) for n in names)


_MSPA = _f("MspaCoveredTransaction", "MspaOptOutOptionMode", "MspaServiceProviderMode")
_SDP = "SensitiveDataProcessing"
_GPC_SUB = (Field("SubsectionType"), Field("Gpc", 1))


def _usnat(sensitive: int, known_child: int) -> tuple[Field, ...]:
    notices = _f(
        "SharingNotice",
        "SaleOptOutNotice",
        "SharingOptOutNotice",
        "TargetedAdvertisingOptOutNotice",
        "SensitiveDataProcessingOptOutNotice",
        "SensitiveDataLimitUseNotice",
    )
    rest = (Field(_SDP, items=sensitive), Field(KNOWN_CHILD, items=known_child))
    return (*notices, *_f(*OPT_OUTS), *rest, *_f("PersonalDataConsents"), *_MSPA)


def _state(
    first_notice: str,
    sensitive: int,
    known_child: int = 0,
    *,
    sensitive_notice: str | None = None,
    additional: bool = True,
) -> dict[int, tuple[Field, ...]]:
    """Version 1 of the states that share usva's shape: a notice, the sale and targeted
    advertising notices (and for some a sensitive-data notice), their two opt-outs, the
    sensitive-data list, known-child consents (one field, or a list of `known_child`)."""
    notices = (first_notice, "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice")
    fields = _f(*notices, *((sensitive_notice,) if sensitive_notice else ()))
    fields += _f("SaleOptOut", "TargetedAdvertisingOptOut")
    fields += (Field(_SDP, items=sensitive), Field(KNOWN_CHILD, items=known_child))
    fields += _f("AdditionalDataProcessingConsent") if additional else ()
    return {1: fields + _MSPA}


def _header_core(known_child: bool) -> dict[int, tuple[Field, ...]]:
    fields = (
        Field("MspaVersion", 6),
        *_f("MspaCoveredTransaction", "MspaMode", "ProcessingNotice", "SaleOptOutNotice"),
        *_f("TargetedAdvertisingOptOutNotice", "SaleOptOut", "TargetedAdvertisingOptOut"),
        *_f(*((KNOWN_CHILD,) if known_child else ()), "AdditionalDataProcessingConsent"),
    )
    return {1: fields}


_CA = (
    *_f("SaleOptOutNotice", "SharingOptOutNotice", "SensitiveDataLimitUseNotice"),
    *_f("SaleOptOut", "SharingOptOut"),
    Field(_SDP, items=9),
    Field(KNOWN_CHILD, items=2),
    *_f("PersonalDataConsents"),
    *_MSPA,
)
_SENSITIVE_SUB = (Field(_SDP, items=8),)

US_SECTIONS: dict[int, Layout] = {
    7: Layout("usnat", {1: _usnat(12, 2), 2: _usnat(16, 3)}, gpc=True, by_length=True),
    8: Layout("usca", {1: _CA}, gpc=True),
    9: Layout("usva", _state("SharingNotice", 8, additional=False), gpc=False),
    10: Layout("usco", _state("SharingNotice", 7, additional=False), gpc=True),
    11: Layout(
        "usut",
        _state(
            "SharingNotice",
            8,
            sensitive_notice="SensitiveDataProcessingOptOutNotice",
            additional=False,
        ),
        gpc=False,
    ),
    12: Layout("usct", _state("SharingNotice", 8, 3, additional=False), gpc=True),
    13: Layout("usfl", _state("ProcessingNotice", 8, 3), gpc=False),
    14: Layout("usmt", _state("SharingNotice", 8, 3), gpc=True),
    15: Layout("usor", _state("ProcessingNotice", 11, 3), gpc=True),
    16: Layout("ustx", _state("ProcessingNotice", 8), gpc=True),
    17: Layout("usde", _state("ProcessingNotice", 9, 5), gpc=True),
    18: Layout(
        "usia",
        _state(
            "ProcessingNotice", 8, sensitive_notice="SensitiveDataOptOutNotice", additional=False
        ),
        gpc=True,
    ),
    19: Layout("usne", _state("ProcessingNotice", 8), gpc=True),
    20: Layout("usnh", _state("ProcessingNotice", 8, 3), gpc=True),
    21: Layout("usnj", _state("ProcessingNotice", 10, 5), gpc=True),
    22: Layout("ustn", _state("ProcessingNotice", 8), gpc=True),
    23: Layout("usmn", _state("ProcessingNotice", 8), gpc=True),
    24: Layout("usmd", _header_core(False), gpc=True, header=True, sub1=_GPC_SUB),
    25: Layout("usin", _header_core(True), gpc=False, header=True, sub1=_SENSITIVE_SUB),
    26: Layout("usky", _header_core(True), gpc=False, header=True, sub1=_SENSITIVE_SUB),
    27: Layout("usri", _header_core(True), gpc=False, header=True, sub1=_SENSITIVE_SUB),
}
"""Section id → layout, as the IAB GPP specification defines each section."""

_LONGEST_FIRST = {
    sid: sorted(
        ((sum(f.width * (f.items or 1) for f in core), core) for core in layout.cores.values()),
        key=lambda sized: -sized[0],
    )
    for sid, layout in US_SECTIONS.items()
    if layout.by_length
}
"""The cores of a `by_length` layout with their sizes in bits, the longest first."""


class UsSection(msgspec.Struct, frozen=True):
    """One decoded US section: every field by its specification name."""

    section_id: int
    name: str
    version: int
    """The section's Version (classic layout) or its header's Version (1 when it has none)."""
    fields: dict[str, Value]
    gpc: bool | None = None
    """The GPC subsection's Gpc; None when the string has no GPC subsection."""

    def denial(self) -> Denial | None:
        """What stops behavioral data for this viewer, most specific first; None: nothing."""
        get = self.fields.get
        if 1 in _as_tuple(get(KNOWN_CHILD, ())):
            return "known_child"
        if any(get(name) == 1 for name in OPT_OUTS):
            return "opted_out"
        if self.gpc:
            return "gpc"
        if get("MspaServiceProviderMode") == 1 or get("MspaMode") == 2:
            return "service_provider_mode"
        if any(get(name) == 2 for name in NOTICES):
            return "no_notice"
        return None


def _as_tuple(value: Value) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


def decode_us_section(section_id: int, text: str) -> UsSection:
    """Decode a US section (`section_id` a key of US_SECTIONS).

    Raises GppDecodeError for anything that is not that section as specified: a field cut off,
    a version not defined, or a 2-bit value of 3 (no field defines it).
    """
    if section_id not in US_SECTIONS:
        raise GppDecodeError(f"section {section_id} is not a US section")
    if not isinstance(text, str):
        raise GppDecodeError("not a string")
    if len(text) > MAX_GPP_LENGTH:
        raise GppDecodeError("too long")
    return _decode_cached(section_id, text.strip())


@lru_cache(maxsize=2048)
def _decode_cached(section_id: int, text: str) -> UsSection:
    layout = US_SECTIONS[section_id]
    try:
        if layout.header:
            return _decode_header_layout(section_id, layout, text.split("."))
        return _decode_classic(section_id, layout, text.split("."))
    except BitsError as e:
        raise GppDecodeError(f"{layout.name}: {e}") from None


def _decode_classic(section_id: int, layout: Layout, segments: list[str]) -> UsSection:
    bits = Bits.from_base64url(segments[0])
    version = bits.read(6)
    if version not in layout.cores:
        raise GppDecodeError(f"{layout.name}: unsupported version {version}")
    core = layout.cores[version]
    if layout.by_length:
        left = bits.remaining()
        core = next((c for size, c in _LONGEST_FIRST[section_id] if size <= left), core)
    fields = _read_fields(bits, core, layout.name)
    return UsSection(section_id, layout.name, version, fields, gpc=_read_gpc(segments[1:]))


def _read_gpc(segments: list[str]) -> bool | None:
    """Subsections after the core: SubsectionType(2), type 1 being GPC. Read in every section,
    also where the spec defines none (a GPC bit a CMP wrote is the viewer's opt-out); other
    types are not defined and are skipped."""
    gpc: bool | None = None
    for segment in segments:
        bits = Bits.from_base64url(segment)
        if bits.read(2) == 1:
            gpc = bool(gpc) or bits.read_bool()
    return gpc


def _decode_header_layout(section_id: int, layout: Layout, segments: list[str]) -> UsSection:
    first = Bits.from_base64url(segments[0])
    version = 1
    if len(segments) > 1 and first.read(6) == section_id:
        version = first.read(6)
        if version != 1:
            raise GppDecodeError(f"{layout.name}: unsupported version {version}")
        subsections = read_fibonacci_range(first)
        if len(segments) != 2 + len(subsections):
            raise GppDecodeError(f"{layout.name}: header names {len(subsections)} subsections")
        core, rest = segments[1], list(zip(subsections, segments[2:], strict=True))
    else:
        if len(segments) > 2:
            raise GppDecodeError(f"{layout.name}: {len(segments)} segments, at most 2")
        core, rest = segments[0], [(1, s) for s in segments[1:]]
    fields = _read_fields(Bits.from_base64url(core), layout.cores[1], layout.name)
    gpc: bool | None = None
    for subsection_id, segment in rest:
        if subsection_id != 1:
            continue  # not defined by the spec: nothing in it can be read
        sub = _read_fields(Bits.from_base64url(segment), layout.sub1, layout.name)
        if "Gpc" in sub:
            if sub["SubsectionType"] != 1:
                raise GppDecodeError(
                    f"{layout.name}: GPC subsection of type {sub['SubsectionType']}"
                )
            gpc = sub["Gpc"] == 1
        else:
            fields.update(sub)
    return UsSection(section_id, layout.name, version, fields, gpc=gpc)


def _read_fields(bits: Bits, layout: tuple[Field, ...], name: str) -> dict[str, Value]:
    """Each field in one read: a list of 2-bit values is split off one integer, and a value of
    3 (both bits set) found with a mask rather than value by value."""
    out: dict[str, Value] = {}
    for field in layout:
        n = field.items or 1
        raw = bits.read(field.width * n)
        if field.width == 2 and raw & (raw >> 1) & _LOW_BITS[n]:
            raise GppDecodeError(f"{name}: {field.name} value 3 is not defined")
        if field.items:
            out[field.name] = tuple((raw >> (2 * (n - 1 - i))) & 3 for i in range(n))
        else:
            out[field.name] = raw
    return out


_LOW_BITS = [int("01" * n, 2) if n else 0 for n in range(33)]
"""The low bit of each of n 2-bit values."""
