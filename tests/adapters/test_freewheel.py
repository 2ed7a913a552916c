"""FreeWheel adapter: `;` sections kept intact, key-values in the second one."""

from __future__ import annotations

import pytest

from adapters.base import AdapterSettings
from adapters.freewheel import FreeWheelAdapter
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity
from plugin.request import AdRequest
from tests.adapters.reading import reason

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GLOBAL = (
    "nw=392564&prof=392564:sample_profile&csid=sample_site&caid=asset_123&vdur=600&resp=vast4"
    f"&_fw_did=idfa:{IDFA}&flag=+slcb+qtcb"
)
SAMPLE = (
    f"https://5fd74.v.fwmrm.net/ad/g/1?{GLOBAL}"
    ";_fw_gdpr=1&_fw_gdpr_consent=CONSENT&existing=1;slid=pre&tpcl=PREROLL&ptgt=a;"
)

fw = FreeWheelAdapter()


def test_sample_gains_repeated_pairs_in_the_key_value_section() -> None:
    assert fw.apply_url(SAMPLE, {"permutive": ["1", "2"]}) == (
        f"https://5fd74.v.fwmrm.net/ad/g/1?{GLOBAL}"
        ";_fw_gdpr=1&_fw_gdpr_consent=CONSENT&existing=1&permutive=1&permutive=2"
        ";slid=pre&tpcl=PREROLL&ptgt=a;"
    )


def test_existing_pairs_are_merged_without_duplicates() -> None:
    out = fw.apply_url(SAMPLE, {"existing": ["1", "2", "2"], "prmtvctx": ["c1"]})
    assert out == SAMPLE.replace("existing=1;", "existing=1&existing=2&prmtvctx=c1;")
    assert fw.apply_url(SAMPLE, {"existing": ["1"]}) == SAMPLE


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("nw=1", "nw=1;p=1&p=2"),
        ("nw=1;", "nw=1;p=1&p=2;"),
        ("nw=1;;", "nw=1;p=1&p=2;"),
        ("nw=1;;slid=pre", "nw=1;p=1&p=2;slid=pre"),
        ("nw=1;;slid=pre;", "nw=1;p=1&p=2;slid=pre;"),
        ("nw=1;k=1", "nw=1;k=1&p=1&p=2"),
        ("nw=1;k=1;", "nw=1;k=1&p=1&p=2;"),
        ("nw=1;k=1&", "nw=1;k=1&&p=1&p=2"),
        ("nw=1;k=1;slid=a;slid=b;", "nw=1;k=1&p=1&p=2;slid=a;slid=b;"),
        ("", ";p=1&p=2"),
    ],
)
def test_section_shapes_and_trailing_semicolon_kept(query: str, expected: str) -> None:
    url = f"https://x.v.fwmrm.net/ad/g/1?{query}#frag;a=b"
    assert (
        fw.apply_url(url, {"p": ["1", "2"]}) == f"https://x.v.fwmrm.net/ad/g/1?{expected}#frag;a=b"
    )


def test_values_are_percent_encoded() -> None:
    out = fw.apply_url("https://x.v.fwmrm.net/ad/g/1?nw=1", {"p": ["a b&c;d=e", "caf\u00e9", ""]})
    assert out == "https://x.v.fwmrm.net/ad/g/1?nw=1;p=a%20b%26c%3Bd%3De&p=caf%C3%A9"


def test_reserved_keys_are_never_written() -> None:
    url = "https://x.v.fwmrm.net/ad/g/1?nw=1;k=1"
    assert fw.apply_url(url, {"_fw_gdpr": ["0"], "gpp": ["x"], "gpp_sid": ["2"], "": ["1"]}) == url


def test_url_without_query_or_of_another_platform_is_left_alone() -> None:
    assert (
        fw.apply_url("https://x.v.fwmrm.net/ad/g/1", {"p": ["1"]}) == "https://x.v.fwmrm.net/ad/g/1"
    )
    gam = "https://h/gampad/ads?nw=1;k=1"
    assert fw.apply_url(gam, {"p": ["1"]}) == gam
    assert fw.parse_url(gam + "&_fw_did=idfa:x") == Context()


def test_parse_sample() -> None:
    assert fw.parse_url(SAMPLE) == Context(
        identity=Identity(alias=Alias(tag="idfa", id=IDFA)),
        consent=ConsentSignals(gdpr=True, tc_string="CONSENT"),
        content=Content(
            url="freewheel://392564/asset/asset_123",
            properties={"video_id": "asset_123", "duration_seconds": "600"},
        ),
    )


