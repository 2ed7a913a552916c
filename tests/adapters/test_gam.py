"""GAM adapter: exact URLs out, Context in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.gam import GamAdapter, GamSettings
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity
from plugin.request import AdRequest
from tests.adapters.reading import applied, reason

SAMPLE = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/external/single_ad_samples"
    "&sz=640x480&cust_params=sample_ct%3Dlinear&ciu_szs=300x250%2C728x90&gdfp_req=1&output=vast"
    "&unviewed_position_start=1&env=vp&impl=s&correlator="
)

TC = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
APP = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/1234/video-demo&sz=640x480&gdfp_req=1"
    "&output=vast&env=vp&unviewed_position_start=1"
    "&cust_params=section%3Dsports%26permutive%3D111%2C123%26tags%3Da%2Cb"
    f"&ppid=user-abc-12345678901234567890&rdid={IDFA}&idtype=idfa&is_lat=0"
    f"&gdpr=1&gdpr_consent={TC}&us_privacy=1YNN&gpp_sid=2,x,7"
    "&description_url=https%3A%2F%2Fwww.example.com%2Fvideos%2Fmatch-highlights"
    "&vid=vid_456&cmsid=2494&correlator=4345645667&scor=17#t=10"
)

gam = GamAdapter()


def test_acceptance_sample_gains_keys_inside_cust_params() -> None:
    out = gam.apply_url(SAMPLE, {"permutive": ["123", "456"]})
    assert out == (
        "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/external/single_ad_samples"
        "&sz=640x480&cust_params=sample_ct%3Dlinear%26permutive%3D123%2C456"
        "&ciu_szs=300x250%2C728x90&gdfp_req=1&output=vast&unviewed_position_start=1&env=vp"
        "&impl=s&correlator="
    )


def test_merge_into_existing_keys_in_place() -> None:
    out = gam.apply_url(APP, {"permutive": ["123", "456", "456"], "prmtvctx": ["ctx1"]})
    assert out == APP.replace(
        "cust_params=section%3Dsports%26permutive%3D111%2C123%26tags%3Da%2Cb",
        "cust_params=section%3Dsports%26permutive%3D111%2C123%2C456%26tags%3Da%2Cb"
        "%26prmtvctx%3Dctx1",
    )


def test_nothing_new_leaves_url_unchanged() -> None:
    assert gam.apply_url(APP, {"permutive": ["111", "123"]}) == APP
    assert gam.apply_url(APP, {}) == APP
    assert gam.apply_url(APP, {"permutive": []}) == APP


def test_cust_params_appended_at_end_of_query_before_fragment() -> None:
    base = "https://securepubads.g.doubleclick.net/gampad/live/ads?iu=/1/x&sz=1x1"
    assert (
        gam.apply_url(base + "#frag?x=1", {"permutive": ["1"]})
        == base + "&cust_params=permutive%3D1#frag?x=1"
    )
    assert (
        gam.apply_url("https://h/gampad/ads", {"p": ["1"]})
        == "https://h/gampad/ads?cust_params=p%3D1"
    )
    assert (
        gam.apply_url("https://h/gampad/ads?", {"p": ["1"]})
        == "https://h/gampad/ads?cust_params=p%3D1"
    )


@pytest.mark.parametrize(
    ("existing", "values", "expected"),
    [
        ("cust_params=", ["1"], "cust_params=p%3D1"),
        ("cust_params", ["1"], "cust_params=p%3D1"),
        ("cust_params=a%3D1%26", ["1"], "cust_params=a%3D1%26p%3D1"),
        ("cust_params=p%3D", ["1", "2"], "cust_params=p%3D1%2C2"),
        ("cust_params=p", ["1", "2"], "cust_params=p%3D1%2C2"),
        ("cust_params=p%3d0", ["1"], "cust_params=p%3d0%2C1"),  # lower-case escapes decoded too
        ("cust_params=p=0,2", ["1", "0", "2"], "cust_params=p=0,2%2C1"),  # unencoded separators
        ("cust_params=p%3D0%26p%3D9", ["9", "1"], "cust_params=p%3D0%26p%3D9%2C1"),
    ],
)
def test_merge_with_unusual_existing_cust_params(
    existing: str, values: list[str], expected: str
) -> None:
    url = f"https://h/gampad/ads?a=1&{existing}&z=2"
    assert gam.apply_url(url, {"p": values}) == f"https://h/gampad/ads?a=1&{expected}&z=2"


def test_only_the_first_cust_params_is_rewritten() -> None:
    url = "https://h/gampad/ads?cust_params=a%3D1&x=cust_params&cust_params=b%3D2"
    assert gam.apply_url(url, {"p": ["1"]}) == (
        "https://h/gampad/ads?cust_params=a%3D1%26p%3D1&x=cust_params&cust_params=b%3D2"
    )


def test_invalid_characters_removed_and_bad_values_or_keys_dropped() -> None:
    url = "https://h/gampad/ads?sz=1x1"
    out = gam.apply_url(
        url,
        {
            "permutive": [
                "a b",  # whitespace removed
                "x=y&z,w",  # separators removed
                "(ok)!",  # other forbidden characters removed
                "'\"+#*~;^<>[]",  # nothing left: dropped
                "a" * 41,  # too long: dropped, not truncated
                "b" * 40,
                "ab",  # duplicate after cleaning
                "caf\u00e9/x",  # other characters are percent-encoded
            ],
            "bad key!": ["1"],
            "k" * 21: ["1"],
            "k" * 20: ["2"],
        },
    )
    assert out == (
        url + "&cust_params=permutive%3Dab%2Cxyzw%2Cok%2C" + "b" * 40 + "%2Ccaf%C3%A9%2Fx"
        "%26" + "k" * 20 + "%3D2"
    )


def test_length_budget_drops_our_values_from_the_end() -> None:
    url = "https://h/gampad/ads?sz=1x1&cust_params=a%3D1"
    full = url + "%26p%3D1%2C2%26q%3D3%2C4"
    kvs = {"p": ["1", "2"], "q": ["3", "4"]}
    assert GamAdapter(GamSettings(max_url_length=len(full))).apply_url(url, kvs) == full
    assert (
        GamAdapter(GamSettings(max_url_length=len(full) - 1)).apply_url(url, kvs)
        == url + "%26p%3D1%2C2%26q%3D3"
    )
    # "q" loses its last value, then its first together with the "%26q%3D" it needed
    assert (
        GamAdapter(GamSettings(max_url_length=len(url + "%26p%3D1%2C2%26q%3D3") - 1)).apply_url(
            url, kvs
        )
        == url + "%26p%3D1%2C2"
    )
    assert (
        GamAdapter(GamSettings(max_url_length=len(url) + 8)).apply_url(url, kvs) == url + "%26p%3D1"
    )
    assert GamAdapter(GamSettings(max_url_length=len(url) + 7)).apply_url(url, kvs) == url


def test_length_budget_counts_the_new_parameter() -> None:
    url = "https://h/gampad/ads?sz=1x1"
    added = "&cust_params=p%3D1"
    assert (
        GamAdapter(GamSettings(max_url_length=len(url + added))).apply_url(url, {"p": ["1"]})
        == url + added
    )
    assert (
        GamAdapter(GamSettings(max_url_length=len(url + added) - 1)).apply_url(url, {"p": ["1"]})
        == url
    )


def test_url_already_over_budget_is_never_cut() -> None:
    url = "https://h/gampad/ads?cust_params=a%3D" + "x" * 100
    assert GamAdapter(GamSettings(max_url_length=50)).apply_url(url, {"p": ["1"]}) == url


def test_parse_app_request() -> None:
    assert gam.parse_url(APP) == Context(
        identity=Identity(
            aliases=(
                Alias(tag="ppid", id="user-abc-12345678901234567890", priority=0),
                Alias(tag="idfa", id=IDFA, priority=1),
            )
        ),
        consent=ConsentSignals(gdpr=True, tc_string=TC, us_privacy="1YNN", gpp_sid=(2, 7)),
        content=Content(
            url="https://www.example.com/videos/match-highlights",
            properties={"video_id": "vid_456", "cms_id": "2494"},
        ),
        view_id="17",
    )


def test_parse_sample_has_no_signals() -> None:
    assert gam.parse_url(SAMPLE) == Context()


@pytest.mark.parametrize(
    ("params", "alias"),
    [
        ("rdid=abc-1&idtype=adid", Alias(tag="aaid", id="abc-1")),
        ("rdid=abc-1&idtype=rida", Alias(tag="rida", id="abc-1")),
        ("rdid=abc-1&idtype=tvOS", Alias(tag="idfa", id="abc-1")),
        ("rdid=abc-1&idtype=afai", Alias(tag="afai", id="abc-1")),
        ("rdid=abc-1&idtype=newtype", Alias(tag="newtype", id="abc-1")),
        ("ppid=p1", Alias(tag="ppid", id="p1")),
        ("ppid=p1&rdid=abc-1&idtype=idfa&is_lat=1", Alias(tag="ppid", id="p1")),
        (
            "ppid=p1&rdid=00000000-0000-0000-0000-000000000000&idtype=idfa",
            Alias(tag="ppid", id="p1"),
        ),
    ],
)
def test_parse_single_identity(params: str, alias: Alias) -> None:
    assert gam.parse_url(f"https://h/gampad/ads?{params}").identity == Identity(alias=alias)


@pytest.mark.parametrize(
    "params",
    ["rdid=abc-1", "rdid=abc-1&idtype=", "rdid=abc-1&idtype=bad%20type", "rdid=&idtype=idfa"],
)
def test_parse_device_id_without_usable_type_is_ignored(params: str) -> None:
    assert gam.parse_url(f"https://h/gampad/ads?{params}").identity is None


@pytest.mark.parametrize(
    ("flag", "field"),
    [
        ("tfcd", "child_directed"),
        ("tfua", "child_directed"),
        ("rdp", "restricted"),
        ("npa", "restricted"),
        ("ltd", "restricted"),
    ],
)
def test_child_and_restricting_flags(flag: str, field: str) -> None:
    url = f"https://h/gampad/ads?gdpr=1&gdpr_consent={TC}&{flag}=1"
    expected = ConsentSignals(gdpr=True, tc_string=TC, **{field: True})
    assert gam.parse_url(url).consent == expected
    assert getattr(gam.parse_url(url.replace(f"{flag}=1", f"{flag}=0")).consent, field) is False
    assert getattr(gam.parse_url(url.replace(f"&{flag}=1", "")).consent, field) is None
    # A flag set in any copy holds: the most restrictive wins.
    assert getattr(gam.parse_url(f"{url}&{flag}=0").consent, field) is True


@pytest.mark.parametrize(
    ("value", "expected"),
    # anything else fails closed: "GDPR applies" (`gdpr=2` must not pass for "no signal")
    [("0", False), ("1", True), ("true", True), ("false", False), ("x", True), ("2", True)],
)
def test_gdpr_flag(value: str, expected: bool | None) -> None:
    assert gam.parse_url(f"https://h/gampad/ads?gdpr={value}").consent.gdpr is expected


def test_parse_gpp_and_content_url_fallback() -> None:
    ctx = gam.parse_url(
        "https://h/gampad/ads?gpp=DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
        "&gpp_sid=2%2C6&url=https%3A%2F%2Fpub.example%2Fpage%3Fa%3D1"
    )
    assert ctx.consent.gpp == "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
    assert ctx.consent.gpp_sid == (2, 6)
    assert ctx.content.url == "https://pub.example/page?a=1"


def test_parse_double_encoded_description_url() -> None:
    url = "https://h/gampad/ads?description_url=https%253A%252F%252Fpub.example%252Fv%253Fa%253D1"
    assert gam.parse_url(url).content.url == "https://pub.example/v?a=1"


def test_parse_tolerates_malformed_escapes() -> None:
    ctx = gam.parse_url("https://h/gampad/ads?description_url=a%zzb%ff%&ppid=%E2%82%AC")
    assert ctx.content.url == "a%zzb\ufffd%"
    assert ctx.identity == Identity(alias=Alias(tag="ppid", id="\u20ac"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x", True),
        ("https://securepubads.g.doubleclick.net/gampad/live/ads?iu=/1/x", True),
        ("http://proxy.local/upstream/gampad/ads", True),
        ("/gampad/ads?sz=1x1", True),
        ("https://pubads.g.doubleclick.net/gampad/adsx?iu=1", False),
        ("https://pubads.g.doubleclick.net/other?u=/gampad/ads", False),
        ("https://pubads.g.doubleclick.net/#/gampad/ads", False),
        ("https://gampad/ads", False),
        ("", False),
    ],
)
def test_recognises(url: str, expected: bool) -> None:
    assert (reason(gam, AdRequest(url)) is None) is expected


def test_other_urls_are_left_alone() -> None:
    url = "https://5fd74.v.fwmrm.net/ad/g/1?nw=1;cust_params=x"
    assert gam.apply_url(url, {"p": ["1"]}) == url
    assert gam.parse_url(url + "&ppid=x") == Context()


def test_defaults_and_overrides() -> None:
    assert gam.name == "gam"
    assert gam.activation_platforms == ("dfp", "gam", "target_dfp")
    assert GamAdapter(GamSettings(activation_platforms=("custom",))).activation_platforms == (
        "custom",
    )


def test_a_shared_adapter_answers_each_request_afresh() -> None:
    """One adapter serves every request: nothing one request read or wrote leaks into the
    next's answer, and the length budget applies per URL."""
    adapter = GamAdapter(GamSettings(max_url_length=len(APP) + 20))
    first, again = adapter.parse_url(APP), adapter.parse_url(APP)
    assert first == again == gam.parse_url(APP)
    first.content.properties["video_id"] = "changed"
    assert adapter.parse_url(APP).content.properties["video_id"] == "vid_456"

    kvs = {"permutive": ["456", "789"]}
    one = applied(adapter, AdRequest(APP), kvs)
    two = applied(adapter, AdRequest(APP), kvs)
    assert one == two and one.written == {"permutive": ["456", "789"]}
    one.written["permutive"].append("mutated")
    assert applied(adapter, AdRequest(APP), kvs).written == {"permutive": ["456", "789"]}
    # The same cust_params and key-values in a longer URL: over the budget, values go.
    longer = APP.replace("&vid=vid_456", "&vid=vid_456&pad=xxxxx")
    assert adapter.apply_url(longer, kvs) == longer.replace("%2C123%26", "%2C123%2C456%26")
    assert adapter.apply_url(APP, kvs) == APP.replace("%2C123%26", "%2C123%2C456%2C789%26")


