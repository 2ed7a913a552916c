"""An ad request is read once: one adapter `read` per enrichment, whichever way it comes in
(the library, the sidecar's proxy, a client hook).

Each adapter's own reading is counted where it happens: the body's JSON decodes
(`adapters.openrtb.decode_body`, and `with_every_copy` for bodies that need it), the query
splits into parameters (`first_params`, in each URL adapter's module) and the JSON objects whose
spans are scanned (`adapters.openrtb_write.object_at`). An enrichment must cost exactly what
one `adapter.read` of the same request costs: detection does not read it again, writing works
from what was read, and nothing the enricher does around it reads it a second time.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import yarl

import adapters.adswizz
import adapters.freewheel
import adapters.gam
import adapters.openrtb
import adapters.openrtb_write
import adapters.query
from adapters.base import Example, Parsed
from adapters.registry import adapter_by_name, adapter_class, build_adapters
from plugin import Config, ConsentSignals, Context, Enricher
from plugin.config import UpstreamConfig, adapter_settings
from plugin.httpx import CohortkvTransport, ad_context
from plugin.request import AdRequest
from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive

EXAMPLE = Example(
    device_tag="idfa",
    device_id="6D92078A-8246-4BA4-AE5B-76104861E7DC",
    tc_string="not-a-tc-string",
    content_url="https://example.com/v/1",
    section="sport",
    video_id="v1",
    duration_s=600,
    slot="preroll",
    position_s=0,
    correlator=7,
)
GRANTED = Context(consent=ConsentSignals(override=True))

Counts = collections.Counter[str]


def _counting(counts: Counts, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return real(*args, **kwargs)

    return counted


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """What the adapters decode and split, by what it is, from here on."""
    counts: Counts = collections.Counter()
    for module in (adapters.gam, adapters.freewheel, adapters.adswizz, adapters.query):
        name = f"query splits ({module.__name__})"
        monkeypatch.setattr(module, "first_params", _counting(counts, name, module.first_params))
    rtb = adapters.openrtb
    monkeypatch.setattr(rtb, "decode_body", _counting(counts, "body decodes", rtb.decode_body))
    every = _counting(counts, "body decodes", rtb.with_every_copy)
    monkeypatch.setattr(rtb, "with_every_copy", every)
    write = adapters.openrtb_write
    spans = _counting(counts, "spans", write.object_at)
    monkeypatch.setattr(write, "object_at", spans)
    yield counts


def one_read(config: Config, platform: str, request: AdRequest, counts: Counts) -> Counts:
    """What one `read` of `request` by a fresh adapter of `platform` decodes and splits."""
    counts.clear()
    adapter = adapter_by_name(build_adapters(adapter_settings(config)), platform)
    assert isinstance(adapter.read(request), Parsed)
    once = collections.Counter(counts)
    counts.clear()
    assert once  # the request is read at all
    return once


def example(platform: str) -> AdRequest:
    request = adapter_class(platform).example(EXAMPLE)
    assert isinstance(request, AdRequest)
    return request


# (platform, whether it is auto-detected, [adapters] settings, what it must write)
CASES = [
    ("gam", True, {}, "permutive"),
    ("freewheel", True, {}, "permutive"),
    ("adswizz", True, {}, None),
    ("query", False, {"query": {"activation_platforms": ["dfp"]}}, "permutive"),
    ("openrtb", True, {"openrtb": {"activation_platforms": ["dfp"]}}, "permutive"),
    ("openrtb", True, {}, None),  # no activation names: a bid request that gets nothing
]


def assert_read_once_and_sent(
    reads: Counts,
    once: Counts,
    platform: str,
    ads: FakeAdServer,
    request: AdRequest,
    key: str | None,
) -> None:
    """The request was read exactly as often as one read of it reads (an OpenRTB body decoded
    once), and the ad server got it as sent (`key` None) or with our `key` written."""
    assert reads == once
    if platform == "openrtb":
        assert reads["body decodes"] == 1
    sent = ads.last
    if key is None:
        target = yarl.URL(request.url, encoded=True)
        assert (sent.query, sent.body) == (target.raw_query_string, request.body)
    else:
        assert key in sent.query + sent.body.decode()


def config(fake: FakePermutive, settings: dict[str, Any]) -> Config:
    return Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url, adapters=settings)


@pytest.mark.parametrize(("platform", "auto", "settings", "key"), CASES)
async def test_the_enricher_reads_a_request_once(
    fake: FakePermutive,
    reads: Counts,
    platform: str,
    auto: bool,
    settings: dict[str, Any],
    key: str | None,
) -> None:
    cfg = config(fake, settings)
    request = example(platform)
    once = one_read(cfg, platform, request, reads)
    async with Enricher(cfg) as e:
        r = await e.enrich(request, GRANTED, platform=None if auto else platform)
    assert r.platform == platform and r.unrecognised is None
    assert (key in r.keyvalues) if key else (r.keyvalues == {})
    assert reads == once
    if platform == "openrtb":
        assert reads["body decodes"] == 1


@pytest.mark.parametrize(("platform", "auto", "settings", "key"), CASES)
async def test_the_sidecar_reads_a_request_once(
    fake: FakePermutive,
    ads: FakeAdServer,
    reads: Counts,
    platform: str,
    auto: bool,
    settings: dict[str, Any],
    key: str | None,
) -> None:
    """Through `/proxy/<upstream>/...` to the fake ad server: the upstream names no platform
    (auto-detected) or the one that cannot be detected."""
    upstream = UpstreamConfig(ads.url, None if auto else platform)
    cfg = msgspec.structs.replace(
        sidecar_config(fake, ads, upstreams={"ads": upstream}), adapters=settings
    )
    request = example(platform)
    target = yarl.URL(request.url, encoded=True)
    async with running(cfg) as side:
        once = one_read(side.sidecar.enricher.config, platform, request, reads)
        base = str(side.client.make_url("/proxy/ads")).rstrip("/")
        headers = {**dict(request.headers), "X-Cohortkv-Consent": "granted"}
        async with side.client.session.request(
            request.method,
            yarl.URL(base + target.raw_path_qs, encoded=True),
            headers=headers,
            data=request.body or None,
        ) as resp:
            assert resp.status == 200
    assert_read_once_and_sent(reads, once, platform, ads, request, key)


@pytest.mark.parametrize(("platform", "auto", "settings", "key"), CASES)
async def test_the_httpx_transport_reads_a_request_once(
    fake: FakePermutive,
    ads: FakeAdServer,
    reads: Counts,
    platform: str,
    auto: bool,
    settings: dict[str, Any],
    key: str | None,
) -> None:
    """A client hook picks the requests to enrich by reading them: that read is the one the
    enrichment uses (the aiohttp middleware shares the hook's code, `plugin.outgoing`)."""
    cfg = config(fake, settings)
    request = example(platform)
    target = yarl.URL(request.url, encoded=True)
    url = ads.url + target.raw_path_qs
    once = one_read(cfg, platform, msgspec.structs.replace(request, url=url), reads)
    async with (
        Enricher(cfg) as e,
        httpx.AsyncClient(transport=CohortkvTransport(e, None if auto else platform)) as client,
    ):
        with ad_context(GRANTED):
            resp = await client.request(
                request.method, url, headers=dict(request.headers), content=request.body
            )
    assert resp.status_code == 200
    assert_read_once_and_sent(reads, once, platform, ads, request, key)


@pytest.mark.parametrize(
    ("platform", "before", "after"),
    [
        ("gam", "&correlator=", "%26permutive%3Dviewer1&tfcd=1&correlator="),
        ("freewheel", "&section=sport;", "&section=sport&permutive=viewer1&_fw_coppa=1;"),
        ("adswizz", "&cb=", "&aw_0_1st.permutive=viewer1&aw_0_req.coppa=1&cb="),
    ],
)
async def test_removing_a_viewers_values_reads_nothing_again(
    fake: FakePermutive, reads: Counts, platform: str, before: str, after: str
) -> None:
    """A denied request loses the values a viewer put under the behavioral key: they are
    removed from what `read` split, and `apply` writes into what is left."""
    cfg = config(fake, {})
    plain = example(platform)
    assert before in plain.url
    request = msgspec.structs.replace(plain, url=plain.url.replace(before, after, 1))
    once = one_read(cfg, platform, request, reads)
    async with Enricher(cfg) as e:
        r = await e.enrich(request, GRANTED)
    assert (r.platform, r.consent.allowed) == (platform, False)
    assert "viewer1" not in r.url and r.url != request.url
    assert reads == once