def test_parse_full_request() -> None:
    url = (
        "https://x.v.fwmrm.net/ad/g/1?nw=9&caid=show%2F7&vdur=29.5&vprn=8812&pvrn=12345"
        "&_fw_us_privacy=1YYN&gpp=DBABMA~x&gpp_sid=7"
        ";_fw_did=rida%3Aroku-1&_fw_content_genre=sports&_fw_content_genre=news"
        "&_fw_content_rating=TV-PG&_fw_content_url=https%3A%2F%2Fpub.example%2Fshow%2F7"
        "&_fw_gdpr=0;slid=pre"
    )
    assert fw.parse_url(url) == Context(
        identity=Identity(alias=Alias(tag="rida", id="roku-1")),
        consent=ConsentSignals(gdpr=False, us_privacy="1YYN", gpp="DBABMA~x", gpp_sid=(7,)),
        content=Content(
            url="https://pub.example/show/7",
            properties={
                "genre": ["sports", "news"],
                "rating": "TV-PG",
                "video_id": "show/7",
                "duration_seconds": "29.5",
            },
        ),
        view_id="8812",
        ssai_session_id="12345",
    )


def test_key_value_section_wins_over_global_but_consent_copies_must_agree() -> None:
    url = (
        "https://x.v.fwmrm.net/ad/g/1?_fw_gdpr=0&_fw_content_genre=a;_fw_gdpr=1&_fw_content_genre=b"
    )
    ctx = fw.parse_url(url)
    assert ctx.content.properties == {"genre": "b"}
    # Two copies of a consent parameter that disagree are a conflict: the gate denies.
    assert ctx.consent.conflicts == ("_fw_gdpr",) and ctx.consent.gdpr is None
    agreeing = fw.parse_url(url.replace("_fw_gdpr=0", "_fw_gdpr=1"))
    assert agreeing.consent.gdpr is True and agreeing.consent.conflicts == ()


@pytest.mark.parametrize(
    ("did", "alias"),
    [
        (f"idfa:{IDFA}", Alias(tag="idfa", id=IDFA)),
        ("aaid:abc-1", Alias(tag="aaid", id="abc-1")),
        ("google_advertising_id:abc-1", Alias(tag="aaid", id="abc-1")),
        ("tifa:t-1", Alias(tag="tifa", id="t-1")),
        ("abc-1", Alias(tag="device_id", id="abc-1")),
        ("AA:BB:CC", Alias(tag="device_id", id="AA:BB:CC")),
    ],
)
def test_parse_device_ids(did: str, alias: Alias) -> None:
    ctx = fw.parse_url(f"https://x.v.fwmrm.net/ad/g/1?nw=1&_fw_did={did}")
    assert ctx.identity == Identity(alias=alias)


@pytest.mark.parametrize(
    "params",
    [
        "_fw_did=idfa:abc&_fw_is_lat=1",
        ";_fw_is_lat=1&_fw_did=idfa:abc",
        "_fw_did=idfa:00000000-0000-0000-0000-000000000000",
        "_fw_did=",
        "_fw_did=idfa:",
    ],
)
def test_parse_unusable_device_id(params: str) -> None:
    assert fw.parse_url(f"https://x.v.fwmrm.net/ad/g/1?nw=1&{params}").identity is None


def test_coppa_is_a_child_flag() -> None:
    url = "https://x.v.fwmrm.net/ad/g/1?nw=1;_fw_coppa=1&_fw_gdpr=1&_fw_gdpr_consent=C"
    assert fw.parse_url(url).consent == ConsentSignals(
        child_directed=True, gdpr=True, tc_string="C"
    )
    assert fw.parse_url(url.replace("_fw_coppa=1", "_fw_coppa=0")).consent.child_directed is False
    # In either section, in any copy.
    glob = "https://x.v.fwmrm.net/ad/g/1?nw=1&_fw_coppa=1;_fw_coppa=0"
    assert fw.parse_url(glob).consent.child_directed is True


def test_content_url_without_network() -> None:
    assert fw.parse_url("https://x.v.fwmrm.net/ad/g/1?caid=a%20b").content.url == (
        "freewheel://asset/a%20b"
    )
    assert fw.parse_url("https://x.v.fwmrm.net/ad/g/1?nw=1").content == Content()


@pytest.mark.parametrize("vdur", ["-1", "nan", "abc", "29.5"])
def test_duration_is_passed_as_text_for_the_enricher_to_type(vdur: str) -> None:
    ctx = fw.parse_url(f"https://x.v.fwmrm.net/ad/g/1?nw=1&caid=a&vdur={vdur}")
    assert ctx.content.properties["duration_seconds"] == vdur
    assert (
        "duration_seconds"
        not in fw.parse_url("https://x.v.fwmrm.net/ad/g/1?nw=1&caid=a&vdur=").content.properties
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (SAMPLE, True),
        ("https://demo.v.fwmrm.net/ad/g/1?nw=1", True),
        ("http://127.0.0.1:8080/ad/g/1", True),
        ("https://demo.v.fwmrm.net/ad/g/12?nw=1", False),
        ("https://demo.v.fwmrm.net/ad/p/1?nw=1", False),
        ("https://demo.v.fwmrm.net/x?u=/ad/g/1", False),
    ],
)
def test_recognises(url: str, expected: bool) -> None:
    assert (reason(fw, AdRequest(url)) is None) is expected


def test_defaults() -> None:
    assert fw.name == "freewheel"
    assert fw.activation_platforms == ("freewheel",)
    assert FreeWheelAdapter(
        AdapterSettings(activation_platforms=("fw2",))
    ).activation_platforms == ("fw2",)
