"""plugin.consent.gpp and plugin.consent.usp: the spec's published examples, a test-only
encoder, and garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.consent.gpp import (
    MAX_SECTION_IDS,
    GppDecodeError,
    decode_gpp,
    read_fibonacci,
)
from plugin.consent.gpp_us import UsSection, decode_us_section
from plugin.consent.tcf import Bits, BitsError, decode_tc_string
from plugin.consent.usp import UspDecodeError, decode_us_privacy
from tests.helpers.gpp_encoder import (
    SPEC_GPP_TCF_USP,
    SPEC_GPP_TCFCA_USP,
    USNAT_ALL_OPTED_OUT,
    USNAT_DEFAULTS,
    encode_fibonacci,
    encode_gpp,
    encode_gpp_header,
    encode_usnat,
)
from tests.helpers.tcf_encoder import B64URL, bits_to_base64url

# --- header and Fibonacci coding ---


@pytest.mark.parametrize(
    ("bits", "value"),
    [("11", 1), ("011", 2), ("0011", 3), ("1011", 4), ("00011", 5), ("10011", 6), ("01011", 7)],
)
def test_fibonacci_table_from_the_spec(bits: str, value: int) -> None:
    assert read_fibonacci(Bits(int(bits, 2), len(bits))) == value
    assert encode_fibonacci(value) == bits


@given(st.integers(1, 1_000_000))
def test_fibonacci_round_trip(n: int) -> None:
    code = encode_fibonacci(n)
    bits = Bits(int(code, 2), len(code))
    assert read_fibonacci(bits) == n
    assert bits.remaining() == 0


def test_fibonacci_without_terminator_raises() -> None:
    with pytest.raises(BitsError):
        read_fibonacci(Bits(0b0101010101, 10))
    with pytest.raises(BitsError):
        read_fibonacci(Bits(int("10" * 40, 2), 80))


@pytest.mark.parametrize(
    ("header", "ids"),
    [
        ("DBABM", (2,)),
        ("DBABMA", (2,)),
        ("DBACNY", (2, 6)),
        ("DBACNYA", (2, 6)),
        ("DBABjw", (5, 6)),
        ("DBABLA", (7,)),
    ],
)
def test_spec_headers(header: str, ids: tuple[int, ...]) -> None:
    text = "~".join([header, *("x" for _ in ids)])
    assert decode_gpp(text).section_ids == ids
    assert encode_gpp_header(list(ids)) in (header, header.rstrip("A"))


def test_spec_gpp_string_example() -> None:
    gpp = decode_gpp(SPEC_GPP_TCF_USP)
    assert gpp.version == 1
    assert gpp.section_ids == (2, 6)
    assert gpp.section(6) == "1YNN"
    assert gpp.section(7) is None
    # Expected fields as the IAB reference decoder (@iabtechlabtcf/core) reads this section.
    tc = decode_tc_string(gpp.section(2) or "")
    assert (tc.cmp_id, tc.cmp_version, tc.vendor_list_version) == (31, 640, 126)
    assert (tc.policy_version, tc.consent_language, tc.publisher_cc) == (2, "EN", "DE")
    assert tc.is_service_specific
    assert tc.purposes_consent == frozenset()
    assert tc.max_vendor_id == 0
    assert decode_gpp(SPEC_GPP_TCFCA_USP).section_ids == (5, 6)


@given(st.sets(st.integers(1, 40), max_size=12))
def test_header_round_trip(ids: set[int]) -> None:
    sections = {i: f"s{i}" for i in ids}
    gpp = decode_gpp(encode_gpp(sections))
    assert gpp.section_ids == tuple(sorted(ids))
    for i in ids:
        assert gpp.section(i) == f"s{i}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "~",
        "DBABM",  # names one section, has none
        "DBABM~a~b",  # names one section, has two
        "DBACNY~only-one",
        encode_gpp_header([2], kind=4) + "~x",
        encode_gpp_header([2], version=2) + "~x",
        "D",  # truncated header
        "DB$BM~x",
        "1YNN",
        "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
    ],
)
def test_undecodable_gpp_raises(text: str) -> None:
    with pytest.raises(GppDecodeError):
        decode_gpp(text)


def test_huge_section_ranges_are_refused() -> None:
    header = bits_to_base64url(
        "000011000001" + format(1, "012b") + "1" + encode_fibonacci(1) + encode_fibonacci(10**6)
    )
    with pytest.raises(GppDecodeError, match=r"too many|out of range"):
        decode_gpp(header)
    assert MAX_SECTION_IDS < 10**6


@given(st.text(max_size=200))
def test_any_text_decodes_or_raises_gpp_decode_error(text: str) -> None:
    with contextlib.suppress(GppDecodeError):
        decode_gpp(text)


@given(st.text(alphabet=B64URL + "~.", max_size=120).map(lambda s: "DB" + s))
def test_any_gpp_shaped_text_decodes_or_raises(text: str) -> None:
    try:
        gpp = decode_gpp(text)
    except GppDecodeError:
        return
    assert len(gpp.section_ids) == len(gpp.sections)


# --- usnat (section 7) ---


def decode_usnat(text: str) -> UsSection:
    return decode_us_section(7, text)


def _opt_outs(section: UsSection) -> tuple[object, ...]:
    return tuple(
        section.fields[f] for f in ("SaleOptOut", "SharingOptOut", "TargetedAdvertisingOptOut")
    )


def test_usnat_reference_vectors() -> None:
    out = decode_usnat(USNAT_ALL_OPTED_OUT)
    assert out.version == 1
    assert _opt_outs(out) == (1, 1, 1)
    assert out.fields["SharingNotice"] == out.fields["SensitiveDataLimitUseNotice"] == 1
    assert out.gpc is True
    assert out.fields["KnownChildSensitiveDataConsents"] == (2, 1, 0)
    assert out.denial() == "known_child"
    assert decode_usnat(USNAT_ALL_OPTED_OUT.split(".")[0]).fields == out.fields

    defaults = decode_usnat(USNAT_DEFAULTS)
    assert _opt_outs(defaults)[:2] == (0, 0)
    assert defaults.gpc is False
    assert defaults.denial() is None


@given(
    sale=st.integers(0, 2),
    sharing=st.integers(0, 2),
    targeted=st.integers(0, 2),
    notices=st.integers(0, 2),
    version=st.sampled_from([1, 2]),
)
def test_usnat_round_trip(
    sale: int, sharing: int, targeted: int, notices: int, version: int
) -> None:
    out = decode_usnat(encode_usnat(sale, sharing, targeted, notices, version))
    assert _opt_outs(out) == (sale, sharing, targeted)
    assert out.fields["SaleOptOutNotice"] == notices
    assert out.version == version
    assert (out.denial() == "opted_out") == (1 in (sale, sharing, targeted))
    if 1 not in (sale, sharing, targeted):
        assert (out.denial() == "no_notice") == (notices == 2)


@pytest.mark.parametrize(
    "text",
    ["", "B", "BVV", "zzzzzzzz", encode_usnat(sale=3), encode_usnat(version=3), "BV$Vkkkk"],
)
def test_undecodable_usnat_raises(text: str) -> None:
    with pytest.raises(GppDecodeError):
        decode_usnat(text)


@given(st.text(max_size=60))
def test_any_text_is_usnat_or_raises_gpp_decode_error(text: str) -> None:
    with contextlib.suppress(GppDecodeError):
        decode_usnat(text)


# --- US Privacy (`us_privacy`, GPP section 6) ---


@pytest.mark.parametrize(
    ("text", "applies", "opted_out"),
    [
        ("1YYN", True, True),
        ("1NYY", True, True),
        ("1YNN", True, False),
        ("1NNY", True, False),
        ("1---", False, False),
        ("1Y-N", False, False),
        ("1yyn", True, True),
        (" 1YNN ", True, False),
    ],
)
def test_us_privacy_strings(text: str, applies: bool, opted_out: bool) -> None:
    usp = decode_us_privacy(text)
    assert usp.version == 1
    assert usp.applies is applies
    assert usp.opted_out is opted_out


@pytest.mark.parametrize("text", ["", "1YN", "1YNNN", "2YNN", "1YXN", "YNN1", "1 NN", "\uff11YNN"])
def test_invalid_us_privacy_strings_raise(text: str) -> None:
    with pytest.raises(UspDecodeError):
        decode_us_privacy(text)


@given(st.text(max_size=8))
def test_any_text_is_us_privacy_or_raises(text: str) -> None:
    try:
        usp = decode_us_privacy(text)
    except UspDecodeError:
        return
    assert usp.opt_out_sale in ("Y", "N", "-")