_TEXT = st.text(alphabet="ab=&,%2F3D -_()é", max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    cust=_TEXT,
    kvs=st.dictionaries(
        st.sampled_from(["permutive", "prmtvctx", "a", "bad key"]),
        st.lists(_TEXT, max_size=4),
        max_size=3,
    ),
    budget=st.integers(min_value=60, max_value=200),
)
def test_a_remembered_write_plan_writes_what_a_fresh_one_does(
    cust: str, kvs: dict[str, list[str]], budget: int
) -> None:
    """The adapter remembers the write plan of a `cust_params` value and key-values it has
    seen: the second write of the same pair (a hit) is the first's, byte for byte, and so is
    what a new adapter (no plan remembered) writes; what it drops is told every time."""
    url = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x&cust_params=" + cust
    told: list[str] = []
    remembering = GamAdapter(GamSettings(max_url_length=budget))
    remembering.on_skip = lambda _platform, why: told.append(why)
    first = applied(remembering, AdRequest(url), kvs)
    once = list(told)
    second = applied(remembering, AdRequest(url), kvs)
    fresh = applied(GamAdapter(GamSettings(max_url_length=budget)), AdRequest(url), kvs)
    assert second.request.url == first.request.url == fresh.request.url
    assert second.written == first.written == fresh.written
    assert told == once + once
