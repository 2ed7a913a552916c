"""IAB Global Privacy Platform (GPP) string: header plus the sections the consent gate reads.

`HEADER~SECTION~SECTION...`: the header lists the section ids in the order the sections follow.
Only tcfeuv2 (2, a TC string: see `plugin.consent.tcf`), uspv1 (6, a `1YNN` string: see
`plugin.consent.usp`) and usnat (7) are interpreted; other sections are kept as raw text and
otherwise ignored.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec

from plugin.consent.tcf import Bits, BitsError

SECTION_TCFEUV2 = 2
SECTION_USPV1 = 6
SECTION_USNAT = 7
SUPPORTED_SECTIONS = frozenset({SECTION_TCFEUV2, SECTION_USPV1, SECTION_USNAT})

MAX_GPP_LENGTH = 32_768
MAX_SECTION_IDS = 64
"""More section ids than this in one header is garbage (fewer than 30 are defined)."""

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


class UsNat(msgspec.Struct, frozen=True):
    """The usnat core segment fields the gate reads, up to the known-child consents.

    Notices: 0 not applicable, 1 yes, 2 no. Opt-outs: 0 not applicable, 1 opted out,
    2 did not opt out. Consents: 0 not applicable, 1 no consent, 2 consent. Version 1 has 12
    sensitive-data and 2 known-child fields, version 2 has 16 and 3.
    """

    version: int
    sharing_notice: int
    sale_opt_out_notice: int
    sharing_opt_out_notice: int
    targeted_advertising_opt_out_notice: int
    sensitive_data_processing_opt_out_notice: int
    sensitive_data_limit_use_notice: int
    sale_opt_out: int
    sharing_opt_out: int
    targeted_advertising_opt_out: int
    known_child_consents: tuple[int, ...] = ()

    @property
    def opted_out(self) -> bool:
        """Opted out of sale, sharing or targeted advertising: any of them stops us."""
        return 1 in (self.sale_opt_out, self.sharing_opt_out, self.targeted_advertising_opt_out)

    @property
    def known_child_without_consent(self) -> bool:
        """A known child whose parent or guardian has not consented: nothing may be collected."""
        return 1 in self.known_child_consents


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


def read_fibonacci_range(bits: Bits) -> tuple[int, ...]:
    """Range(Fibonacci): Int(12) entries, each IsARange(1), offset from the previous id, and
    for a group its length (end = start + length)."""
    count = bits.read(12)
    ids: list[int] = []
    last = 0
    for _ in range(count):
        is_group = bits.read(1)
        start = last + read_fibonacci(bits)
        end = start + read_fibonacci(bits) if is_group else start
        if len(ids) + end - start + 1 > MAX_SECTION_IDS:
            raise BitsError("too many section ids")
        ids.extend(range(start, end + 1))
        last = end
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


def decode_usnat(text: str) -> UsNat:
    """The core segment (before any '.') of a usnat section; the GPC sub-section is ignored."""
    if not isinstance(text, str):
        raise GppDecodeError("not a string")
    if len(text) > MAX_GPP_LENGTH:
        raise GppDecodeError("too long")
    return _decode_usnat_cached(text.strip())


@lru_cache(maxsize=1024)
def _decode_usnat_cached(text: str) -> UsNat:
    try:
        bits = Bits.from_base64url(text.split(".", 1)[0])
        version = bits.read(6)
        if version not in (1, 2):
            raise GppDecodeError(f"unsupported usnat version {version}")
        fields = [bits.read(2) for _ in range(9)]
        sensitive, children = _USNAT_LISTS[version]
        bits.read(2 * sensitive)
        known_child = tuple(bits.read(2) for _ in range(children))
    except BitsError as e:
        raise GppDecodeError(f"usnat: {e}") from None
    if 3 in fields or 3 in known_child:
        raise GppDecodeError("usnat: field value 3 is not defined")
    return UsNat(
        version=version,
        sharing_notice=fields[0],
        sale_opt_out_notice=fields[1],
        sharing_opt_out_notice=fields[2],
        targeted_advertising_opt_out_notice=fields[3],
        sensitive_data_processing_opt_out_notice=fields[4],
        sensitive_data_limit_use_notice=fields[5],
        sale_opt_out=fields[6],
        sharing_opt_out=fields[7],
        targeted_advertising_opt_out=fields[8],
        known_child_consents=known_child,
    )


_USNAT_LISTS = {1: (12, 2), 2: (16, 3)}
"""usnat version → (SensitiveDataProcessing fields, KnownChildSensitiveDataConsents fields)."""
