"""AdsWizz adapter: `aw_0_1st.` parameters with comma lists."""

from __future__ import annotations

import pytest

from adapters.adswizz import AdsWizzAdapter
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity
from plugin.request import AdRequest
from tests.adapters.reading import reason

SAMPLE = (
    "https://demo.deliveryengine.adswizz.com/vast/4.0/request/alias/demo_zone?listenerId=abc-123"
    "&aw_0_1st.genre=sports&aw_0_req.gdpr=1&aw_0_req.userConsentV2=CONSENT"
)

aw = AdsWizzAdapter()


def test_sample_gains_a_prefixed_comma_list() -> None:
    assert aw.apply_url(SAMPLE, {"permutive": ["1", "2"], "prmtvctx": ["c1"]}) == (
        SAMPLE + "&aw_0_1st.permutive=1,2&aw_0_1st.prmtvctx=c1"
    )


def test_existing_parameter_is_extended_in_place() -> None:
    url = SAMPLE.replace("&aw_0_1st.genre", "&aw_0_1st.permutive=1&aw_0_1st.genre")
    assert aw.apply_url(url, {"permutive": ["1", "2", "3", "2"]}) == url.replace(
        "aw_0_1st.permutive=1&", "aw_0_1st.permutive=1,2,3&"
    )
    assert aw.apply_url(url, {"permutive": ["1"]}) == url


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("aw_0_1st.p=", "aw_0_1st.p=0,1,2"),
        ("aw_0_1st.p", "aw_0_1st.p=0,1,2"),
        ("aw_0_1st.p=0%2C2", "aw_0_1st.p=0%2C2,1"),
    ],
)
def test_unusual_existing_values(existing: str, expected: str) -> None:
    url = f"https://h/vast/4.0/request/alias/z?a=1&{existing}&b=2"
    assert (
        aw.apply_url(url, {"p": ["0", "1", "2"]})
        == f"https://h/vast/4.0/request/alias/z?a=1&{expected}&b=2"
    )


def test_values_encoded_and_commas_dropped() -> None:
    url = "https://h/vast/4.0/request/alias/z?a=1#frag"
    assert aw.apply_url(url, {"p": ["a,b", "a b&c", "caf\u00e9", ""]}) == (
        "https://h/vast/4.0/request/alias/z?a=1&aw_0_1st.p=a%20b%26c,caf%C3%A9#frag"
    )
    assert aw.apply_url(url, {"p": ["a,b"]}) == url


def test_url_without_query() -> None:
    assert aw.apply_url("https://h/www/delivery/afr.php", {"p": ["1"]}) == (
        "https://h/www/delivery/afr.php?aw_0_1st.p=1"
    )


def test_parse_sample() -> None:
    assert aw.parse_url(SAMPLE) == Context(
        identity=Identity(alias=Alias(tag="listener_id", id="abc-123")),
        consent=ConsentSignals(gdpr=True, tc_string="CONSENT"),
    )


def test_parse_app_request_with_device_id() -> None:
    url = (
        "https://h/vast/4.0/request/alias/station%201?aw_0_awz.listenerid=L-1"
        "&aw_0_1st.ifa=F1-2&aw_0_1st.ifaType=fireOS&aw_0_req.lmt=0&aw_0_req.gdpr=false"
        "&aw_0_req.usPrivacy=1YNN&gpp=DBABMA~x&gpp_sid=2,6"
    )
    assert aw.parse_url(url) == Context(
        identity=Identity(
            aliases=(
                Alias(tag="afai", id="F1-2", priority=0),
                Alias(tag="listener_id", id="L-1", priority=1),
            )
        ),
        consent=ConsentSignals(gdpr=False, us_privacy="1YNN", gpp="DBABMA~x", gpp_sid=(2, 6)),
    )


@pytest.mark.parametrize(
    "params",
    [
        "aw_0_1st.ifa=F1-2&aw_0_1st.ifaType=idfa&aw_0_req.lmt=1",
        "aw_0_1st.ifa=F1-2",
        "aw_0_1st.ifa=00000000-0000-0000-0000-000000000000&aw_0_1st.ifaType=idfa",
        "listenerid=00000000-0000-0000-0000-000000000000",
    ],
)
def test_unusable_ids_are_ignored(params: str) -> None:
    assert aw.parse_url(f"https://h/vast/4.0/request/alias/z?{params}").identity is None


