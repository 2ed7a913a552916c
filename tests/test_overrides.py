"""A caller's overrides mean the same on every way in: the proxy's reserved parameters and
headers, `/v1/enrich`'s `context`, and `cohortkv enrich`'s flags (`plugin.overrides`)."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from typing import Any

import aiohttp
import msgspec
import pytest
import yarl
from multidict import CIMultiDict

from plugin.commands.cli import main as cli_main
from plugin.context import Context
from plugin.overrides import Mistake, from_body, from_flags, from_reserved
from plugin.serve.bodies import AliasBody, ConsentBody, ContentBody, ContextBody, IdentityBody

USER = "2b1e6c7a-4d3f-4e8a-9b2c-1d0e9f8a7b6c"
CONTENT = "https://example.com/v/1"
QUERY = "iu=/1/x&output=vast&description_url=https%3A%2F%2Fexample.com%2Fv%2F1"


class Said(msgspec.Struct, frozen=True):
    """One override, as a caller would say it on any way in."""

    user_id: str | None = None
    alias: str | None = None
    consent: str | None = None
    content_url: str | None = None


def via_params(s: Said, report: Any) -> Context | None:
    found = {
        name: value
        for name, value in (
            ("cohortkv_uid", s.user_id),
            ("cohortkv_alias", s.alias),
            ("cohortkv_consent", s.consent),
            ("cohortkv_content_url", s.content_url),
        )
        if value is not None
    }
    return from_reserved(CIMultiDict(), found, report)


def via_headers(s: Said, report: Any) -> Context | None:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in (
        ("X-Cohortkv-User-Id", s.user_id),
        ("X-Cohortkv-Alias", s.alias),
        ("X-Cohortkv-Consent", s.consent),
        ("X-Cohortkv-Content-Url", s.content_url),
    ):
        if value is not None:
            headers[name] = value
    return from_reserved(headers, {}, report)


def via_body(s: Said, report: Any) -> Context | None:
    identity = None
    if s.user_id is not None or s.alias is not None:
        alias = None
        if s.alias is not None:
            tag, _, ident = s.alias.partition(":")
            alias = AliasBody(tag=tag, id=ident)
        identity = IdentityBody(user_id=s.user_id, alias=alias)
    consent = ConsentBody(granted=s.consent == "granted") if s.consent is not None else None
    content = ContentBody(url=s.content_url) if s.content_url is not None else None
    # Built, not decoded: the decoder's own checks aside, the rules must see the value.
    body = ContextBody(identity=identity, consent=consent, content=content)
    return from_body(body, "context", report)


def via_flags(s: Said, report: Any) -> Context | None:
    aliases = [s.alias] if s.alias is not None else []
    return from_flags(s.user_id, aliases, s.consent or "auto", s.content_url, report)


WAYS = {"params": via_params, "headers": via_headers, "body": via_body, "flags": via_flags}

SAID = [
    Said(user_id=USER, consent="granted", content_url=CONTENT),
    Said(alias="tifa:device-1", consent="denied"),
    Said(user_id=USER),
    Said(consent="granted"),
    Said(content_url=CONTENT),
]


@pytest.mark.parametrize(
    "said", SAID, ids=lambda s: ",".join(f for f in s.__struct_fields__ if getattr(s, f))
)
def test_one_override_is_one_context_on_every_way_in(said: Said) -> None:
    mistakes: list[Mistake] = []
    contexts = {name: way(said, mistakes.append) for name, way in WAYS.items()}
    assert mistakes == []
    assert contexts["params"] is not None
    assert all(c == contexts["params"] for c in contexts.values()), contexts


@pytest.mark.parametrize(
    ("said", "kind"),
    [
        (Said(user_id="not-a-uuid"), "user_id"),
        (Said(user_id=USER, alias="tifa:device-1"), "identity"),
    ],
)
def test_one_mistake_is_the_same_mistake_on_every_way_in(said: Said, kind: str) -> None:
    for name, way in WAYS.items():
        mistakes: list[Mistake] = []
        context = way(said, mistakes.append)
        assert [m.kind for m in mistakes] == [kind], name
        assert context is None or context.identity is None, name
    fields = {}
    for name, way in WAYS.items():
        mistakes = []
        way(said, mistakes.append)
        fields[name] = mistakes[0].field
    assert fields["body"].startswith("context.identity")
    assert fields["flags"].startswith("--")
    assert fields["params"].startswith("cohortkv_")


def test_a_denial_wins_however_the_proxy_hears_it() -> None:
    mistakes: list[Mistake] = []
    headers = CIMultiDict({"X-Cohortkv-Consent": "granted"})
    context = from_reserved(headers, {"cohortkv_consent": "denied"}, mistakes.append)
    assert context is not None and context.consent.override is False
    context = from_reserved(CIMultiDict(), {"cohortkv_consent": "maybe"}, mistakes.append)
    assert context is not None and context.consent.override is None
    assert [m.kind for m in mistakes] == ["consent"]


# -- end to end: the same override through the proxy, /v1/enrich and the CLI ------------------


async def _proxy(side: Any, target: str) -> aiohttp.ClientResponse:
    """GET exactly `target`, not re-encoded by the client."""
    base = str(side.client.make_url("/")).rstrip("/")
    resp: aiohttp.ClientResponse = await side.client.session.get(
        yarl.URL(base + target, encoded=True)
    )
    await resp.read()
    return resp


async def _cli(*args: str) -> tuple[int, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = await asyncio.to_thread(cli_main, ["enrich", *args])
    return rc, json.loads(out.getvalue()) if rc == 0 else None


async def test_the_same_override_writes_the_same_key_values_on_every_way_in(
    side: Any, fake: Any, ads: Any
) -> None:
    written = {c: await _three_ways(side, fake, ads, c) for c in ("granted", "denied")}
    assert written["granted"] != written["denied"]  # the override decided something


async def _three_ways(side: Any, fake: Any, ads: Any, consent: str) -> str:
    """The ad request's query as the proxy, `/v1/enrich` and the CLI write it."""
    ad_url = "https://pubads.g.doubleclick.net/gampad/ads?" + QUERY
    reserved = f"&cohortkv_uid={USER}&cohortkv_consent={consent}"
    resp = await _proxy(side, f"/proxy/gam/gampad/ads?{QUERY}{reserved}")
    assert resp.status == 200
    proxied = ads.last.target.partition("?")[2]

    context = {"identity": {"user_id": USER}, "consent": {"granted": consent == "granted"}}
    resp = await side.client.post("/v1/enrich", json={"url": ad_url, "context": context})
    assert resp.status == 200
    api = (await resp.json())["url"].partition("?")[2]

    key = side.sidecar.enricher.config.api_key
    flags = ["--user-id", USER, "--consent", consent, "--json"]
    rc, doc = await _cli(
        ad_url, *flags, "--api-key", key, "--ccs-url", fake.url, "--ctx-url", fake.url
    )
    assert rc == 0
    cli = doc["url"].partition("?")[2]

    assert proxied == api == cli, consent
    assert "cust_params=" in proxied  # contextual cohorts flow whatever the consent
    return proxied


async def test_the_same_bad_override_is_refused_or_left_out_on_every_way_in(
    side: Any, fake: Any, ads: Any
) -> None:
    resp = await _proxy(side, f"/proxy/gam/gampad/ads?{QUERY}&cohortkv_uid=nope")
    assert resp.status == 200  # a viewer's request still goes out, the value left out
    assert side.sample("cohortkv_bad_input_total", source="proxy", kind="user_id") == 1
    assert "cohortkv_uid" not in ads.last.target

    ad_url = "https://pubads.g.doubleclick.net/gampad/ads?" + QUERY
    body = {"url": ad_url, "context": {"identity": {"user_id": "nope"}}}
    resp = await side.client.post("/v1/enrich", json=body)
    assert resp.status == 400
    assert "context.identity.user_id" in json.dumps(await resp.json())

    rc = await asyncio.to_thread(cli_main, ["enrich", ad_url, "--user-id", "nope"])
    assert rc == 2  # a person's mistake: one line naming --user-id (tests/test_cli.py)
