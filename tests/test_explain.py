"""The explain page's JSON side, over real HTTP on loopback: what a person pasting an ad request
is told, who may ask, and that explaining sends nothing to the ad server, asks no API unless told
to, and leaves the state a later real request sees as it was."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from plugin.config import Config, ConfigError, load_config
from plugin.dryrun import DryRun
from plugin.dryrun_text import REASON_TEXT
from plugin.enricher import Enricher
from plugin.identity import Alias, Identity
from plugin.observe.decisions import DecisionLog
from plugin.result import REASONS
from plugin.serve.app import make_app
from tests.helpers.explain import (
    BID_BODY,
    CONTENT,
    GAM_PROXY_PATH,
    GAM_QUERY,
    GAM_URL,
    IDFA,
    OPENRTB_URL,
    explain,
    get_json,
)
from tests.helpers.fake_adserver import FakeAdServer, Running, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive
from tests.helpers.waiting import until


def explain_config(fake: FakePermutive, ads: FakeAdServer, **serve: Any) -> Config:
    cfg = sidecar_config(fake, ads, explain=True, **serve)
    return cfg.with_overrides(adapters={"openrtb": {"activation_platforms": ["dfp"]}})


@pytest.fixture
async def ex(fake: FakePermutive, ads: FakeAdServer) -> AsyncIterator[Running]:
    async with running(explain_config(fake, ads)) as r:
        yield r


async def real_gam(r: Running, query: str = GAM_QUERY) -> None:
    resp = await r.client.get(f"/proxy/gam/gampad/ads?{query}")
    assert resp.status == 200


# -- who may ask ------------------------------------------------------------------------------


async def test_off_by_default_every_route_is_a_json_404(side: Running) -> None:
    for method, path in (
        ("GET", "/explain"),
        ("POST", "/explain/api"),
        ("GET", "/explain/decisions"),
        ("GET", "/explain/meta"),
    ):
        resp = await side.client.request(method, path)
        assert resp.status == 404, path
        assert (await resp.json())["error"] == "not found"
    assert side.sidecar.enricher.accounting.decisions is None  # nothing kept when off


async def test_clients_outside_explain_from_get_a_json_403(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = explain_config(fake, ads, explain_from=("192.0.2.0/24",))
    async with running(cfg) as r:
        for path in ("/explain", "/explain/decisions", "/explain/meta"):
            # X-Forwarded-For is the viewer's to write: it never grants anything.
            resp = await r.client.get(path, headers={"X-Forwarded-For": "192.0.2.7"})
            assert resp.status == 403
            doc = await resp.json()
            assert doc["remote"] == "127.0.0.1"
            assert "serve.explain_from" in doc["expected"]
        status, doc = await explain(r, url=GAM_URL)
        assert status == 403
    assert fake.calls == {} and ads.requests == []


async def test_explain_from_lists_networks_beside_loopback(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    cfg = explain_config(fake, ads, explain_from=("10.0.0.0/8", "127.0.0.1/32"))
    async with running(cfg) as r:
        assert (await r.client.get("/explain")).status == 200
        ex = r.sidecar.explain
        assert ex is not None
        assert ex.allowed("10.20.30.40") and ex.allowed("::ffff:10.1.2.3")
        assert not ex.allowed("11.0.0.1") and not ex.allowed("") and not ex.allowed("::1")


async def test_a_loopback_client_must_name_a_loopback_host(ex: Running) -> None:
    # A page of evil.example re-pointed at 127.0.0.1 (DNS rebinding) reads nothing.
    for host in ("evil.example:8080", "127.0.0.1.nip.io", "10.0.0.1"):
        resp = await ex.client.get("/explain/decisions", headers={"Host": host})
        assert resp.status == 403, host
        assert (await resp.json())["field"] == "Host"
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "cohortkv.localhost"):
        resp = await ex.client.get("/explain/decisions", headers={"Host": host})
        assert resp.status == 200, host


def test_explain_from_mistakes_name_the_setting(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('sandbox = true\n[serve]\nexplain_from = ["10.0.0.1/8"]\n')
    with pytest.raises(ConfigError, match=r"serve\.explain_from: expected networks in CIDR"):
        load_config(toml, env={})
    env = {"COHORTKV_SANDBOX": "true", "COHORTKV_SERVE__EXPLAIN_FROM": '["localhost"]'}
    with pytest.raises(ConfigError) as e:
        load_config(None, env=env)
    assert str(e.value).startswith("environment COHORTKV_SERVE__EXPLAIN_FROM: serve.explain_from")
    assert "'localhost' at [0]" in str(e.value)
    ok = load_config(None, env={**env, "COHORTKV_SERVE__EXPLAIN_FROM": '["fd00::/8"]'})
    assert ok.serve.explain_from == ("fd00::/8",)
    with pytest.raises(ConfigError, match=r"serve\.explain_workspace"):
        make_app(
            Config(sandbox=True).with_overrides(
                serve=ok.serve.__class__(explain=True, explain_workspace=str(tmp_path / "no"))
            ),
            registry=CollectorRegistry(),
        )


async def test_the_page_is_one_self_contained_document_under_a_strict_csp(ex: Running) -> None:
    resp = await ex.client.get("/explain")
    assert resp.status == 200 and resp.content_type == "text/html"
    page = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "require-trusted-types-for 'script'" in csp and "unsafe-inline" not in csp
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in csp
    # No other asset, and no way for data to become markup.
    assert not re.search(r"<(link|img|iframe)\b|\s(src|href)=", page)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_only_same_origin_json_posts_are_answered(ex: Running, fake: FakePermutive) -> None:
    doc = json.dumps({"url": GAM_URL, "run": True})
    resp = await ex.client.post("/explain/api", data=doc, headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        resp = await ex.client.post(
            "/explain/api", data=doc, headers={"Content-Type": "application/json", **headers}
        )
        assert resp.status == 403, headers
    assert fake.calls == {}


# -- what it says ------------------------------------------------------------------------------


async def test_a_dry_run_reads_the_request_and_asks_nothing(
    ex: Running, fake: FakePermutive, ads: FakeAdServer
) -> None:
    status, x = await explain(ex, url="http://cohortkv.example.com" + GAM_PROXY_PATH)
    assert status == 200, x
    assert x["mode"] == "dry_run" and x["platform"] == "gam"
    assert x["via"] == {"upstream": "gam", "base": ads.url}
    read = x["read"]
    assert read["identity"] == {"alias": {"tag": "idfa", "id": IDFA}}
    assert x["consent"] == {"allowed": True, "reason": "usp_not_opted_out"}
    assert read["consent_signals"] == {"us_privacy": "1YNN"}
    assert read["content"]["url"] == CONTENT
    assert read["content"]["properties"] == {"categories": ["sports", "football"]}
    assert read["session"]["origin"] == "ssai" and read["view"]["first"] is True
    ccs, ctx = x["asks"]
    assert ccs["api"] == "ccs" and ccs["would_call"] and not ccs["called"]
    (event,) = ccs["request"]["events"]
    assert event["name"] == "Videoview" and event["view_id"] == read["view"]["id"]
    assert ccs["request"]["alias"] == {"tag": "idfa", "id": IDFA}
    assert ctx["would_call"] and ctx["request"]["url"] == CONTENT
    assert "user" not in json.dumps(ctx["request"]) and IDFA not in json.dumps(ctx["request"])
    assert x["behavioral"]["source"] == x["contextual"]["source"] == "not_asked"
    assert x["summary"][0] == "no cohorts written"
    assert any("press 'Run against the APIs'" in line for line in x["summary"])
    assert "cohortkv_sid" not in x["request"]["url"]  # reserved parameters read, then removed
    assert fake.calls == {} and ads.requests == []
    # The next real ad request of this view is still its first: it sends the play event.
    enricher = ex.sidecar.enricher
    assert enricher.sessions.view_count == 0 and len(enricher.behavioral.cache) == 0
    await real_gam(ex, GAM_QUERY + "&cohortkv_sid=ssai-42")
    assert fake.calls == {"ccs": 1, "contextual": 1}
    sent = fake.bodies["ccs"][0]["body"]["events"][0]
    assert sent["view_id"] == read["view"]["id"]
    # The explain page shows the bodies the ad request sends: one builder for both.
    assert sent["properties"] == event["properties"] and "client" in sent["properties"]
    assert fake.bodies["contextual"][0]["body"] == ctx["request"]
    assert read["content"]["key"] == CONTENT


async def test_a_run_asks_the_contextual_api_only_and_caches_nothing(
    ex: Running, fake: FakePermutive, ads: FakeAdServer
) -> None:
    status, x = await explain(ex, url=GAM_URL, run=True)
    assert status == 200, x
    assert fake.calls == {"contextual": 1} and ads.requests == []
    ccs, ctx = x["asks"]
    assert ctx["called"] and ctx["outcome"] == "ok"
    assert ccs["would_call"] and not ccs["called"] and "real play event" in ccs["note"]
    assert x["contextual"]["source"] == "live" and x["contextual"]["reason"] == "live"
    rows = {r["code"]: r for r in x["contextual"]["cohorts"]}
    assert rows["99999"]["activated"] and rows["99999"]["written"]
    assert not rows["88888"]["activated"] and not rows["88888"]["written"]
    assert x["keyvalues"] == {"permutive": ["99999"]}
    request = x["request"]
    assert request["kind"] == "url"
    (changed,) = request["changes"]
    assert changed == {
        "name": "cust_params",
        "before": "section=sport&categories=sports,football",
        "after": "section=sport&categories=sports,football&permutive=99999",
    }
    added = [text for text, mark in request["after"] if mark == "add"]
    assert added == [
        "cust_params=section%3Dsport%26categories%3Dsports%2Cfootball%26permutive%3D99999"
    ]
    removed = [text for text, mark in request["before"] if mark == "del"]
    assert removed == ["cust_params=section%3Dsport%26categories%3Dsports%2Cfootball"]
    # The run's answer was not cached: the next real request asks the API itself.
    assert len(ex.sidecar.enricher.contextual.cache) == 0
    await real_gam(ex)
    assert fake.calls == {"contextual": 2, "ccs": 1}


async def test_a_run_with_the_play_event_sends_one_and_claims_no_view(
    ex: Running, fake: FakePermutive
) -> None:
    status, x = await explain(ex, url=GAM_URL, run=True, send_play_event=True)
    assert status == 200, x
    assert fake.calls == {"ccs": 1, "contextual": 1}
    explained_view = fake.bodies["ccs"][0]["body"]["events"][0]["view_id"]
    assert x["behavioral"]["source"] == "live"
    assert {r["code"] for r in x["behavioral"]["cohorts"] if r["written"]} == {"12345", "67890"}
    assert x["keyvalues"] == {"permutive": ["12345", "67890", "99999"]}
    assert any("real play event was sent" in n for n in x["notes"])
    enricher = ex.sidecar.enricher
    assert enricher.sessions.view_count == 0 and len(enricher.behavioral.cache) == 0
    await real_gam(ex)
    assert fake.calls["ccs"] == 2  # the real request's own play event, in a view of its own
    assert fake.bodies["ccs"][1]["body"]["events"][0]["view_id"] != explained_view


async def test_a_failing_api_is_reported_and_trips_no_breaker_of_the_ad_path(
    ex: Running, fake: FakePermutive
) -> None:
    fake.status["contextual"] = 503
    for _ in range(8):  # more failures than open a breaker (5)
        assert ex.sidecar.enricher.backend_states()["contextual"] == "closed"
        status, x = await explain(ex, url=GAM_URL, run=True)
        assert status == 200
    ctx = x["asks"][1]
    assert ctx["called"] and ctx["outcome"] == "http_5xx"  # asked every time
    assert x["contextual"]["reason"] == "cache_fallback_error"
    assert x["contextual"]["source"] == "none"
    assert ex.sidecar.enricher.backend_states() == {"ccs": "closed", "contextual": "closed"}
    assert ex.sample("cohortkv_upstream_errors_total", api="contextual", kind="http_5xx") == 0


async def test_an_openrtb_body_shows_the_member_that_changed(
    ex: Running, fake: FakePermutive
) -> None:
    status, x = await explain(
        ex, url=OPENRTB_URL, method="POST", body=BID_BODY, run=True, send_play_event=True
    )
    assert status == 200, x
    assert x["platform"] == "openrtb"
    assert x["read"]["identity"]["alias"]["id"] == "a3b1c2d4-0000-4000-8000-123456789abc"
    assert x["read"]["content"]["url"] == CONTENT
    request = x["request"]
    assert request["kind"] == "body" and request["method"] == "POST"
    added = "".join(text for text, mark in request["after"] if mark == "add")
    assert '"permutive"' in added and '"99999"' in added
    assert not [t for t, m in request["before"] if m == "del"]  # members added, none removed
    assert '"tier": "gold"' in "".join(t for t, _ in request["after"])  # the rest kept


async def test_why_nothing_is_written(ex: Running, fake: FakePermutive) -> None:
    status, x = await explain(ex, url=GAM_URL.replace("1YNN", "1YYN"), run=True)
    assert status == 200
    assert x["consent"] == {"allowed": False, "reason": "usp_opted_out"}
    ccs = x["asks"][0]
    assert not ccs["would_call"] and ccs["why_not"].startswith("consent denied (usp_opted_out)")
    assert x["behavioral"]["reason"] == "consent_denied"
    assert "behavioral: consent denied (usp_opted_out): no CCS call" in x["summary"]
    status, x = await explain(ex, url="https://example.com/some/page?x=1")
    assert status == 200 and x["recognised"] is False and x["unrecognised"] == "no_adapter"
    assert x["summary"][0].endswith("it goes out unchanged")
    assert "/gampad/ads" in x["summary"][1]  # what a GAM request looks like
    assert fake.calls == {"contextual": 1}


async def test_a_persons_mistakes_are_named(ex: Running, fake: FakePermutive) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "url"),
        ({"url": GAM_URL, "send_play_event": True}, "send_play_event"),
        ({"url": "/gampad/ads?iu=1"}, "url"),
        ({"url": "/proxy/nope/gampad/ads?iu=1"}, "url"),
        ({"url": GAM_URL, "platform": "fw"}, "platform"),
        ({"url": GAM_URL, "body": "{}"}, "body"),
    ]
    for doc, field in cases:
        status, answer = await explain(ex, **doc)
        assert status == 400, doc
        assert field in [f["field"] for f in answer["fields"]], (doc, answer)
    assert fake.calls == {}


PREDICTED = {
    "first break": (GAM_URL, False),
    "later break": (GAM_URL, True),
    "consent denied": (GAM_URL.replace("1YNN", "1YYN"), False),
    "no identity": (GAM_URL.replace(f"&rdid={IDFA}&idtype=idfa", ""), False),
    "no content": (re.sub(r"&(description_url|cust_params)=[^&]*", "", GAM_URL), True),
}


@pytest.mark.parametrize("case", PREDICTED)
async def test_a_dry_run_predicts_what_the_next_real_request_gets(
    fake: FakePermutive, case: str
) -> None:
    """The dry run mirrors the enricher's decisions: each signal's source and reason is what
    the next real request then gets (`not_asked` + `live`: the API is asked and answers)."""
    url, warm = PREDICTED[case]
    config = Config(api_key=API_KEY, ccs_url=fake.url, ctx_url=fake.url)
    async with Enricher(config) as enricher:
        if warm:
            await enricher.enrich(GAM_URL)
        x = await DryRun(enricher).explain(url)
        real = await enricher.enrich(url)
    for predicted, got in ((x.behavioral, real.behavioral), (x.contextual, real.contextual)):
        assert predicted is not None
        source = "live" if predicted.source == "not_asked" else predicted.source
        assert (source, predicted.reason) == (got.source, got.reason), case
        if predicted.source != "not_asked":
            assert [c.code for c in predicted.cohorts if c.written] == got.cohorts


# -- the last decisions ------------------------------------------------------------------------


async def test_the_last_decisions_are_bounded_counted_and_redacted(
    ex: Running, fake: FakePermutive
) -> None:
    for i in range(52):
        await real_gam(ex, GAM_QUERY.replace("correlator=1", f"correlator={i}"))
    assert (await ex.client.get("/proxy/gam/some/other/path")).status == 200
    status, doc = await get_json(ex, "/explain/decisions")
    assert status == 200
    assert doc["size"] == 50 and doc["seen"] == 53 and len(doc["decisions"]) == 50
    newest = doc["decisions"][0]
    assert newest["recognised"] is False and newest["unrecognised"] == "path"
    last = doc["decisions"][1]
    assert re.fullmatch(r"alias:idfa#[0-9a-f]{8}", last["identity"])
    assert last["origin"] == "gam" and last["consent_reason"] == "usp_not_opted_out"
    assert last["why"] == "3 written"
    text = json.dumps(doc)
    assert IDFA not in text and IDFA.lower() not in text and "1YNN" not in text
    assert "example.com" not in text  # no URLs
    assert dict(map(tuple, doc["counts"]["platform"])) == {"gam": 50}
    assert ["allowed: usp_not_opted_out", 49] in doc["counts"]["consent"]
    # Explaining is not a decision.
    await explain(ex, url=GAM_URL)
    _, again = await get_json(ex, "/explain/decisions")
    assert again["seen"] == 53


def test_redaction_is_salted_per_replica() -> None:
    who = Identity(alias=Alias(tag="idfa", id=IDFA))
    one, two = DecisionLog(), DecisionLog()
    assert one.redact(who) == one.redact(who) != two.redact(who)
    assert one.redact(None) == "none"
    assert one.redact(Identity(user_id="2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c")).startswith(
        "user_id#"
    )


async def test_cohort_names_from_a_workspace_file(
    fake: FakePermutive, ads: FakeAdServer, tmp_path: Path
) -> None:
    ws = tmp_path / "ws.toml"
    ws.write_text(
        '[events.Videoview]\ncategories = "string[]"\n'
        '[[cohorts]]\ncode = "12345"\nname = "Sports fans"\nrule = { event = "Videoview" }\n'
        '[[contextual]]\ncode = "99999"\nname = "Football pages"\nurl_prefix = "https://"\n'
    )
    async with running(explain_config(fake, ads, explain_workspace=str(ws))) as r:
        status, x = await explain(r, url=GAM_URL, run=True, send_play_event=True)
        assert status == 200
        names = {
            c["code"]: c["name"] for s in ("behavioral", "contextual") for c in x[s]["cohorts"]
        }
        assert names["12345"] == "Sports fans" and names["99999"] == "Football pages"
        assert names["67890"] is None


async def test_meta_says_truly_where_cohort_names_come_from(
    ex: Running, fake: FakePermutive, ads: FakeAdServer, tmp_path: Path
) -> None:
    """Against Permutive's APIs without a workspace file no name is known: the page must not
    claim the sandbox's."""
    _, meta = await get_json(ex, "/explain/meta")
    assert meta["sandbox"] is False and meta["names"] is None
    ws = tmp_path / "ws.toml"
    ws.write_text('[[contextual]]\ncode = "1"\nname = "One"\nurl_prefix = "https://"\n')
    async with running(explain_config(fake, ads, explain_workspace=str(ws))) as r:
        assert (await get_json(r, "/explain/meta"))[1]["names"] == "workspace"
    sandboxed = explain_config(fake, ads).with_overrides(api_key=None, sandbox=True)
    async with running(sandboxed) as r:
        _, meta = await get_json(r, "/explain/meta")
        assert meta["sandbox"] is True and meta["names"] == "sandbox"


async def test_meta_and_live_decisions_follow_real_traffic(ex: Running) -> None:
    status, meta = await get_json(ex, "/explain/meta")
    assert status == 200 and "gam" in meta["platforms"] and meta["upstreams"]["gam"] == "gam"
    await real_gam(ex)

    async def seen() -> bool:
        return (await get_json(ex, "/explain/decisions"))[1]["seen"] == 1

    await until(seen, what="the proxied request in the last decisions")


def test_every_signal_reason_has_words() -> None:
    assert set(REASON_TEXT) == set(REASONS)
