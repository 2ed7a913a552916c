"""The consent gate: which signals apply, how they combine, and that nothing raises."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.config import ConsentConfig
from plugin.consent.gate import REASONS, UNDECODABLE_REASONS, carries_signal, decide, is_undecodable
from plugin.context import ConsentSignals
from plugin.result import ConsentDecision
from tests.helpers.gpp_encoder import SPEC_GPP_TCF_USP, encode_gpp, encode_usnat
from tests.helpers.tcf_encoder import B64URL, VECTORS, encode_tc_core

CFG = ConsentConfig()
LENIENT = ConsentConfig(default="granted")

TC_OK = encode_tc_core(purposes={1, 2, 3}, vendors={10, 361, 755})
TC_NO_PURPOSE_1 = encode_tc_core(purposes={2, 3}, vendors={361})
TC_NO_VENDOR = encode_tc_core(purposes={1, 2, 3}, vendors={10, 755})
USNAT_OK = encode_usnat(sale=2, sharing=2, targeted=2)


def d(cfg: ConsentConfig = CFG, **signals: Any) -> ConsentDecision:
    return decide(ConsentSignals(**signals), cfg)


def test_reasons_are_a_small_stable_snake_case_vocabulary() -> None:
    # A fixed set: the general reasons, then five per GPP US section (21 of them).
    assert len(REASONS) == len(set(REASONS)) <= 150
    assert all(re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", r) for r in REASONS)
    assert {r for r in REASONS if r.endswith("_undecodable")} == UNDECODABLE_REASONS
    assert {"tcf_undecodable", "usp_undecodable", "gpp_undecodable"} <= UNDECODABLE_REASONS
    assert is_undecodable("gpp_usnat_undecodable")
    assert not is_undecodable("tcf_missing")


# --- override ---


@pytest.mark.parametrize("tc", [TC_OK, TC_NO_VENDOR, "garbage"])
def test_an_override_may_always_deny(tc: str) -> None:
    assert d(override=False, gdpr=False, tc_string=tc) == ConsentDecision(False, "override_denied")
    assert not decide(
        ConsentSignals(gdpr=True, tc_string=tc), CFG, host=ConsentSignals(override=False)
    ).allowed


def test_an_override_grants_only_where_no_signal_was_sent() -> None:
    assert d(override=True) == ConsentDecision(True, "override_granted")
    assert d(override=True, gdpr=True, tc_string=TC_NO_VENDOR) == ConsentDecision(
        False, "tcf_vendor_denied"
    )
    assert d(override=True, us_privacy="1YYN") == ConsentDecision(False, "usp_opted_out")
    assert d(override=True, gdpr=True, tc_string="garbage") == ConsentDecision(
        False, "tcf_undecodable"
    )
    # A signal that grants by itself still grants, for its own reason.
    assert d(override=True, gdpr=True, tc_string=TC_OK) == ConsentDecision(True, "tcf_granted")
    # The host's override against the request's signals: the same rule.
    request = ConsentSignals(us_privacy="1YYN")
    assert decide(request, CFG, host=ConsentSignals(override=True)) == ConsentDecision(
        False, "usp_opted_out"
    )


@pytest.mark.parametrize("cfg", [CFG, LENIENT])
def test_child_directed_conflicts_and_restrictions_deny_whatever_else(cfg: ConsentConfig) -> None:
    for hard, reason in (
        ({"child_directed": True}, "child_directed"),
        ({"conflicts": ("gdpr",)}, "conflicting_signals"),
        ({"restricted": True}, "restricted_processing"),
    ):
        for extra in ({}, {"override": True}, {"gdpr": True, "tc_string": TC_OK}, {"gdpr": False}):
            assert d(cfg, **hard, **extra) == ConsentDecision(False, reason)
            # ... from either side: the host's flag holds over a granting request.
            host = ConsentSignals(**hard)  # type: ignore[arg-type]
            assert decide(ConsentSignals(**extra), cfg, host=host) == ConsentDecision(False, reason)
    assert d(cfg, child_directed=False, gdpr=True, tc_string=TC_OK).allowed


# --- TCF ---


def test_tcf_consent_for_purpose_1_and_vendor_361_grants() -> None:
    assert d(gdpr=True, tc_string=TC_OK) == ConsentDecision(True, "tcf_granted")


def test_tcf_without_purpose_or_vendor_denies() -> None:
    assert d(gdpr=True, tc_string=TC_NO_PURPOSE_1) == ConsentDecision(False, "tcf_purpose_denied")
    assert d(gdpr=True, tc_string=TC_NO_VENDOR) == ConsentDecision(False, "tcf_vendor_denied")
    # Configuration cannot turn a denial into a grant: `default` is only for missing signals.
    assert not d(LENIENT, gdpr=True, tc_string=TC_NO_VENDOR).allowed


def test_tcf_requires_every_configured_purpose_and_the_configured_vendor() -> None:
    assert d(ConsentConfig(purposes=(1, 3)), gdpr=True, tc_string=TC_OK).allowed
    assert d(ConsentConfig(purposes=(1, 4)), gdpr=True, tc_string=TC_OK) == ConsentDecision(
        False, "tcf_purpose_denied"
    )
    assert d(ConsentConfig(vendor_id=755), gdpr=True, tc_string=TC_OK).allowed
    assert not d(ConsentConfig(vendor_id=756), gdpr=True, tc_string=TC_OK).allowed


def test_missing_or_undecodable_tc_string_under_gdpr_uses_the_default() -> None:
    for tc in (None, "", "   "):
        assert d(gdpr=True, tc_string=tc) == ConsentDecision(False, "tcf_missing")
        assert d(LENIENT, gdpr=True, tc_string=tc) == ConsentDecision(True, "tcf_missing")
    assert d(gdpr=True, tc_string="not-a-tc-string") == ConsentDecision(False, "tcf_undecodable")
    assert d(LENIENT, gdpr=True, tc_string="!!") == ConsentDecision(True, "tcf_undecodable")


def test_tc_string_without_gdpr_flag_is_still_read() -> None:
    assert d(tc_string=TC_OK) == ConsentDecision(True, "tcf_granted")
    assert d(tc_string=TC_NO_VENDOR) == ConsentDecision(False, "tcf_vendor_denied")


def test_gdpr_not_applying_grants_and_ignores_a_stale_tc_string() -> None:
    assert d(gdpr=False) == ConsentDecision(True, "gdpr_not_applicable")
    assert d(gdpr=False, tc_string=TC_NO_VENDOR) == ConsentDecision(True, "gdpr_not_applicable")
    assert d(gdpr=False, us_privacy="1YNN") == ConsentDecision(True, "gdpr_not_applicable")
    assert d(gdpr=False, us_privacy="1---") == ConsentDecision(True, "gdpr_not_applicable")


# --- US Privacy ---


def test_us_privacy() -> None:
    assert d(us_privacy="1YYN") == ConsentDecision(False, "usp_opted_out")
    assert d(gdpr=False, us_privacy="1NYY") == ConsentDecision(False, "usp_opted_out")
    assert d(us_privacy="1YNN") == ConsentDecision(True, "usp_not_opted_out")
    assert d(us_privacy="1---") == ConsentDecision(False, "usp_not_applicable")
    assert d(LENIENT, us_privacy="1---") == ConsentDecision(True, "usp_not_applicable")
    assert d(us_privacy="yes please") == ConsentDecision(False, "usp_undecodable")
    assert d(gdpr=False, us_privacy="1YXN") == ConsentDecision(False, "usp_undecodable")


def test_any_denying_regime_denies() -> None:
    assert d(gdpr=True, tc_string=TC_OK, us_privacy="1YYN") == ConsentDecision(
        False, "usp_opted_out"
    )
    assert d(gdpr=True, tc_string=TC_NO_VENDOR, us_privacy="1YNN") == ConsentDecision(
        False, "tcf_vendor_denied"
    )
    # An unreadable signal outweighs a grant from another one.
    assert d(gdpr=True, tc_string="garbage", us_privacy="1YNN") == ConsentDecision(
        False, "tcf_undecodable"
    )


def test_no_signal_uses_the_default() -> None:
    assert d() == ConsentDecision(False, "no_signal")
    assert d(LENIENT) == ConsentDecision(True, "no_signal")


# --- GPP ---


def test_gpp_tcf_section_is_decided_like_a_tc_string() -> None:
    assert d(gpp=encode_gpp({2: TC_OK}), gpp_sid=(2,)) == ConsentDecision(True, "gpp_tcf_granted")
    assert d(gpp=encode_gpp({2: TC_NO_PURPOSE_1}), gpp_sid=(2,)) == ConsentDecision(
        False, "gpp_tcf_purpose_denied"
    )
    assert d(gpp=encode_gpp({2: TC_NO_VENDOR}), gpp_sid=[2]) == ConsentDecision(
        False, "gpp_tcf_vendor_denied"
    )
    assert d(gpp=encode_gpp({2: "AAAA"}), gpp_sid=(2,)) == ConsentDecision(
        False, "gpp_tcf_undecodable"
    )


def test_gpp_sid_2_makes_gdpr_apply() -> None:
    # gdpr=0 on the request but GPP says the EU TCF section applies: it is read, not skipped.
    assert d(gdpr=False, gpp=encode_gpp({2: TC_NO_VENDOR}), gpp_sid=(2,)) == ConsentDecision(
        False, "gpp_tcf_vendor_denied"
    )
    # The TC string may come as `gdpr_consent` instead of inside the GPP string.
    assert d(gpp_sid=(2,), tc_string=TC_OK) == ConsentDecision(True, "tcf_granted")
    assert d(gpp=encode_gpp({7: USNAT_OK}), gpp_sid=(2, 7), tc_string=TC_OK).allowed
    # ... but it must come from somewhere.
    assert d(gpp=encode_gpp({7: USNAT_OK}), gpp_sid=(2, 7)) == ConsentDecision(
        False, "gpp_section_missing"
    )
    assert d(gpp_sid=(2,)) == ConsentDecision(False, "gpp_missing")


@pytest.mark.parametrize(
    "opt_out",
    [{"sale": 1}, {"sharing": 1}, {"targeted": 1}, {"sale": 1, "sharing": 1, "targeted": 1}],
)
def test_usnat_opt_outs_deny(opt_out: dict[str, int]) -> None:
    gpp = encode_gpp({7: encode_usnat(**opt_out)})
    assert d(gpp=gpp, gpp_sid=(7,)) == ConsentDecision(False, "gpp_usnat_opted_out")


def test_usnat_without_opt_out_grants() -> None:
    assert d(gpp=encode_gpp({7: USNAT_OK}), gpp_sid=(7,)) == ConsentDecision(
        True, "gpp_usnat_not_opted_out"
    )
    not_applicable = encode_usnat(sale=0, sharing=0, targeted=0, notices=0)
    assert d(gpp=encode_gpp({7: not_applicable}), gpp_sid=(7,)).allowed
    assert d(gpp=encode_gpp({7: "zzzz"}), gpp_sid=(7,)) == ConsentDecision(
        False, "gpp_usnat_undecodable"
    )


@pytest.mark.parametrize("version", [1, 2])
def test_usnat_known_child_without_consent_denies(version: int) -> None:
    n = 2 if version == 1 else 3
    for i in range(n):
        kids = tuple(1 if j == i else 2 for j in range(n))
        gpp = encode_gpp({7: encode_usnat(version=version, known_child=kids)})
        assert d(LENIENT, gpp=gpp, gpp_sid=(7,)) == ConsentDecision(False, "gpp_usnat_known_child")
    consented = encode_gpp({7: encode_usnat(version=version, known_child=(2,) * n)})
    assert d(gpp=consented, gpp_sid=(7,)).allowed
    # A section cut off before the known-child fields cannot be read: fail closed.
    short = encode_gpp({7: encode_usnat(version=version)[:6]})
    assert d(gpp=short, gpp_sid=(7,)) == ConsentDecision(False, "gpp_usnat_undecodable")


def test_gpp_uspv1_section() -> None:
    assert d(gpp=encode_gpp({6: "1YYN"}), gpp_sid=(6,)) == ConsentDecision(
        False, "gpp_usp_opted_out"
    )
    assert d(gpp=encode_gpp({6: "1YNN"}), gpp_sid=(6,)) == ConsentDecision(
        True, "gpp_usp_not_opted_out"
    )
    assert d(gpp=encode_gpp({6: "1---"}), gpp_sid=(6,)) == ConsentDecision(
        False, "gpp_usp_not_applicable"
    )
    assert d(gpp=encode_gpp({6: "??"}), gpp_sid=(6,)) == ConsentDecision(
        False, "gpp_usp_undecodable"
    )
    # Listed but carried as `us_privacy` instead.
    assert d(gpp=encode_gpp({7: USNAT_OK}), gpp_sid=(6, 7), us_privacy="1YNN").allowed


def test_only_applicable_gpp_sections_count() -> None:
    gpp = encode_gpp({2: TC_NO_VENDOR, 7: USNAT_OK})
    assert d(gpp=gpp, gpp_sid=(7,)) == ConsentDecision(True, "gpp_usnat_not_opted_out")
    assert d(gpp=gpp, gpp_sid=(2, 7)) == ConsentDecision(False, "gpp_tcf_vendor_denied")
    # Without gpp_sid every section present applies (fail closed)...
    assert d(gpp=gpp) == ConsentDecision(False, "gpp_tcf_vendor_denied")
    # ... except the EU one when the host says GDPR does not apply.
    assert d(gpp=gpp, gdpr=False) == ConsentDecision(True, "gdpr_not_applicable")
    assert d(gpp=encode_gpp({2: TC_OK}), gdpr=False) == ConsentDecision(True, "gdpr_not_applicable")


def test_gpp_sections_we_do_not_read() -> None:
    # Section 1 is the withdrawn TCF EU v1, 28 is not defined yet.
    gpp = encode_gpp({1: "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", 7: USNAT_OK, 28: "BAAAAAAA"})
    # Unknown sections are ignored when a known one decides ...
    assert d(gpp=gpp, gpp_sid=(1, 7, 28)).allowed
    # ... but a GPP string whose applicable sections are all unknown decides nothing.
    for sid in ((28,), (1, 28)):
        assert d(gpp=gpp, gpp_sid=sid) == ConsentDecision(False, "gpp_unsupported_section")
        assert d(LENIENT, gpp=gpp, gpp_sid=sid) == ConsentDecision(True, "gpp_unsupported_section")


def test_gpp_sid_minus_one_means_no_section_applies() -> None:
    gpp = encode_gpp({7: encode_usnat(sale=1)})
    assert d(gpp=gpp, gpp_sid=(-1,)) == ConsentDecision(False, "gpp_not_applicable")
    assert d(gpp=gpp, gpp_sid=(-1,), gdpr=False) == ConsentDecision(True, "gdpr_not_applicable")
    assert d(gpp=gpp, gpp_sid=(-1,), us_privacy="1YNN") == ConsentDecision(
        True, "usp_not_opted_out"
    )


def test_undecodable_gpp() -> None:
    assert d(gpp="DBABM", gpp_sid=(2,)) == ConsentDecision(False, "gpp_undecodable")
    assert d(gpp="not gpp", gpp_sid=(7,)) == ConsentDecision(False, "gpp_undecodable")
    assert d(LENIENT, gpp="~~~") == ConsentDecision(True, "gpp_undecodable")
    # Fail closed: garbage GPP next to a grant is still unknown.
    assert not d(gpp="garbage", gpp_sid=(7,), us_privacy="1YNN").allowed


def test_spec_example_gpp_string() -> None:
    # The spec's sample TC section consents to no purpose at all.
    assert d(gpp=SPEC_GPP_TCF_USP, gpp_sid=(2, 6)) == ConsentDecision(
        False, "gpp_tcf_purpose_denied"
    )
    assert d(gpp=SPEC_GPP_TCF_USP, gpp_sid=(6,)) == ConsentDecision(True, "gpp_usp_not_opted_out")


def test_reference_vectors_through_gpp() -> None:
    publisher = ConsentConfig(tcf_basis="publisher")
    for v in VECTORS:
        got = d(gpp=encode_gpp({2: v["tc_string"]}), gpp_sid=(2,))
        assert got.allowed is v["expect_allowed"], v["name"]
        got = d(publisher, gpp=encode_gpp({2: v["tc_string"]}), gpp_sid=(2,))
        assert got.allowed is v["expect_allowed_publisher_basis"], v["name"]
        if not v["publisher_segment"]:
            assert got.reason == "gpp_tcf_publisher_missing"


def test_the_publisher_basis_still_denies_on_every_other_signal() -> None:
    """Only the TCF rule changes: child flags, US Privacy, GPP opt-outs and conflicts deny."""
    publisher = ConsentConfig(tcf_basis="publisher")
    tc = next(v for v in VECTORS if v["name"] == "publisher_p1_without_vendor_361")["tc_string"]
    assert d(publisher, gdpr=True, tc_string=tc) == ConsentDecision(True, "tcf_granted")
    assert d(CFG, gdpr=True, tc_string=tc).reason == "tcf_purpose_denied"
    assert d(publisher, gdpr=True, tc_string=tc, child_directed=True).reason == "child_directed"
    assert d(publisher, gdpr=True, tc_string=tc, us_privacy="1YYN").reason == "usp_opted_out"
    assert d(publisher, gdpr=True, tc_string=tc, conflicts=("gdpr",)).reason == (
        "conflicting_signals"
    )
    opted_out = encode_usnat(sale=1, sharing=2, targeted=2)
    got = d(publisher, gdpr=True, tc_string=tc, gpp=encode_gpp({7: opted_out}), gpp_sid=(7,))
    assert got == ConsentDecision(False, "gpp_usnat_opted_out")


# --- robustness ---


def test_a_bug_fails_closed_instead_of_raising() -> None:
    broken = ConsentConfig()
    msgspec.structs.force_setattr(broken, "vendor_id", "361")  # past every check: a bug
    assert decide(ConsentSignals(gdpr=True, tc_string=TC_OK), broken) == ConsentDecision(
        False, "internal_error"
    )
    assert decide(ConsentSignals(gdpr=True, tc_string=TC_OK), LENIENT).allowed


consent_text = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.text(alphabet=B64URL + ".~=", max_size=120),
    st.sampled_from([TC_OK, TC_NO_VENDOR, "1YYN", "1YNN", "1---", SPEC_GPP_TCF_USP]),
    st.builds(
        lambda sids, section: encode_gpp({sid: section for sid in sids}),
        st.sets(st.sampled_from([2, 6, 7, 8]), min_size=1),
        st.sampled_from([TC_OK, "1YNN", USNAT_OK, "x"]),
    ),
)
signals_strategy = st.builds(
    ConsentSignals,
    override=st.none() | st.booleans(),
    gdpr=st.none() | st.booleans(),
    tc_string=consent_text,
    us_privacy=consent_text,
    gpp=consent_text,
    gpp_sid=st.none() | st.lists(st.integers(-2, 12), max_size=4).map(tuple),
    child_directed=st.none() | st.booleans(),
    restricted=st.none() | st.booleans(),
    conflicts=st.sampled_from([(), ("gdpr",), ("us_privacy",)]),
)
request_strategy = signals_strategy.map(lambda s: msgspec.structs.replace(s, override=None))
config_strategy = st.builds(
    ConsentConfig,
    vendor_id=st.integers(1, 70_000),
    purposes=st.lists(st.integers(1, 30), min_size=1, max_size=4).map(tuple),
    default=st.sampled_from(["denied", "granted"]),
)


@given(signals_strategy, config_strategy)
def test_decide_never_raises_and_speaks_the_vocabulary(
    signals: ConsentSignals, cfg: ConsentConfig
) -> None:
    got = decide(signals, cfg)
    assert isinstance(got, ConsentDecision)
    assert got.reason in REASONS
    assert got.reason != "internal_error"
    if signals.override is False or signals.child_directed or signals.conflicts:
        assert not got.allowed
    if signals.override is True and not _carries_anything(signals):
        assert got == ConsentDecision(True, "override_granted")


def _carries_anything(signals: ConsentSignals) -> bool:
    """A consent signal or a denying flag of the request's own. A flag that says "not child
    directed" or "not restricted" (`tfcd=0`, `rdp=0`) grants nothing and denies nothing: it
    leaves the request without a signal, so an override may still decide."""
    return (
        carries_signal(signals)
        or bool(signals.child_directed)
        or bool(signals.restricted)
        or bool(signals.conflicts)
    )


@given(request_strategy, signals_strategy, config_strategy)
def test_never_more_permissive_than_the_requests_own_signals(
    request: ConsentSignals, host: ConsentSignals, cfg: ConsentConfig
) -> None:
    alone = decide(request, cfg)
    together = decide(request, cfg, host=host)
    assert together.reason in REASONS and together.reason != "internal_error"
    if _carries_anything(request):
        # Whatever the host adds, an override or signals of its own, it cannot upgrade.
        assert not together.allowed or alone.allowed
        assert decide(request, cfg, host=ConsentSignals(override=True)) == alone
    if request.child_directed:
        assert together == ConsentDecision(False, "child_directed")
    if not alone.allowed and _carries_anything(request):
        assert not together.allowed


@given(signals_strategy)
def test_an_opt_out_always_denies(signals: ConsentSignals) -> None:
    opted_out = ConsentSignals(
        gdpr=signals.gdpr,
        tc_string=signals.tc_string,
        us_privacy="1YYN",
        gpp=signals.gpp,
        gpp_sid=signals.gpp_sid,
    )
    assert not decide(opted_out, LENIENT).allowed


def _junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.integers(),
        st.binary(max_size=20),
        st.floats(),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=20),
    )


@given(
    st.builds(
        ConsentSignals,
        override=_junk(),
        gdpr=_junk(),
        tc_string=_junk(),
        us_privacy=_junk(),
        gpp=_junk(),
        gpp_sid=_junk(),
    )
)
def test_wrongly_typed_signals_do_not_raise(signals: ConsentSignals) -> None:
    # msgspec does not validate on construction: a host may hand us anything.
    got = decide(signals, CFG)
    assert got.reason in REASONS
