"""plugin.consent.tcf against the IAB reference encoder's vectors, a test-only encoder, and
garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.config import ConsentConfig
from plugin.consent.gate import decide
from plugin.consent.tcf import (
    MAX_TC_STRING_LENGTH,
    PublisherRestriction,
    RestrictionType,
    TcfDecodeError,
    TcString,
    decode_publisher_tc,
    decode_tc_string,
)
from plugin.context import ConsentSignals
from tests.helpers.tcf_encoder import (
    B64URL,
    VECTORS,
    Restriction,
    base64url_to_bits,
    bits_to_base64url,
    encode_tc_bits,
    encode_tc_core,
    to_ranges,
)

# --- the reference vectors ---

PERMUTIVE = 361
CONSENT_FIRST = (0, 3, 2, 1)
"""Restriction types, most restrictive first for a vendor relying on consent."""


def _expected_restriction(vector: dict[str, Any], purpose_id: int, vendor_id: int) -> int | None:
    found = {
        r["type"]
        for r in vector["restrictions"]
        if r["purpose"] == purpose_id and vendor_id in r["vendors"]
    }
    return next((t for t in CONSENT_FIRST if t in found), None)


def test_vectors_cover_what_the_gate_depends_on() -> None:
    assert len(VECTORS) >= 12
    assert {v["encoding"] for v in VECTORS} == {"bitfield", "range"}
    assert {v["expect_allowed"] for v in VECTORS} == {True, False}
    assert any(v["max_vendor_id"] > 2000 and v["encoding"] == "bitfield" for v in VECTORS)
    assert any(v["max_vendor_id"] > 2000 and v["encoding"] == "range" for v in VECTORS)
    assert any("." in v["tc_string"] for v in VECTORS)
    with_li = [v for v in VECTORS if v["vendor_legitimate_interests"]]
    assert {v["vendor_li_encoding"] for v in with_li} == {"bitfield", "range"}
    # Restriction types on Purpose 1 for 361: none, 0, 1 (with and without Purpose 1 consent), 2.
    by_type = {v["expect_restriction_361_p1"] for v in VECTORS if v["restrictions"]}
    assert by_type == {None, 0, 1, 2}
    assert {v["expect_allowed"] for v in VECTORS if v["expect_restriction_361_p1"] == 1} == {
        True,
        False,
    }
    assert any(len(v["restrictions"]) >= 3 for v in VECTORS)
    # A range entry that covers 361, and one that ends right below it.
    assert any(
        PERMUTIVE in r["vendors"] and len(r["vendors"]) > 1
        for v in VECTORS
        for r in v["restrictions"]
    )
    assert any(
        r["purpose"] == 1 and max(r["vendors"]) == PERMUTIVE - 1
        for v in VECTORS
        for r in v["restrictions"]
    )


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
def test_vendor_legitimate_interest_agrees_with_reference_encoder(vector: dict[str, Any]) -> None:
    tc = decode_tc_string(vector["tc_string"])

    assert tc.vendor_li_max_id == vector["vendor_li_max_id"]
    assert tc.vendor_li_encoding == vector["vendor_li_encoding"]
    expected = set(vector["vendor_legitimate_interests"])
    assert tc.vendor_legitimate_interests() == expected
    for vendor_id in range(1, tc.vendor_li_max_id + 2):
        assert tc.vendor_legitimate_interest(vendor_id) == (vendor_id in expected), vendor_id


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_publisher_restrictions_agree_with_reference_encoder(vector: dict[str, Any]) -> None:
    tc = decode_tc_string(vector["tc_string"])

    decoded = [
        {
            "purpose": r.purpose_id,
            "type": r.restriction_type,
            "vendors": sorted({v for start, end in r.vendor_ranges for v in range(start, end + 1)}),
        }
        for r in tc.publisher_restrictions
    ]
    assert decoded == vector["restrictions"]
    assert tc.restriction_type(1, PERMUTIVE) == vector["expect_restriction_361_p1"]
    # Every purpose and vendor around the restricted ones, including ids no entry names.
    purposes = {r["purpose"] for r in vector["restrictions"]} | {1, 2}
    top = max((max(r["vendors"]) for r in vector["restrictions"]), default=PERMUTIVE) + 2
    for purpose_id in purposes:
        for vendor_id in range(0, top):
            expected = _expected_restriction(vector, purpose_id, vendor_id)
            assert tc.restriction_type(purpose_id, vendor_id) == expected, (purpose_id, vendor_id)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decoded_fields_give_the_vectors_decision(vector: dict[str, Any]) -> None:
    """What the gate needs from the decoder is there: Purpose 1 consent, vendor consent, and a
    restriction that denies (0, 2, 3) or that requires the consent already asked for (1)."""
    tc = decode_tc_string(vector["tc_string"])
    allowed = (
        1 in tc.purposes_consent
        and tc.vendor_consent(PERMUTIVE)
        and tc.restriction_type(1, PERMUTIVE) in (None, RestrictionType.REQUIRE_CONSENT)
    )
    assert allowed is vector["expect_allowed"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_gate_decision_for_permutive_matches_vector(vector: dict[str, Any]) -> None:
    d = decide(ConsentSignals(gdpr=True, tc_string=vector["tc_string"]), ConsentConfig())
    assert d.allowed is vector["expect_allowed"]
    if vector["expect_allowed"]:
        assert d.reason == "tcf_granted"
    elif 1 not in vector["purposes_consent"]:
        assert d.reason == "tcf_purpose_denied"
    elif PERMUTIVE not in vector["vendor_consents"]:
        assert d.reason == "tcf_vendor_denied"
    else:  # consent to both, denied by a restriction on Purpose 1 for 361 alone
        assert vector["expect_restriction_361_p1"] in (0, 2, 3)
        assert d.reason == "tcf_restricted"


# --- the publisher TC segment (tcf_basis = "publisher") ---

PUBLISHER = ConsentConfig(tcf_basis="publisher")


def test_vectors_cover_both_bases() -> None:
    assert any(v["expect_allowed_publisher_basis"] and not v["expect_allowed"] for v in VECTORS)
    assert any(
        v["expect_allowed"] and v["publisher_segment"] and not v["expect_allowed_publisher_basis"]
        for v in VECTORS
    )
    assert any(v["expect_allowed"] and not v["publisher_segment"] for v in VECTORS)
    assert any(v["publisher_custom_purposes_consent"] for v in VECTORS)
    assert any(1 in v["publisher_purposes_li_transparency"] for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_publisher_segment_as_the_reference_encoder_wrote_it(vector: dict[str, Any]) -> None:
    pub = decode_publisher_tc(vector["tc_string"])
    if not vector["publisher_segment"]:
        assert pub is None
        return
    assert pub is not None
    assert sorted(pub.purposes_consent) == vector["publisher_purposes_consent"]
    assert sorted(pub.purposes_li_transparency) == vector["publisher_purposes_li_transparency"]
    assert sorted(pub.custom_purposes_consent) == vector["publisher_custom_purposes_consent"]
    assert (
        sorted(pub.custom_purposes_li_transparency)
        == vector["publisher_custom_purposes_li_transparency"]
    )


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_gate_decision_on_the_publisher_basis_matches_vector(vector: dict[str, Any]) -> None:
    d = decide(ConsentSignals(gdpr=True, tc_string=vector["tc_string"]), PUBLISHER)
    assert d.allowed is vector["expect_allowed_publisher_basis"]
    if vector["expect_allowed_publisher_basis"]:
        assert d.reason == "tcf_granted"
    elif vector["expect_restriction_361_p1"] in (0, 2, 3):
        assert d.reason == "tcf_restricted"
    elif not vector["publisher_segment"]:
        assert d.reason == "tcf_publisher_missing"
    else:  # legitimate interest for Purpose 1 is not consent
        assert 1 not in vector["publisher_purposes_consent"]
        assert d.reason == "tcf_purpose_denied"


def test_a_malformed_publisher_segment_is_undecodable_on_the_publisher_basis_only() -> None:
    v = next(x for x in VECTORS if x["name"] == "publisher_p1_without_vendor_361")
    core = v["tc_string"].split(".")[0]
    ok = next(x for x in VECTORS if x["name"] == "range_single_361_all_purposes")["tc_string"]
    for broken in (f"{core}.c", f"{core}.cAAA!", f"{core}.", f"{v['tc_string']}.cAAAAAAAAAAA"):
        with pytest.raises(TcfDecodeError):
            decode_publisher_tc(broken)
        d = decide(ConsentSignals(gdpr=True, tc_string=broken), PUBLISHER)
        assert (d.allowed, d.reason) == (False, "tcf_undecodable")
    # the vendor basis reads the core only, as before
    broken_ok = ok.split(".")[0] + ".c"
    assert decide(ConsentSignals(gdpr=True, tc_string=broken_ok), ConsentConfig()).allowed


# --- the test encoder against the decoder ---


def _encode_like(vector: dict[str, Any], **fields: Any) -> str:
    """Our encoder's bits for a reference vector's header fields (and `fields`)."""
    return encode_tc_bits(
        purposes=set(vector["purposes_consent"]),
        vendors=set(vector["vendor_consents"]),
        encoding=vector["encoding"],
        service_specific=vector["is_service_specific"],
        cmp_id=vector["cmp_id"],
        cmp_version=vector["cmp_version"],
        vendor_list_version=vector["vendor_list_version"],
        policy_version=vector["policy_version"],
        language=vector["consent_language"],
        publisher_cc=vector["publisher_cc"],
        created_ds=vector["created_ds"],
        **fields,
    )


@pytest.mark.parametrize(
    "name", ["range_single_361_all_purposes", "several_restrictions_require_consent_p1_361"]
)
def test_encoder_matches_a_reference_string_bit_for_bit(name: str) -> None:
    """Guards the test encoder itself: same fields as a reference vector, same bits."""
    v = next(x for x in VECTORS if x["name"] == name)
    ours = _encode_like(
        v,
        li_vendors=set(v["vendor_legitimate_interests"]),
        li_encoding=v["vendor_li_encoding"],
        restrictions=[
            (r["purpose"], r["type"], to_ranges(set(r["vendors"]))) for r in v["restrictions"]
        ],
    )
    # The reference pads the core segment with zero bits to whole bytes, then to whole letters.
    reference = base64url_to_bits(v["tc_string"].split(".")[0])
    assert reference.startswith(ours)
    assert len(reference) - len(ours) < 14
    assert set(reference[len(ours) :]) <= {"0"}


vendor_sets = st.sets(st.integers(1, 3000), max_size=60)
restriction_lists = st.lists(
    st.tuples(
        st.integers(0, 63),
        st.integers(0, 3),
        st.lists(
            st.tuples(st.integers(1, 3000), st.integers(0, 50)).map(lambda t: (t[0], t[0] + t[1])),
            max_size=5,
        ),
    ),
    max_size=6,
)


@given(
    purposes=st.sets(st.integers(1, 24)),
    vendors=vendor_sets,
    encoding=st.sampled_from(["bitfield", "range"]),
    li_vendors=vendor_sets,
    li_encoding=st.sampled_from(["bitfield", "range"]),
    restrictions=restriction_lists,
    special=st.sets(st.integers(1, 12)),
    li=st.sets(st.integers(1, 24)),
    cmp_id=st.integers(0, 4095),
    language=st.sampled_from(["EN", "DE", "FR", "ZZ"]),
)
def test_round_trip(
    purposes: set[int],
    vendors: set[int],
    encoding: str,
    li_vendors: set[int],
    li_encoding: str,
    restrictions: list[Restriction],
    special: set[int],
    li: set[int],
    cmp_id: int,
    language: str,
) -> None:
    text = encode_tc_core(
        purposes=purposes,
        vendors=vendors,
        encoding=encoding,
        li_vendors=li_vendors,
        li_encoding=li_encoding,
        restrictions=restrictions,
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
    assert tc.vendor_legitimate_interests() == li_vendors
    assert tc.vendor_li_encoding == li_encoding
    assert tc.vendor_li_max_id == max(li_vendors, default=0)
    assert tc.publisher_restrictions == tuple(
        PublisherRestriction(p, RestrictionType(t), tuple(r)) for p, t, r in restrictions
    )
    assert tc.special_feature_optins == special
    assert tc.purposes_li_transparency == li
    assert tc.cmp_id == cmp_id
    assert tc.consent_language == language
    for probe in (1, 361, max(vendors, default=1)):
        assert tc.vendor_consent(probe) == (probe in vendors)
    for probe in (1, 361, max(li_vendors, default=1)):
        assert tc.vendor_legitimate_interest(probe) == (probe in li_vendors)
    for purpose_id, _, entries in restrictions:
        for probe in (1, 361, *(start for start, _ in entries), *(end + 1 for _, end in entries)):
            found = {
                t
                for p, t, r in restrictions
                if p == purpose_id and any(a <= probe <= b for a, b in r)
            }
            expected = next((t for t in CONSENT_FIRST if t in found), None)
            assert tc.restriction_type(purpose_id, probe) == expected


def test_vendor_ids_above_max_vendor_id_have_no_consent() -> None:
    # A range entry past MaxVendorId contradicts the header: do not trust it.
    text = encode_tc_core(vendors={361}, encoding="range", max_vendor_id=300)
    tc = decode_tc_string(text)
    assert not tc.vendor_consent(361)
    assert not tc.vendor_consent(0)
    assert not tc.vendor_consent(-5)


def test_vendor_ids_above_the_li_max_vendor_id_have_no_legitimate_interest() -> None:
    text = encode_tc_core(li_vendors={361}, li_encoding="range", li_max_vendor_id=300)
    tc = decode_tc_string(text)
    assert tc.vendor_li_ranges == ((361, 361),)
    assert not tc.vendor_legitimate_interest(361)
    assert not tc.vendor_legitimate_interest(0)
    assert tc.vendor_legitimate_interests() == frozenset()


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
        # range_single_361_all_purposes cut after its vendor consents (the old decoder's end),
        # then after the vendor LI section, before NumPubRestrictions.
        "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0g",
        "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAA",
        "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA",  # TCF v1.1
        "1YNN",
        "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN",  # a GPP string
        "CP60aCAP60aCAAKACBENAwEAAP_gAAAAAAYgC0wAQC0gAAAA".replace("C", "ü"),
    ],
)
def test_undecodable_strings_raise_tcf_decode_error(text: str) -> None:
    with pytest.raises(TcfDecodeError):
        decode_tc_string(text)


@pytest.mark.parametrize(
    ("fields", "cut"),
    [
        ({"stop_after": "vendors"}, 0),  # no vendor LI section
        ({"stop_after": "li"}, 0),  # no NumPubRestrictions
        ({"stop_after": "li", "li_vendors": {1}, "li_max_vendor_id": 4000}, 0),
        ({"li_vendors": {100}, "li_max_vendor_id": 4000}, 3000),  # inside the LI bitfield
        ({"stop_after": "li", "li_encoding": "range", "li_vendors": {5, 361}}, 0),
        ({"li_encoding": "range", "li_vendors": {5, 361}}, 12 + 17),  # inside the LI ranges
    ],
)
def test_a_core_segment_that_ends_before_the_restrictions_raises(
    fields: dict[str, Any], cut: int
) -> None:
    # Everything the gate used to read is there and grants; the restrictions that could forbid
    # Purpose 1 for 361 are not, so the string is refused rather than read as unrestricted.
    # (Base64url pads with fewer than 6 zero bits: never a whole 12- or 16-bit field.)
    bits = encode_tc_bits(purposes={1}, vendors={361}, **fields)
    with pytest.raises(TcfDecodeError, match="truncated"):
        decode_tc_string(bits_to_base64url(bits[: len(bits) - cut]))


def test_a_restriction_cut_short_raises() -> None:
    bits = encode_tc_bits(purposes={1}, vendors={361}, restrictions=[(1, 0, [(300, 420)])])
    # The one entry is PurposeId 6 + RestrictionType 2 + NumEntries 12 + a range of 33 bits.
    for cut in (49, 33, 12):  # inside PurposeId, right after NumEntries, inside EndVendorId
        with pytest.raises(TcfDecodeError, match="truncated"):
            decode_tc_string(bits_to_base64url(bits[:-cut]))
    assert decode_tc_string(bits_to_base64url(bits)).restriction_type(1, 361) == 0


@pytest.mark.parametrize("entries", [[(400, 300)], [(0, 0)], [(0, 5)], [(5, 5), (9, 8)]])
def test_bad_range_entries_raise(entries: list[tuple[int, int]]) -> None:
    def encoded(**fields: Any) -> str:
        return encode_tc_core(purposes={1}, vendors={361}, **fields)

    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encoded(encoding="range", ranges=entries, max_vendor_id=400))
    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encoded(li_encoding="range", li_ranges=entries, li_max_vendor_id=400))
    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encoded(restrictions=[(1, 0, entries)]))
    with pytest.raises(TcfDecodeError, match="range"):
        decode_tc_string(encoded(restrictions=[(2, 0, [(1, 9)]), (1, 1, entries)]))


def test_no_publisher_restrictions() -> None:
    bits = encode_tc_bits(purposes={1}, vendors={361}, li_vendors={361})
    assert bits.endswith("0" * 12)  # NumPubRestrictions = 0 is the last field
    tc = decode_tc_string(bits_to_base64url(bits))
    assert tc.publisher_restrictions == ()
    assert all(tc.restriction_type(p, v) is None for p in range(25) for v in (0, 1, 361, 65535))


def test_restriction_type_applies_to_its_purpose_and_inclusive_range_only() -> None:
    tc = decode_tc_string(
        encode_tc_core(
            purposes={1},
            vendors={10},  # restrictions are not bounded by the vendor sections' MaxVendorId
            restrictions=[(1, 0, [(300, 360), (362, 362)]), (2, 1, [(361, 361)])],
        )
    )
    assert tc.publisher_restrictions == (
        PublisherRestriction(1, RestrictionType.NOT_ALLOWED, ((300, 360), (362, 362))),
        PublisherRestriction(2, RestrictionType.REQUIRE_CONSENT, ((361, 361),)),
    )
    got = {v: tc.restriction_type(1, v) for v in (299, 300, 330, 360, 361, 362, 363)}
    assert got == {299: None, 300: 0, 330: 0, 360: 0, 361: None, 362: 0, 363: None}
    assert tc.restriction_type(2, 361) == 1
    assert tc.restriction_type(2, 360) is None
    assert tc.restriction_type(3, 300) is None


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ([3], 3),  # undefined: the reference encoder cannot write it
        ([1, 2], 2),
        ([2, 1], 2),
        ([1, 3], 3),
        ([2, 3, 1], 3),
        ([1, 2, 3, 0], 0),
        ([0, 1], 0),
        ([1, 1], 1),
    ],
)
def test_several_restrictions_on_one_vendor_give_the_most_restrictive(
    types: list[int], expected: int
) -> None:
    restrictions = [(1, t, [(350 + i, 361)]) for i, t in enumerate(types)]
    restrictions.append((1, 0, [(362, 400)]))  # next to 361, not covering it
    tc = decode_tc_string(encode_tc_core(purposes={1}, vendors={361}, restrictions=restrictions))
    got = tc.restriction_type(1, 361)
    assert got == expected
    assert isinstance(got, RestrictionType)


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
    _assert_well_formed(tc)


def _assert_well_formed(tc: TcString) -> None:
    assert tc.vendor_consents() <= set(range(1, tc.max_vendor_id + 1))
    assert tc.vendor_legitimate_interests() <= set(range(1, tc.vendor_li_max_id + 1))
    for r in tc.publisher_restrictions:
        assert 0 <= r.purpose_id < 64
        assert all(1 <= start <= end < 65536 for start, end in r.vendor_ranges)
        for start, end in r.vendor_ranges:
            assert tc.restriction_type(r.purpose_id, start) is not None
            assert tc.restriction_type(r.purpose_id, end) is not None


# The fixed fields and a small vendor consent section, so that random bits after them reach the
# vendor LI and publisher restriction sections.
_PREFIX = encode_tc_bits(purposes={1}, vendors={361}, encoding="range", stop_after="vendors")


@given(st.text(alphabet="01", max_size=400))
def test_any_bits_after_the_vendor_consents_decode_or_raise_tcf_decode_error(tail: str) -> None:
    try:
        tc = decode_tc_string(bits_to_base64url(_PREFIX + tail))
    except TcfDecodeError:
        return
    assert tc.vendor_consents() == {361}
    _assert_well_formed(tc)
    tc.restriction_type(1, 361)
