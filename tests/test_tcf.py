"""plugin.tcf against the IAB reference encoder's vectors, a test-only encoder, and garbage."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.config import ConsentConfig
from plugin.consent import decide
from plugin.context import ConsentSignals
from plugin.tcf import MAX_TC_STRING_LENGTH, TcfDecodeError, decode_tc_string

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "tcf_vectors.json").read_text()
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


def encode_tc_core(
    *,
    purposes: set[int] | frozenset[int] = frozenset(),
    vendors: set[int] | frozenset[int] = frozenset(),
    encoding: str = "bitfield",
    ranges: list[tuple[int, int]] | None = None,
    max_vendor_id: int | None = None,
    version: int = 2,
    cmp_id: int = 7,
    cmp_version: int = 1,
    vendor_list_version: int = 200,
    policy_version: int = 4,
    special_features: set[int] | frozenset[int] = frozenset(),
    purposes_li: set[int] | frozenset[int] = frozenset(),
    language: str = "FR",
    publisher_cc: str = "GB",
    created_ds: int = 17_000_000_000,
) -> str:
    """A TC string core segment. `ranges` overrides the range entries (to encode bad ones)."""
    if max_vendor_id is None:
        max_vendor_id = max(vendors, default=0)
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
        + "0"  # IsServiceSpecific
        + "0"  # UseNonStandardTexts
        + _field(special_features, 12)
        + _field(purposes, 24)
        + _field(purposes_li, 24)
        + "0"  # PurposeOneTreatment
        + _letters(publisher_cc)
        + _int(max_vendor_id, 16)
    )
    if encoding == "bitfield":
        bits += "0" + _field(vendors, max_vendor_id)
    else:
        entries = to_ranges(vendors) if ranges is None else ranges
        bits += "1" + _int(len(entries), 12)
        for start, end in entries:
            if start == end:
                bits += "0" + _int(start, 16)
            else:
                bits += "1" + _int(start, 16) + _int(end, 16)
    return bits_to_base64url(bits)


# --- the reference vectors ---


def test_vectors_cover_what_the_gate_depends_on() -> None:
    assert len(VECTORS) >= 12
    assert {v["encoding"] for v in VECTORS} == {"bitfield", "range"}
    assert {v["expect_allowed"] for v in VECTORS} == {True, False}
    assert any(v["max_vendor_id"] > 2000 and v["encoding"] == "bitfield" for v in VECTORS)
    assert any(v["max_vendor_id"] > 2000 and v["encoding"] == "range" for v in VECTORS)
    assert any("." in v["tc_string"] for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decoder_agrees_with_reference_encoder(vector: dict[str, Any]) -> None:
    tc = decode_tc_string(vector["tc_string"])

    assert tc.version == 2
    assert tc.vendor_encoding == vector["encoding"]
    assert tc.max_vendor_id == vector["max_vendor_id"]
    assert tc.purposes_consent == frozenset(vector["purposes_consent"])
    expected_vendors = set(vector["vendor_consents"])
    assert tc.vendor_consents() == expected_vendors
    for vendor_id in range(1, tc.max_vendor_id + 2):
        assert tc.vendor_consent(vendor_id) == (vendor_id in expected_vendors), vendor_id
    assert tc.cmp_id == vector["cmp_id"]
    assert tc.cmp_version == vector["cmp_version"]
    assert tc.consent_screen == vector["consent_screen"]
    assert tc.consent_language == vector["consent_language"]
    assert tc.vendor_list_version == vector["vendor_list_version"]
    assert tc.policy_version == vector["policy_version"]
    assert tc.is_service_specific == vector["is_service_specific"]
    assert tc.special_feature_optins == frozenset(vector["special_feature_optins"])
    assert tc.purposes_li_transparency == frozenset(vector["purposes_li_transparency"])
    assert tc.publisher_cc == vector["publisher_cc"]
    assert tc.created == tc.last_updated == vector["created_ds"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_gate_decision_for_permutive_matches_vector(vector: dict[str, Any]) -> None:
    d = decide(ConsentSignals(gdpr=True, tc_string=vector["tc_string"]), ConsentConfig())
    assert d.allowed is vector["expect_allowed"]
    if vector["expect_allowed"]:
        assert d.reason == "tcf_granted"
    elif 1 not in vector["purposes_consent"]:
        assert d.reason == "tcf_purpose_denied"
    else:
        assert d.reason == "tcf_vendor_denied"


# --- the test encoder against the decoder ---


def test_encoder_matches_a_reference_string_bit_for_bit() -> None:
    """Guards the test encoder itself: same fields as a reference vector, same text."""
    v = next(x for x in VECTORS if x["name"] == "range_single_361_all_purposes")
    ours = encode_tc_core(
        purposes=set(v["purposes_consent"]),
        vendors=set(v["vendor_consents"]),
        encoding="range",
        cmp_id=v["cmp_id"],
        cmp_version=v["cmp_version"],
        vendor_list_version=v["vendor_list_version"],
        policy_version=v["policy_version"],
        language=v["consent_language"],
        publisher_cc=v["publisher_cc"],
        created_ds=v["created_ds"],
    )
    # The reference pads to whole bytes and adds LI vendor and restriction sections after the
    # consent vendors; compare the bits we both write.
    core = v["tc_string"].split(".")[0]
    common = len(ours) - 1
    assert ours[:common] == core[:common]


vendor_sets = st.sets(st.integers(1, 3000), max_size=60)


@given(
    purposes=st.sets(st.integers(1, 24)),
    vendors=vendor_sets,
    encoding=st.sampled_from(["bitfield", "range"]),
    special=st.sets(st.integers(1, 12)),
    li=st.sets(st.integers(1, 24)),
    cmp_id=st.integers(0, 4095),
    language=st.sampled_from(["EN", "DE", "FR", "ZZ"]),
)
def test_round_trip(
    purposes: set[int],
    vendors: set[int],
    encoding: str,
    special: set[int],
    li: set[int],
    cmp_id: int,
    language: str,
) -> None:
    text = encode_tc_core(
        purposes=purposes,
        vendors=vendors,
        encoding=encoding,
        special_features=special,
        purposes_li=li,
        cmp_id=cmp_id,
        language=language,
    )
    tc = decode_tc_string(text)
    assert tc.purposes_consent == purposes
    assert tc.vendor_consents() == vendors
    assert tc.vendor_encoding == encoding
    assert tc.max_vendor_id == max(vendors, default=0)
    assert tc.special_feature_optins == special
    assert tc.purposes_li_transparency == li
    assert tc.cmp_id == cmp_id
    assert tc.consent_language == language
    for probe in (1, 361, max(vendors, default=1)):
        assert tc.vendor_consent(probe) == (probe in vendors)


def test_vendor_ids_above_max_vendor_id_have_no_consent() -> None:
    # A range entry past MaxVendorId contradicts the header: do not trust it.
    text = encode_tc_core(vendors={361}, encoding="range", max_vendor_id=300)
    tc = decode_tc_string(text)
    assert not tc.vendor_consent(361)
    assert not tc.vendor_consent(0)
    assert not tc.vendor_consent(-5)


def test_only_the_core_segment_is_read() -> None:
    core = encode_tc_core(purposes={1}, vendors={361})
    expected = decode_tc_string(core)
    assert decode_tc_string(core + ".IAAA.YA") == expected
    assert decode_tc_string(core + ".not base64 at all!") == expected


def test_padding_and_standard_alphabet_are_tolerated() -> None:
    v = next(x for x in VECTORS if x["name"] == "bitfield_high_vendor_ids")
    core = v["tc_string"].split(".")[0]
    expected = decode_tc_string(core)
    assert decode_tc_string(core + "==") == expected
    assert decode_tc_string(core.replace("-", "+").replace("_", "/")) == expected
    assert decode_tc_string(f"  {core}\n") == expected


def test_identical_strings_are_decoded_once() -> None:
    text = encode_tc_core(purposes={1, 2}, vendors={5, 361})
    assert decode_tc_string(text) is decode_tc_string(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "====",
        "CP60aCAP60aC$AKACBENAwE",  # not base64url
        "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0w",  # cut inside the vendor ranges
        "CP60aCAP60aCAAKACBENAwEAAP",  # cut inside the purposes
        "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",  # TCF v1.1
        "1YNN",
        "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",  # a GPP string
        "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAAAA".replace("C", "ü"),
    ],
)
def test_undecodable_strings_raise_tcf_decode_error(text: str) -> None:
    with pytest.raises(TcfDecodeError):
        decode_tc_string(text)


def test_bad_range_entries_raise() -> None:
    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encode_tc_core(encoding="range", ranges=[(400, 300)], max_vendor_id=400))
    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encode_tc_core(encoding="range", ranges=[(0, 0)], max_vendor_id=10))


def test_other_versions_and_oversized_input_raise() -> None:
    with pytest.raises(TcfDecodeError, match="version"):
        decode_tc_string(encode_tc_core(version=3, purposes={1}, vendors={361}))
    with pytest.raises(TcfDecodeError, match="too long"):
        decode_tc_string("A" * (MAX_TC_STRING_LENGTH + 1))
    with pytest.raises(TcfDecodeError):
        decode_tc_string(None)  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_tcf_decode_error(text: str) -> None:
    with contextlib.suppress(TcfDecodeError):
        decode_tc_string(text)


@given(st.text(alphabet=B64URL + "=.", min_size=30, max_size=200).map(lambda s: "C" + s))
def test_any_base64url_decodes_or_raises_tcf_decode_error(text: str) -> None:
    # A leading 'C' is version 2, so the fields after the version get exercised too.
    try:
        tc = decode_tc_string(text)
    except TcfDecodeError:
        return
    assert tc.version == 2
    assert tc.vendor_consents() <= set(range(1, tc.max_vendor_id + 1))
