"""The fast paths that read the usual ad request (no name repeated, every name in lowercase
ASCII) read exactly what the general paths read, on queries made to leave that usual case in
every way: names in other letter cases or percent-encoded, repeated parameters, empty
segments, several copies of `cust_params` (in any case) carrying privacy parameters of their
own.

The oracles are the general paths themselves: `_every_params` (the query split without the
one-loop shortcut), `SignalReader(..., general=True)` (every copy in every case, no shortcut
for absent names), and GAM's reading of a URL redone from those, without its kept
`cust_params`.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adapters.gam import GamAdapter
from adapters.params import (
    Params,
    SignalReader,
    _every_params,
    content_url,
    decode,
    device_id,
    device_tag,
    first_params,
    identity_of,
    mapped_properties,
    text,
)
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias

# ---------------------------------------------------------------------------------------------
# strategies

PRIVACY = ["gdpr", "gdpr_consent", "us_privacy", "gpp", "gpp_sid", "tfcd", "tfua", "rdp", "npa"]
PRIVACY += ["ltd", "is_lat", "coppa", "lmt"]
OTHER = ["ppid", "rdid", "idtype", "vid", "cmsid", "description_url", "url", "scor", "iu"]
OTHER += ["cust_params.title", "title", "categories", "sect", ""]
VALUES = ["0", "1", "true", "false", "TRUE", "yes", "", " 1", "1+", "%31", "1%00", "2", "-1"]
VALUES += ["7,8", "1YNN", "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", "idfa", "x%2Fy"]
VALUES += ["0000-00", "AB12-CD", "https%3A%2F%2Fv.example%2F1", "https%253A%252F%252Fv%252F"]


def _spell(name: str, how: int) -> str:
    """`name` as a request may spell it: as is, in upper or title case, with one letter
    upper-cased, percent-encoded in part, with a `+` or a Unicode look-alike."""
    if not name or how == 0:
        return name
    if how == 1:
        return name.upper()
    if how == 2:
        return name.title()
    if how == 3:
        return name[:-1] + name[-1].upper()
    if how == 4:
        return f"%{ord(name[0]):02X}{name[1:]}"
    if how == 5:
        return name + "+"
    return name.replace("s", "\u017f")  # LATIN SMALL LETTER LONG S: casefolds to "s"


names = st.tuples(st.sampled_from(PRIVACY + OTHER), st.sampled_from(range(7))).map(
    lambda t: _spell(*t)
)
plain_names = st.sampled_from(PRIVACY + OTHER)
values = st.sampled_from(VALUES)


def _segments(name: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(name, values).map(lambda t: f"{t[0]}={t[1]}"),
        name,
        st.just(""),
    )


def _query(name: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(_segments(name), max_size=max_size).map("&".join)


def _encoded(query: str) -> str:
    """A query as a `cust_params` value carries it: `=` and `&` encoded once."""
    return query.replace("%", "%25").replace("=", "%3D").replace("&", "%26")


cust = st.tuples(
    st.sampled_from(["cust_params", "cust_params", "CUST_PARAMS", "Cust_Params"]),
    st.one_of(_query(names, 4), _query(plain_names, 4)),
).map(lambda t: f"{t[0]}={_encoded(t[1])}")
# Mostly the usual query (plain names), often with one `cust_params`, sometimes anything.
segment = st.one_of(_segments(plain_names), _segments(plain_names), _segments(names), cust)
queries = st.lists(segment, max_size=10).map("&".join)
# Several copies of `cust_params` among the usual segments.
cust_queries = st.tuples(
    st.lists(_segments(plain_names), max_size=4), st.lists(cust, min_size=2, max_size=3)
).map(lambda t: "&".join(t[0] + t[1]))

GAM_SIGNALS = {
    "gdpr": ("gdpr",),
    "tc_string": ("gdpr_consent",),
    "us_privacy": ("us_privacy",),
    "gpp": ("gpp",),
    "gpp_sid": ("gpp_sid",),
    "child_directed": ("tfcd", "tfua"),
    "restricted": ("rdp", "npa", "ltd"),
}
# Another platform's names: several per signal, some not lowercase (AdsWizz's style).
MIXED_SIGNALS = {
    "gdpr": ("gdpr", "aw_0_req.Gdpr"),
    "tc_string": ("gdpr_consent", "GDPR_CONSENT"),
    "us_privacy": ("us_privacy",),
    "gpp": ("gpp", "coppa"),
    "gpp_sid": ("gpp_sid",),
    "child_directed": ("coppa",),
}


# ---------------------------------------------------------------------------------------------
# the query split


def same_params(a: Params, b: Params) -> bool:
    return (
        list(a.items()) == list(b.items())
        and a.repeats == b.repeats
        and a.lowercase() == b.lowercase()
        and all(a.other_cases(n) == b.other_cases(n) for n in [*PRIVACY, "cust_params"])
    )


@given(queries)
def test_first_params_reads_what_the_general_split_reads(query: str) -> None:
    assert same_params(first_params(query), _every_params(query.split("&")))


@given(st.lists(_segments(names), max_size=6).map(";".join))
def test_first_params_on_another_separator(query: str) -> None:
    assert same_params(first_params(query, ";"), _every_params(query.split(";")))


# ---------------------------------------------------------------------------------------------
# the signals


def _sets(query: str) -> tuple[Params, ...]:
    """The query's parameters and those inside every copy of its `cust_params`."""
    p = first_params(query)
    copies = (*p.every("cust_params"), *p.other_cases("cust_params"))
    if not copies:
        return (p,)
    return p, first_params("&".join(decode(raw) for raw in copies))