def test_content_url_parameter_wins_and_a_zone_is_never_content() -> None:
    url = "https://h/www/delivery/afr.php?zoneid=77&aw_0_1st.contentUrl=podcast%3A%2F%2Fshow%2F9"
    assert aw.parse_url(url).content.url == "podcast://show/9"
    # A zone is an ad placement: every episode of a show may share it.
    assert aw.parse_url("https://h/www/delivery/afr.php?zoneid=77").content == Content()
    assert aw.parse_url("https://h/vast/4.0/request/alias/show-zone").content == Content()
    # The episode and content ids are the content when no URL names it.
    episode = aw.parse_url(
        "https://h/vast/4.0/request/alias/z?aw_0_1st.episode_id=ep1&aw_0_1st.content_id=c9"
    )
    assert episode.content == Content(properties={"episode_id": "ep1", "content_id": "c9"})
    assert aw.content_ids[0].property == "episode_id"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SAMPLE, True),
        ("https://h/vast/2.0/request/alias/z", True),
        ("https://h/vast/4.1/request?zoneId=1", True),
        ("https://h/www/delivery/afr.php?zoneid=1", True),
        ("https://h/vast/4.0/response/alias/z", False),
        ("https://h/vast//request/alias/z", False),
        ("https://h/other?u=/vast/4.0/request/alias/z", False),
        ("https://h/afr.phpx", False),
    ],
)
def test_recognises(url: str, expected: bool) -> None:
    assert (reason(aw, AdRequest(url)) is None) is expected


def test_other_urls_are_left_alone() -> None:
    url = "https://h/gampad/ads?listenerId=x"
    assert aw.apply_url(url, {"p": ["1"]}) == url
    assert aw.parse_url(url) == Context()


def test_defaults() -> None:
    assert aw.name == "adswizz"
    assert aw.activation_platforms == ("adswizz_keyvalue", "adswizz")


# Every consent signal counts in the `aw_0_1st.` targeting under each of its spellings; a copy
# there that disagrees with the request's own is a conflict (a denial).
AW_BASE = "https://x.adswizz.com/vast/4.0/request/alias/z?listenerId=abc"


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ("aw_0_1st.usPrivacy=1YYN", "us_privacy", "1YYN"),
        ("aw_0_1st.us_privacy=1YYN", "us_privacy", "1YYN"),
        ("aw_0_1st.gpp=DBABMA~X&aw_0_1st.gppSid=7", "gpp_sid", (7,)),
        ("aw_0_1st.gpp=DBABMA~X&aw_0_1st.gpp_sid=7", "gpp_sid", (7,)),
        ("aw_0_1st.gpp=DBABMA~X", "gpp", "DBABMA~X"),
        ("aw_0_1st.gdpr=1", "gdpr", True),
        ("aw_0_1st.userConsentV2=TC", "tc_string", "TC"),
        ("aw_0_1st.gdpr_consent=TC", "tc_string", "TC"),
    ],
)
def test_consent_in_the_targeting_is_read(params: str, field: str, value: object) -> None:
    consent = aw.parse_url(f"{AW_BASE}&{params}").consent
    assert getattr(consent, field) == value and consent.conflicts == ()


@pytest.mark.parametrize(
    "params",
    [
        "aw_0_req.usPrivacy=1YNN&aw_0_1st.usPrivacy=1YYN",
        "us_privacy=1YNN&aw_0_1st.USPRIVACY=1YYN",
        "aw_0_req.gppSid=2&aw_0_1st.gppSid=7",
        "aw_0_req.userConsentV2=A&aw_0_1st.userConsentV2=B",
        "aw_0_req.gdpr=0&aw_0_1st.gdpr=1",
    ],
)
def test_targeting_that_disagrees_is_a_conflict(params: str) -> None:
    assert aw.parse_url(f"{AW_BASE}&{params}").consent.conflicts != ()
