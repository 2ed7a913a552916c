"""A denial anywhere counts: attackers' ad requests to `cohortkv serve` that hide a denial in
another FreeWheel section, inside the key-values, in another letter case, or that name two
devices at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.params import Params, SignalReader, first_params
from tests.helpers.attacks import AW, FW, GAM, GRANT, IDFA, OTHER, VAST, decided, get, sidecar
from tests.helpers.fake_adserver import FakeAdServer, Running, running
from tests.helpers.fakes import FakePermutive

VECTORS = {
    v["name"]: v["tc_string"]
    for v in json.loads((Path(__file__).parent / "vectors" / "tcf_vectors.json").read_text())
}
TC_GRANTS = VECTORS["range_single_361_all_purposes"]
TC_DENIES = VECTORS["range_single_361_purpose1_off"]


@pytest.fixture
async def proxy(fake: FakePermutive, ads: FakeAdServer) -> AsyncIterator[Running]:
    async with running(sidecar(fake, ads)) as r:
        yield r


# --- 1. a denial anywhere counts ------------------------------------------------------------

# The publisher's template fixes a denial after a player value; the viewer's value ends in `;`
# (MediaTailor decodes player values into the template), which moves the denial into a slot
# section. Each attack also carries what it takes to send the CCS call on today's code.
SECTION_ATTACKS = {
    "fw_us_privacy_pushed_into_a_slot": (
        FW + f"&_fw_gdpr=0;_fw_did=idfa:{IDFA};&_fw_us_privacy=1YYN;slid=pre",
        "usp_opted_out",
    ),
    "fw_gdpr_pushed_into_a_slot": (
        FW + f";_fw_did=idfa:{IDFA};&_fw_gdpr=1;slid=pre" + GRANT,
        "tcf_missing",
    ),
    "fw_us_privacy_in_a_slot_disagrees": (
        FW + f"&_fw_us_privacy=1YNN;_fw_did=idfa:{IDFA};us_privacy=1YYN&slid=pre",
        "conflicting_signals",
    ),
    "gam_tfcd_inside_cust_params": (
        GAM + f"&rdid={IDFA}&idtype=idfa&cust_params=section%3Dkids%26tfcd%3D1" + GRANT,
        "child_directed",
    ),
    "gam_tfcd_in_a_second_cust_params": (
        GAM + f"&rdid={IDFA}&idtype=idfa&cust_params=s%3Dnews&cust_params=tfcd%3D1" + GRANT,
        "child_directed",
    ),
    "gam_npa_in_cust_params_in_capitals": (
        GAM + f"&rdid={IDFA}&idtype=idfa&cust_params=s%3Dnews&CUST_PARAMS=NPA%3D1" + GRANT,
        "restricted_processing",
    ),
    "gam_us_privacy_inside_cust_params_disagrees": (
        GAM + f"&rdid={IDFA}&idtype=idfa&us_privacy=1YNN&cust_params=us_privacy%3D1YYN",
        "conflicting_signals",
    ),
    "aw_coppa_in_the_targeting": (
        AW.format(idfa=IDFA) + "&aw_0_1st.coppa=1" + GRANT,
        "child_directed",
    ),
    "aw_coppa_in_the_targeting_in_capitals": (
        AW.format(idfa=IDFA) + "&AW_0_1ST.Coppa=1" + GRANT,
        "child_directed",
    ),
}


# Two different ids for one device: the request names nobody (consent itself still stands).
TWO_IDS = {
    "fw_did_in_two_sections": FW + f"&_fw_did=idfa:{OTHER};_fw_did=idfa:{IDFA};slid=pre",
    "fw_did_pushed_into_a_slot": FW + f";_fw_did=idfa:{IDFA};&_fw_did=idfa:{OTHER};slid=pre",
    "gam_rdid_repeated": GAM + f"&rdid={IDFA}&idtype=idfa&rdid={OTHER}",
    "gam_idtype_repeated": GAM + f"&rdid={IDFA}&idtype=idfa&idtype=rida",
    "aw_listener_ids_disagree": AW.format(idfa="") + "&listenerId=a1&listenerid=b2",
    "query_ifa_repeated": VAST + f"&ifa={IDFA}&ifa_type=idfa&ifa={OTHER}",
}


async def test_one_device_id_repeated_alike_in_two_sections_is_still_used(
    proxy: Running, fake: FakePermutive
) -> None:
    await get(proxy, FW + f"&_fw_did=idfa:{IDFA};_fw_did=idfa%3A{IDFA};slid=pre" + GRANT)
    assert fake.calls["ccs"] == 1
    assert fake.bodies["ccs"][0]["body"]["alias"] == {"tag": "idfa", "id": IDFA}


# --- 2. case variants of deny flags count ----------------------------------------------------

CASE_ATTACKS = {
    "gam_TFCD": (GAM + f"&rdid={IDFA}&idtype=idfa&TFCD=1" + GRANT, "child_directed"),
    "gam_Npa": (GAM + f"&rdid={IDFA}&idtype=idfa&Npa=1" + GRANT, "restricted_processing"),
    "gam_RDP_encoded": (GAM + f"&rdid={IDFA}&idtype=idfa&%52DP=1" + GRANT, "restricted_processing"),
    "gam_US_PRIVACY_disagrees": (
        GAM + f"&rdid={IDFA}&idtype=idfa&us_privacy=1YNN&US_PRIVACY=1YYN",
        "conflicting_signals",
    ),
    "gam_Gdpr_disagrees": (
        GAM + f"&rdid={IDFA}&idtype=idfa&gdpr=0&Gdpr=1" + GRANT,
        "conflicting_signals",
    ),
    "fw_FW_COPPA_in_a_slot": (
        FW + f";_fw_did=idfa:{IDFA};slid=pre&_FW_COPPA=1" + GRANT,
        "child_directed",
    ),
    "fw_encoded_FW_COPPA_in_a_slot": (
        FW + f";_fw_did=idfa:{IDFA};slid=pre&%5F%46W_COPPA=1" + GRANT,
        "child_directed",
    ),
    "fw_long_s_us_privacy_in_a_slot": (  # U+017F, long s, folds to `s`
        FW + f"&_fw_gdpr=0;_fw_did=idfa:{IDFA};slid=pre&_fw_u%C5%BF_privacy=1YYN",
        "usp_opted_out",
    ),
    "aw_AW_0_REQ_COPPA": (AW.format(idfa=IDFA) + "&AW_0_REQ.COPPA=1" + GRANT, "child_directed"),
    "aw_consent_lowercased_disagrees": (
        AW.format(idfa=IDFA)
        + f"&aw_0_req.gdpr=1&aw_0_req.userConsentV2={TC_GRANTS}"
        + f"&aw_0_req.userconsentv2={TC_DENIES}",
        "conflicting_signals",
    ),
    "query_Coppa": (VAST + f"&ifa={IDFA}&ifa_type=idfa&Coppa=1" + GRANT, "child_directed"),
}


# A deny-only flag whose value is neither set nor unset: a lenient reader may take it as set.
ODD_VALUE_ATTACKS = {
    "gam_tfcd_yes": (GAM + f"&rdid={IDFA}&idtype=idfa&tfcd=yes" + GRANT, "child_directed"),
    "fw_coppa_2_in_a_slot": (
        FW + f";_fw_did=idfa:{IDFA};slid=pre&_fw_coppa=2" + GRANT,
        "child_directed",
    ),
    "aw_coppa_with_a_nul": (
        AW.format(idfa=IDFA) + "&aw_0_req.coppa=1%00" + GRANT,
        "child_directed",
    ),
}


DENIALS = {**SECTION_ATTACKS, **CASE_ATTACKS, **ODD_VALUE_ATTACKS}


@pytest.mark.parametrize("case", sorted(DENIALS))
async def test_a_denial_counts_in_any_place_and_any_letter_case(
    proxy: Running, fake: FakePermutive, case: str
) -> None:
    target, reason = DENIALS[case]
    await get(proxy, target)
    assert decided(proxy, reason) == 1
    assert fake.calls["ccs"] == 0


LAT_IN_ANOTHER_CASE = {
    "gam_IS_LAT": GAM + f"&rdid={IDFA}&idtype=idfa&IS_LAT=1",
    "fw_Fw_Is_Lat_in_a_slot": FW + f";_fw_did=idfa:{IDFA};slid=pre&_Fw_Is_Lat=1",
    "aw_Aw_0_Req_Lmt": AW.format(idfa=IDFA) + "&Aw_0_Req.Lmt=1",
    "query_LMT": VAST + f"&ifa={IDFA}&ifa_type=idfa&LMT=1",
    "gam_is_lat_yes": GAM + f"&rdid={IDFA}&idtype=idfa&is_lat=yes",
}


NO_IDENTITY = {**TWO_IDS, **LAT_IN_ANOTHER_CASE}


@pytest.mark.parametrize("case", sorted(NO_IDENTITY))
async def test_two_device_ids_or_limit_ad_tracking_in_any_case_leave_no_identity(
    proxy: Running, fake: FakePermutive, case: str
) -> None:
    await get(proxy, NO_IDENTITY[case] + GRANT)
    assert decided(proxy, "override_granted") == 1
    assert fake.calls["ccs"] == 0
    reason = proxy.sample(
        "cohortkv_signal_source_total", signal="behavioral", source="none", reason="no_identity"
    )
    assert reason == 1


DENY_FLAGS = ["tfcd", "tfua", "rdp", "npa", "ltd", "coppa", "is_lat", "lmt", "_fw_coppa"]


@given(
    st.sampled_from(DENY_FLAGS).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
                lambda upper: "".join(
                    c.upper() if u else c for c, u in zip(name, upper, strict=True)
                )
            ),
        )
    ),
    st.lists(st.sampled_from(["iu=/1", "sz=1x1", "a=b"]), max_size=3),
)
def test_any_case_variant_of_a_deny_flag_is_read(names: tuple[str, str], others: list[str]) -> None:
    name, variant = names
    p = first_params("&".join([*others, f"{variant}=1"]))
    assert SignalReader(p).any_set(name) is True
    assert SignalReader(Params(), p).any_set(name) is True  # in any of the places, too
