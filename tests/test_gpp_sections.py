"""GPP US sections (usnat, the 20 states) and tcfcav1: decoded as the IAB reference library
(@iabgpp/cmpapi) wrote them, and decided by the consent gate as docs/privacy.md says."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.config import ConsentConfig
from plugin.consent.gate import REASONS, decide
from plugin.consent.gpp import GppDecodeError
from plugin.consent.gpp_us import KNOWN_CHILD, NOTICES, OPT_OUTS, US_SECTIONS, decode_us_section
from plugin.consent.tcf import RestrictionType
from plugin.consent.tcfca import TcfCa, VendorVector, decode_tcfca
from plugin.context import ConsentSignals
from plugin.result import ConsentDecision
from tests.helpers.gpp_encoder import VECTORS, encode_gpp, encode_section_header, encode_tcfca
from tests.helpers.tcf_encoder import B64URL

CFG = ConsentConfig()
LENIENT = ConsentConfig(default="granted")
US_VECTORS = [v for v in VECTORS if v["section_id"] in US_SECTIONS]
CA_VECTORS = [v for v in VECTORS if v["section"] == "tcfcav1"]


def d(cfg: ConsentConfig = CFG, **signals: Any) -> ConsentDecision:
    return decide(ConsentSignals(**signals), cfg)


def _vector(name: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["name"] == name)


# --- the reference vectors cover the sections the gate reads ---


@pytest.mark.parametrize("section_id", sorted(US_SECTIONS))
def test_every_us_section_has_reference_vectors_for_each_rule(section_id: int) -> None:
    layout = US_SECTIONS[section_id]
    mine = [v for v in US_VECTORS if v["section_id"] == section_id and v["encoder"] == "3.2.0"]
    reasons = {v["expect_reason"] for v in mine}
    assert f"gpp_{layout.name}_not_opted_out" in reasons
    fields = mine[0]["fields"]
    for opt_out in (f for f in OPT_OUTS if f in fields):
        assert any(v["name"].endswith(f"_{opt_out}_opted_out") for v in mine), opt_out
    for notice in (f for f in NOTICES if f in fields):
        assert any(v["name"].endswith(f"_{notice}_not_given") for v in mine), notice
    assert ("gpp_gpc" in reasons) is layout.gpc
    assert (f"gpp_{layout.name}_known_child" in reasons) is layout.has_known_child
    assert "gpp_mspa_service_provider_mode" in reasons


def test_the_vectors_cover_every_us_reason_the_gate_has() -> None:
    us_reasons = {
        r for r in REASONS if r.split("_")[1] in {lay.name for lay in US_SECTIONS.values()}
    }
    covered = {v["expect_reason"] for v in US_VECTORS}
    assert {r for r in us_reasons if not r.endswith("_undecodable")} <= covered


# --- decoding: every field as the reference library reads it back ---


@pytest.mark.parametrize("vector", US_VECTORS, ids=lambda v: v["name"])
def test_us_section_decodes_as_the_reference_library(vector: dict[str, Any]) -> None:
    section = decode_us_section(vector["section_id"], vector["section_string"])
    assert section.name == vector["section"]
    for name, value in vector["fields"].items():
        if name == "Version":
            assert section.version == value
        elif name == "Gpc":
            has_gpc_segment = "." in vector["section_string"]
            assert section.gpc == (value if has_gpc_segment else None)
        elif name != "GpcSegmentType":
            got = section.fields[name]
            assert (list(got) if isinstance(got, tuple) else got) == value, name
    known = {"Version", "Gpc", "GpcSegmentType"}
    assert set(section.fields) == set(vector["fields"]) - known


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_reference_vector_decision(vector: dict[str, Any]) -> None:
    got = d(gpp=vector["gpp"], gpp_sid=(vector["section_id"],))
    assert got == ConsentDecision(vector["expect_allowed"], vector["expect_reason"])
    # Without gpp_sid every section of the string applies: the same decision.
    assert d(gpp=vector["gpp"]) == got


def test_usnat_version_1_written_with_version_2_lengths_is_read_whole() -> None:
    # @iabgpp/cmpapi 3.1 wrote Version 1 with 16 sensitive-data and 3 known-child entries; the
    # reference decoder picks the layout by length, and so do we, keeping the third entry.
    old = _vector("usnat_cmpapi_3_1_KnownChildSensitiveDataConsents_3_no_consent")
    section = decode_us_section(7, old["section_string"])
    assert section.version == 1
    assert section.fields[KNOWN_CHILD] == (2, 2, 1)
    assert len(section.fields["SensitiveDataProcessing"]) == 16  # type: ignore[arg-type]
    assert d(gpp=old["gpp"], gpp_sid=(7,)) == ConsentDecision(False, "gpp_usnat_known_child")


@pytest.mark.parametrize("vector", CA_VECTORS, ids=lambda v: v["name"])
def test_tcfca_decodes_as_the_reference_library(vector: dict[str, Any]) -> None:
    ca = decode_tcfca(vector["section_string"])
    want = vector["fields"]
    assert ca.version == want["Version"] == 1
    assert ca.created == ca.last_updated == want["CreatedDeciseconds"]
    assert (ca.cmp_id, ca.cmp_version, ca.consent_screen) == (10, 2, 1)
    assert (ca.cmp_id, ca.cmp_version) == (want["CmpId"], want["CmpVersion"])
    assert ca.consent_language == want["ConsentLanguage"]
    assert ca.vendor_list_version == want["VendorListVersion"]
    assert ca.policy_version == want["TcfPolicyVersion"]
    assert ca.use_non_standard_stacks is want["UseNonStandardStacks"]
    assert sorted(ca.purposes_express) == want["PurposesExpressConsent"]
    assert sorted(ca.purposes_implied) == want["PurposesImpliedConsent"]
    for vendors, field in (
        (ca.vendor_express, "VendorExpressConsent"),
        (ca.vendor_implied, "VendorImpliedConsent"),
    ):
        top = max(want[field], default=0) + 2
        assert [v for v in range(top) if v in vendors] == want[field], field
    assert _restrictions(ca) == want["PubRestrictions"]


def _restrictions(ca: TcfCa) -> list[dict[str, Any]]:
    return [
        {
            "purpose": r.purpose_id,
            "type": int(r.restriction_type),
            "vendors": sorted(_vendors(r.vendors)),
        }
        for r in ca.publisher_restrictions
    ]


@pytest.mark.parametrize("vector", CA_VECTORS, ids=lambda v: v["name"])
def test_tcfca_decision_with_other_purposes(vector: dict[str, Any]) -> None:
    cfg = ConsentConfig(purposes=(3, 4))
    got = d(cfg, gpp=vector["gpp"], gpp_sid=(5,))
    assert got.reason == vector["expect_reason_purposes_3_4"]


def test_tcfca_strings_of_the_older_encoder_are_read_the_older_way() -> None:
    older = [v for v in CA_VECTORS if v["encoder"] == "3.1.7"]
    differ = 0
    for v in older:
        same = _vector(v["name"].replace("_cmpapi_3_1", ""))
        legacy = v["section_string"] != same["section_string"]
        differ += legacy
        assert decode_tcfca(v["section_string"]).legacy_ranges is legacy, v["name"]
    assert differ >= 5


# --- the header layout of usmd, usin, usky and usri ---


def test_header_layout_vectors_published_with_the_iab_java_library() -> None:
    # iabgpp-java UsInTest: all defaults, then every field set.
    empty = decode_us_section(25, "ZBAA.AQAA")
    assert empty.fields["MspaVersion"] == 0 and empty.fields["MspaCoveredTransaction"] == 1
    full = decode_us_section(25, "ZBABYA.BVVV.kkk")
    assert full.fields["SaleOptOut"] == full.fields["KnownChildSensitiveDataConsents"] == 1
    assert full.fields["SensitiveDataProcessing"] == (2, 1, 0, 2, 1, 0, 2, 1)
    assert d(gpp=encode_gpp({25: "ZBABYA.BVVV.kkk"}), gpp_sid=(25,)) == ConsentDecision(
        False, "gpp_usin_known_child"
    )


@pytest.mark.parametrize("section_id", [24, 25, 26, 27])
def test_header_layout_reads_like_the_librarys_layout(section_id: int) -> None:
    for v in (v for v in US_VECTORS if v["section_id"] == section_id):
        segments = v["section_string"].split(".")
        header = encode_section_header(section_id, [1] if len(segments) > 1 else [])
        with_header = ".".join([header, *segments])
        assert (
            decode_us_section(section_id, with_header).fields
            == decode_us_section(section_id, v["section_string"]).fields
        )
        got = d(gpp=encode_gpp({section_id: with_header}), gpp_sid=(section_id,))
        assert got.reason == v["expect_reason"], v["name"]


@pytest.mark.parametrize(
    "text",
    [
        "ZCAA.AQAA",  # header Version 2
        "ZBABYA.BVVV",  # header names subsection 1, none follows
        "ZBAA.AQAA.kkk",  # a subsection the header does not name
        "BVVV.kkk.kkk",  # library layout: at most core and one subsection
        "BVV",  # core cut off
        "BVVV.k",  # sensitive-data subsection cut off
    ],
)
def test_header_layout_malformed(text: str) -> None:
    with pytest.raises(GppDecodeError):
        decode_us_section(25, text)


# --- the rule ---


def test_gpc_denies_in_usnat() -> None:
    # The string of the attack: notices given, nothing opted out, GPC set.
    assert d(gpp="DBABL~BVVqAAAAAQ.YA", gpp_sid=(7,)) == ConsentDecision(False, "gpp_gpc")
    assert d(LENIENT, gpp="DBABL~BVVqAAAAAQ.YA", gpp_sid=(7,)).reason == "gpp_gpc"
    assert d(gpp="DBABL~BVVqAAAAAQ.QA", gpp_sid=(7,)).allowed


def test_a_gpc_subsection_counts_in_sections_whose_spec_has_none() -> None:
    allowed = _vector("usva_allowed")
    assert d(gpp=allowed["gpp"] + ".YA", gpp_sid=(9,)) == ConsentDecision(False, "gpp_gpc")
    assert d(gpp=allowed["gpp"] + ".QA", gpp_sid=(9,)).allowed
    # Subsection types no spec defines are skipped.
    assert d(gpp=allowed["gpp"] + ".wA", gpp_sid=(9,)).allowed


def test_several_applicable_sections_the_most_restrictive_wins() -> None:
    usnat_ok = _vector("usnat_allowed")["section_string"]
    usca_ok = _vector("usca_allowed")["section_string"]
    usca_out = _vector("usca_SaleOptOut_opted_out")["section_string"]
    both_ok = encode_gpp({7: usnat_ok, 8: usca_ok})
    assert d(gpp=both_ok, gpp_sid=(7, 8)) == ConsentDecision(True, "gpp_usnat_not_opted_out")
    one_out = encode_gpp({7: usnat_ok, 8: usca_out})
    assert d(gpp=one_out, gpp_sid=(7, 8)) == ConsentDecision(False, "gpp_usca_opted_out")
    assert d(gpp=one_out, gpp_sid=(8, 7)) == ConsentDecision(False, "gpp_usca_opted_out")
    # Only the listed ones apply.
    assert d(gpp=one_out, gpp_sid=(7,)).allowed
    # A malformed applicable section is not outweighed by a granting one.
    broken = encode_gpp({7: usnat_ok, 8: usca_ok[:3]})
    assert d(gpp=broken, gpp_sid=(7, 8)) == ConsentDecision(False, "gpp_usca_undecodable")
    assert d(gpp=broken, gpp_sid=(7,)).allowed
    # Beside uspv1 and tcfcav1 too.
    ca_no = _vector("tcfcav1_no_vendor_361")["section_string"]
    mixed = encode_gpp({5: ca_no, 6: "1YNN", 8: usca_ok})
    assert d(gpp=mixed, gpp_sid=(6, 8)).allowed
    assert d(gpp=mixed, gpp_sid=(5, 6, 8)) == ConsentDecision(False, "gpp_tcfca_vendor_denied")


def test_a_listed_section_missing_from_the_string() -> None:
    gpp = encode_gpp({7: _vector("usnat_allowed")["section_string"]})
    assert d(gpp=gpp, gpp_sid=(7, 12)) == ConsentDecision(False, "gpp_section_missing")


def test_sections_nobody_defined_are_still_unsupported() -> None:
    gpp = encode_gpp({28: "BAAA", 4: "BAAA"})
    assert d(gpp=gpp, gpp_sid=(28,)) == ConsentDecision(False, "gpp_unsupported_section")
    assert d(gpp=gpp, gpp_sid=(4, 28)) == ConsentDecision(False, "gpp_unsupported_section")


def test_tcfca_restrictions_of_every_kind_on_purpose_and_vendor() -> None:
    ca = decode_tcfca(_vector("tcfcav1_restriction_not_allowed_purpose_3")["section_string"])
    assert ca.publisher_restrictions[0].restriction_type is RestrictionType.NOT_ALLOWED
    assert ca.consent([3, 4], 361) == "restricted"
    assert ca.consent([3, 4], 299) == "vendor_denied"  # not restricted: no consent either
    assert ca.consent([1], 361) == "granted"


@pytest.mark.parametrize("text", ["", "B", "BP6ywkAP6ywkA", "CP6ywkAP6ywkAAAAAAEN", "!!!!"])
def test_tcfca_undecodable(text: str) -> None:
    with pytest.raises(GppDecodeError):
        decode_tcfca(text)
    if text:
        got = d(gpp=encode_gpp({5: text}), gpp_sid=(5,))
        assert got == ConsentDecision(False, "gpp_tcfca_undecodable")


# --- nothing crashes a decoder ---

_SECTION_STRINGS = sorted({v["section_string"] for v in VECTORS})


@given(st.sampled_from(sorted(US_SECTIONS)), st.text(max_size=60))
def test_any_text_is_a_us_section_or_raises(section_id: int, text: str) -> None:
    with contextlib.suppress(GppDecodeError):
        section = decode_us_section(section_id, text)
        section.denial()


@given(
    st.sampled_from(sorted(US_SECTIONS)),
    st.text(alphabet=B64URL + ".", min_size=1, max_size=80),
)
def test_any_base64_text_is_a_us_section_or_raises(section_id: int, text: str) -> None:
    with contextlib.suppress(GppDecodeError):
        decode_us_section(section_id, text).denial()


@given(st.sampled_from(_SECTION_STRINGS), st.data())
def test_damaged_reference_strings_decode_or_raise_in_every_section(
    text: str, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(text)))
    extra = data.draw(st.text(alphabet=B64URL + ".~", max_size=8))
    damaged = text[:cut] + extra + text[cut + data.draw(st.integers(0, 3)) :]
    for section_id in sorted(US_SECTIONS):
        with contextlib.suppress(GppDecodeError):
            decode_us_section(section_id, damaged).denial()
    with contextlib.suppress(GppDecodeError):
        decode_tcfca(damaged).consent([1, 3], 361)
    sid = data.draw(st.sampled_from([5, *sorted(US_SECTIONS)]))
    got = d(LENIENT, gpp=encode_gpp({sid: damaged}), gpp_sid=(sid,))
    assert got.reason in REASONS and got.reason != "internal_error"


@given(st.text(max_size=120))
def test_any_text_is_a_tcfca_section_or_raises(text: str) -> None:
    with contextlib.suppress(GppDecodeError):
        decode_tcfca(text).consent([1], 361)


vendor_ids = st.frozensets(st.integers(1, 800), max_size=40) | st.sampled_from(
    [frozenset({361}), frozenset(range(1, 700, 2)), frozenset(range(300, 420)), frozenset()]
)


@given(
    express=st.frozensets(st.integers(1, 24)),
    implied=st.frozensets(st.integers(1, 24)),
    vendors_express=vendor_ids,
    vendors_implied=vendor_ids,
    restrictions=st.lists(
        st.tuples(st.integers(1, 12), st.integers(0, 2), vendor_ids.filter(bool)), max_size=3
    ).map(tuple),
    legacy=st.booleans(),
)
def test_tcfca_reads_back_what_either_layout_wrote(
    express: frozenset[int],
    implied: frozenset[int],
    vendors_express: frozenset[int],
    vendors_implied: frozenset[int],
    restrictions: tuple[tuple[int, int, frozenset[int]], ...],
    legacy: bool,
) -> None:
    fields: dict[str, Any] = {
        "express": express,
        "implied": implied,
        "vendors_express": vendors_express,
        "vendors_implied": vendors_implied,
        "restrictions": restrictions,
    }
    text = encode_tcfca(**fields, legacy=legacy)
    ca = decode_tcfca(text)
    if _tcfca_fields(ca) != fields:
        # Only where the same bits are also a string of the other layout, as the reference
        # encoder writes it: then, like the reference decoder, the specified layout is read.
        assert legacy and not ca.legacy_ranges
        assert encode_tcfca(**_tcfca_fields(ca), legacy=False) == text


def _tcfca_fields(ca: TcfCa) -> dict[str, Any]:
    return {
        "express": ca.purposes_express,
        "implied": ca.purposes_implied,
        "vendors_express": _vendors(ca.vendor_express),
        "vendors_implied": _vendors(ca.vendor_implied),
        "restrictions": tuple(
            (r.purpose_id, int(r.restriction_type), _vendors(r.vendors))
            for r in ca.publisher_restrictions
        ),
    }


def _vendors(vector: VendorVector) -> frozenset[int]:
    return frozenset(v for v in range(vector.max_id + 1) if v in vector)