def _read(reader: SignalReader, signals: dict[str, tuple[str, ...]]) -> tuple[object, ...]:
    return (
        reader.any_set("is_lat", "lmt"),
        reader.text("ppid"),
        reader.flag("gdpr"),
        reader.same("rdid"),
        reader.signals(**signals),
        tuple(reader.conflicts),
    )


@given(st.one_of(queries, cust_queries), st.sampled_from([GAM_SIGNALS, MIXED_SIGNALS]))
def test_the_signals_read_as_the_general_path_reads_them(
    query: str, signals: dict[str, tuple[str, ...]]
) -> None:
    sets = _sets(query)
    assert _read(SignalReader(*sets), signals) == _read(SignalReader(*sets, general=True), signals)


@given(queries, queries)
def test_the_signals_of_several_sets(first: str, second: str) -> None:
    sets = (first_params(first), first_params(second), first_params(first))
    fast = SignalReader(*sets).signals(**GAM_SIGNALS)
    assert fast == SignalReader(*sets, general=True).signals(**GAM_SIGNALS)


# ---------------------------------------------------------------------------------------------
# GAM, the whole reading

GAM = GamAdapter()
"""One adapter for every example: its kept `cust_params` are reused across examples."""


def general_gam(adapter: GamAdapter, query: str) -> Context:
    """GAM's reading of `query`, by the general paths only (as before the fast paths)."""
    p = _every_params(query.split("&"))
    every_raw = (*p.every("cust_params"), *p.other_cases("cust_params"))

    def params(raws: tuple[str, ...]) -> Params:
        joined = "&".join(decode(raw) for raw in raws)
        return _every_params(joined.split("&")) if raws else Params()

    every_cust = params(every_raw)
    ids = SignalReader(p, general=True)
    aliases = []
    ppid = device_id(ids.same("ppid"))
    if ppid is not None:
        aliases.append(Alias(tag="ppid", id=ppid))
    rdid = device_id(ids.same("rdid"))
    tag = device_tag(text(ids.same("idtype")))
    lat = SignalReader(p, every_cust, general=True).any_set("is_lat") is True
    if rdid is not None and tag is not None and not lat:
        aliases.append(Alias(tag=tag, id=rdid))
    props = mapped_properties(adapter.properties, p)
    first = (p["cust_params"],) if "cust_params" in p else ()
    for name, value in mapped_properties(adapter.properties, params(first), "cust_params.").items():
        props.setdefault(name, value)
    url = content_url(p.get("description_url")) or content_url(p.get("url"))
    return Context(
        identity=identity_of(aliases),
        consent=SignalReader(p, every_cust, general=True).signals(**GAM_SIGNALS),
        content=Content(url=url, properties=props),
        view_id=text(p.get("scor")),
        limit_ad_tracking=lat,
    )


@given(st.one_of(queries, cust_queries))
def test_gam_reads_a_url_as_the_general_paths_do(query: str) -> None:
    url = "https://pubads.g.doubleclick.net/gampad/ads?" + query
    expected = general_gam(GAM, query)
    assert GAM.parse_url(url) == expected
    assert GAM.parse_url(url) == expected  # its `cust_params` now kept
    assert GamAdapter().parse_url(url) == expected


def test_the_usual_request_takes_the_fast_paths() -> None:
    """The realistic tag is plain: no name repeated, every name lowercase; a copy of a flag
    in another case or in `cust_params` is still read."""
    query = (
        "iu=/1/ctv&sz=640x480&cust_params=sect%3Dsport%26ctv%3D1&correlator=3"
        "&description_url=https%3A%2F%2Fv.example.com%2F1&vid=v1&rdid=AB12-CD&idtype=idfa"
        "&is_lat=0&gdpr=0"
    )
    p = first_params(query)
    assert not p.repeats and p.lowercase()
    ctx = GAM.parse_url("https://h/gampad/ads?" + query)
    assert ctx.consent == ConsentSignals(gdpr=False)
    assert ctx.identity is not None and ctx.content.url == "https://v.example.com/1"
    assert GAM.parse_url("https://h/gampad/ads?" + query + "&RDP=1").consent.restricted
    denied = query.replace("ctv%3D1", "ctv%3D1%26rdp%3D1")
    assert GAM.parse_url("https://h/gampad/ads?" + denied).consent.restricted
    conflict = GAM.parse_url("https://h/gampad/ads?" + query + "&GDPR=1").consent
    assert conflict.gdpr is None and conflict.conflicts == ("gdpr",)
