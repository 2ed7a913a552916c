"""A test-only GPP / US National section encoder and the spec's published examples, shared
by the consent tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.tcf_encoder import bits_to_base64url, to_ranges

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "gpp_vectors.json").read_text()
)
"""GPP strings made by the IAB reference library: see tests/vectors/gpp/README.md."""

# Published in the IAB GPP consent string specification (header and string examples).
SPEC_TC_SECTION = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
SPEC_GPP_TCF_USP = f"DBACNYA~{SPEC_TC_SECTION}~1YNN"
SPEC_GPP_TCFCA_USP = f"DBABjw~{SPEC_TC_SECTION}~1YNN"

# usnat sections from the IAB's reference GPP library tests (iabgpp-es).
USNAT_ALL_OPTED_OUT = "BVVVkkkkkpFY.YA"  # every notice 1, every opt-out 1 (opted out)
USNAT_DEFAULTS = "BAAAAAAAAABA.QA"  # everything 0 (not applicable)


# --- test-only encoder ---


def encode_fibonacci(n: int) -> str:
    assert n >= 1
    fibs = [1, 2]
    while fibs[-1] <= n:
        fibs.append(fibs[-1] + fibs[-2])
    code = ["0"] * len(fibs)
    rest = n
    for i in range(len(fibs) - 1, -1, -1):
        if fibs[i] <= rest:
            code[i] = "1"
            rest -= fibs[i]
    return "".join(code).rstrip("0") + "1"


def encode_fibonacci_range(ids: list[int]) -> str:
    groups: list[tuple[int, int]] = []
    for v in sorted(set(ids)):
        if groups and groups[-1][1] == v - 1:
            groups[-1] = (groups[-1][0], v)
        else:
            groups.append((v, v))
    out = format(len(groups), "012b")
    last = 0
    for start, end in groups:
        if start == end:
            out += "0" + encode_fibonacci(start - last)
        else:
            out += "1" + encode_fibonacci(start - last) + encode_fibonacci(end - start)
        last = end
    return out


def encode_gpp_header(section_ids: list[int], kind: int = 3, version: int = 1) -> str:
    return bits_to_base64url(
        format(kind, "06b") + format(version, "06b") + encode_fibonacci_range(section_ids)
    )


def encode_section_header(section_id: int, subsections: list[int], version: int = 1) -> str:
    """The segment the spec puts before the core of usmd, usin, usky and usri."""
    bits = format(section_id, "06b") + format(version, "06b")
    return bits_to_base64url(bits + encode_fibonacci_range(subsections))


def encode_gpp(sections: dict[int, str]) -> str:
    ids = sorted(sections)
    return "~".join([encode_gpp_header(ids), *(sections[i] for i in ids)])


def encode_usnat(
    sale: int = 2,
    sharing: int = 2,
    targeted: int = 2,
    notices: int = 1,
    version: int = 1,
    known_child: tuple[int, ...] | None = None,
    gpc: bool | None = False,
) -> str:
    sensitive, children = (12, 2) if version == 1 else (16, 3)
    kids = known_child if known_child is not None else (0,) * children
    bits = format(version, "06b") + format(notices, "02b") * 6
    bits += format(sale, "02b") + format(sharing, "02b") + format(targeted, "02b")
    bits += "00" * sensitive + "".join(format(k, "02b") for k in kids)
    bits += "00" + "01" + "00" + "00"  # PersonalDataConsents, MSPA: covered, both modes 0
    core = bits_to_base64url(bits)
    return core if gpc is None else core + (".YA" if gpc else ".QA")


def encode_tcfca(
    *,
    express: frozenset[int] = frozenset(),
    implied: frozenset[int] = frozenset(),
    vendors_express: frozenset[int] = frozenset(),
    vendors_implied: frozenset[int] = frozenset(),
    restrictions: tuple[tuple[int, int, frozenset[int]], ...] = (),
    legacy: bool = False,
    created_ds: int = 17_000_000_000,
) -> str:
    """A tcfcav1 core: ranges as the spec's Fibonacci ones, or (`legacy`) as 16-bit integers
    like @iabgpp/cmpapi before 3.2. Each vendor set takes the shorter of bitfield and range,
    as the reference encoder does; restriction ids likewise."""

    def ids_field(ids: frozenset[int], width: int) -> str:
        return "".join("1" if i in ids else "0" for i in range(1, width + 1))

    def ranges(ids: frozenset[int]) -> str:
        if not legacy:
            return encode_fibonacci_range(sorted(ids))
        out = format(len(to_ranges(ids)), "012b")
        for start, end in to_ranges(ids):
            out += "0" + format(start, "016b") if start == end else "1" + format(start, "016b")
            out += format(end, "016b") if start != end else ""
        return out

    def optimized(ids: frozenset[int]) -> str:
        top = max(ids, default=0)
        as_range = ranges(ids)
        if len(as_range) <= top:
            return format(top, "016b") + "1" + as_range
        return format(top, "016b") + "0" + ids_field(ids, top)

    bits = format(1, "06b") + format(created_ds, "036b") * 2
    bits += format(10, "012b") + format(2, "012b") + format(1, "06b")  # CMP id, version, screen
    bits += format(4, "06b") + format(13, "06b")  # "EN"
    bits += format(48, "012b") + format(2, "06b") + "0"  # GVL version, policy, standard stacks
    bits += "0" * 12 + ids_field(express, 24) + ids_field(implied, 24)
    bits += optimized(vendors_express) + optimized(vendors_implied)
    bits += format(len(restrictions), "012b")
    for purpose, kind, ids in restrictions:
        bits += format(purpose, "06b") + format(kind, "02b")
        bits += ranges(ids) if legacy else optimized(ids)
    return bits_to_base64url(bits)
