"""A test-only GPP / US National section encoder and the spec's published examples, shared
by the consent tests."""

from __future__ import annotations

from tests.helpers.tcf_encoder import bits_to_base64url

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
) -> str:
    sensitive, children = (12, 2) if version == 1 else (16, 3)
    kids = known_child if known_child is not None else (0,) * children
    bits = format(version, "06b") + format(notices, "02b") * 6
    bits += format(sale, "02b") + format(sharing, "02b") + format(targeted, "02b")
    bits += "00" * sensitive + "".join(format(k, "02b") for k in kids)
    bits += "00" + "01" + "00" + "00"  # the fields we do not read
    return bits_to_base64url(bits) + ".YA"
