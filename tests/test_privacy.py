"""Privacy rules end to end: the most restrictive signal wins through the library, the CLI and
the sidecar; no silent sandbox; the key and the user's data stay where they belong."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from plugin import Config, ConfigError, ConsentSignals, Content, Context, Enricher, Identity
from plugin.commands.cli import main
from plugin.identity import Alias
from plugin.observe.logs import configure_logging
from plugin.signals.content_properties import ContentDescription
from plugin.signals.contextual import contextual_key
from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import API_KEY, FakePermutive, config
from tests.helpers.redis import SharedRedis, keys_of

USER = "2008c38f-dece-4570-976d-87593ed001c3"
VECTORS = {
    v["name"]: v
    for v in json.loads(
        (Path(__file__).parent / "vectors" / "tcf_vectors.json").read_text(encoding="utf-8")
    )
}
TC_GRANTS = VECTORS["range_single_361_all_purposes"]["tc_string"]
TC_DENIES = VECTORS["range_single_361_purpose1_off"]["tc_string"]
DEVICE = Identity(alias=Alias(tag="idfa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
GRANTED = ConsentSignals(override=True)
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"

GAM = "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/ctv&description_url=https%3A%2F%2Fpub.example%2Fv%2F1&output=vast"
FW = "https://5fd74.v.fwmrm.net/ad/g/1?nw=1&caid=c1&resp=vast4;_fw_did=idfa:{idfa}{extra};slid=pre"
AW = (
    "https://ads.example/vast/4.0/request/alias/zone1?aw_0_1st.episode_id=ep1"
    "&aw_0_1st.ifa={idfa}&aw_0_1st.ifaType=idfa"
)


# --- 1. the most restrictive signal wins -------------------------------------------------------

# Each URL carries a denial of its own; the host then says "granted". Nothing may upgrade it.
DENYING_REQUESTS = {
    "gam_tfcd": (GAM + "&tfcd=1", "child_directed"),
    "gam_tfua": (GAM + "&tfua=1", "child_directed"),
    "gam_tcf_denies": (GAM + f"&gdpr=1&gdpr_consent={TC_DENIES}", "tcf_purpose_denied"),
    "gam_usp_opt_out": (GAM + "&us_privacy=1YYN", "usp_opted_out"),
    "gam_rdp": (GAM + "&rdp=1", "restricted_processing"),
    "gam_gdpr_conflict": (GAM + f"&gdpr=0&gdpr_consent={TC_GRANTS}&gdpr=1", "conflicting_signals"),
    "gam_usp_conflict": (GAM + "&us_privacy=1YNN&us_privacy=1NNN", "conflicting_signals"),
    "gam_tfcd_repeated": (GAM + "&tfcd=0&tfcd=1", "child_directed"),
    "fw_coppa": (FW.format(idfa=IDFA, extra="&_fw_coppa=1"), "child_directed"),
    "fw_coppa_in_global": (
        FW.format(idfa=IDFA, extra="").replace("resp=vast4", "resp=vast4&_fw_coppa=1"),
        "child_directed",
    ),
    "fw_gdpr_sections_disagree": (
        FW.format(idfa=IDFA, extra="&_fw_gdpr=1").replace("resp=vast4", "resp=vast4&_fw_gdpr=0"),
        "conflicting_signals",
    ),
    "gam_gpp_usnat_gpc": (GAM + "&gpp=DBABL~BVVqAAAAAQ.YA&gpp_sid=7", "gpp_gpc"),
    # GPP strings from @iabgpp/cmpapi (tests/vectors/gpp_vectors.json).
    "gam_gpp_usca_opted_out": (GAM + "&gpp=DBABBg~BVYAAABY.QA&gpp_sid=8", "gpp_usca_opted_out"),
    "gam_gpp_usca_beside_a_granting_usnat": (
        GAM + "&gpp=DBABrw~CVVqAAAAAABY.QA~BVYAAABY.QA&gpp_sid=7,8",
        "gpp_usca_opted_out",
    ),
    "fw_gpp_usva_gpc_its_spec_lacks": (
        FW.format(idfa=IDFA, extra="&gpp=DBABRg~BVoAABY.YA&gpp_sid=9"),
        "gpp_gpc",
    ),
    "aw_coppa": (AW.format(idfa=IDFA) + "&aw_0_req.coppa=1", "child_directed"),
    "aw_usp_names_disagree": (
        AW.format(idfa=IDFA) + "&aw_0_req.usPrivacy=1YNN&us_privacy=1YYN",
        "conflicting_signals",
    ),
}


@pytest.mark.parametrize("case", sorted(DENYING_REQUESTS))
async def test_a_host_grant_never_upgrades_a_denial_in_the_ad_request(
    fake: FakePermutive, case: str
) -> None:
    url, reason = DENYING_REQUESTS[case]
    async with Enricher(config(fake)) as e:
        r = await e.enrich(url, Context(identity=DEVICE, consent=GRANTED))
    assert (r.consent.allowed, r.consent.reason) == (False, reason)
    assert fake.calls["ccs"] == 0
    assert r.behavioral.source == "skipped"


async def test_a_us_state_gpp_section_that_grants_lets_behavioral_data_through(
    fake: FakePermutive,
) -> None:
    # California: notices given, nothing opted out, no GPC.
    async with Enricher(config(fake)) as e:
        r = await e.enrich(GAM + "&gpp=DBABBg~BUoAAABA.QA&gpp_sid=8", Context(identity=DEVICE))
    assert (r.consent.allowed, r.consent.reason) == (True, "gpp_usca_not_opted_out")
    assert fake.calls["ccs"] == 1


async def test_child_directed_denies_even_with_a_lenient_default(fake: FakePermutive) -> None:
    from plugin.config import ConsentConfig

    lenient = config(fake, consent=ConsentConfig(default="granted"))
    async with Enricher(lenient) as e:
        r = await e.enrich(GAM + "&tfcd=1", Context(identity=DEVICE))
        plain = await e.enrich(GAM, Context(identity=DEVICE))
    assert (r.consent.allowed, r.consent.reason) == (False, "child_directed")
    assert plain.consent.allowed  # the lenient default itself still applies without a flag


async def test_an_override_may_always_deny_and_grants_only_without_signals(
    fake: FakePermutive,
) -> None:
    async with Enricher(config(fake)) as e:
        granted_by_url = GAM + f"&gdpr=1&gdpr_consent={TC_GRANTS}"
        denied = await e.enrich(granted_by_url, Context(consent=ConsentSignals(override=False)))
        assert (denied.consent.allowed, denied.consent.reason) == (False, "override_denied")
        quiet = await e.enrich(GAM, Context(identity=DEVICE, consent=GRANTED))
        assert (quiet.consent.allowed, quiet.consent.reason) == (True, "override_granted")
        both = await e.enrich(granted_by_url, Context(identity=DEVICE, consent=GRANTED))
        assert (both.consent.allowed, both.consent.reason) == (True, "tcf_granted")
        # Undecodable is not "no signal": the request said something we cannot read.
        garbled = await e.enrich(GAM + "&gdpr=1&gdpr_consent=%21%21", Context(consent=GRANTED))
        assert (garbled.consent.allowed, garbled.consent.reason) == (False, "tcf_undecodable")


async def test_host_raw_signals_are_read_with_the_requests_not_instead(
    fake: FakePermutive,
) -> None:
    async with Enricher(config(fake)) as e:
        # The host's own granting TC string cannot outvote the request's opt-out ...
        r = await e.enrich(
            GAM + "&us_privacy=1YYN",
            Context(identity=DEVICE, consent=ConsentSignals(gdpr=True, tc_string=TC_GRANTS)),
        )
        assert (r.consent.allowed, r.consent.reason) == (False, "usp_opted_out")
        # ... but the host's denial holds over a request that grants.
        r = await e.enrich(
            GAM + f"&gdpr=1&gdpr_consent={TC_GRANTS}",
            Context(identity=DEVICE, consent=ConsentSignals(us_privacy="1YYN")),
        )
        assert (r.consent.allowed, r.consent.reason) == (False, "usp_opted_out")
    assert fake.calls["ccs"] == 0


LAT_REQUESTS = {
    "gam": (
        GAM + f"&rdid={IDFA}&idtype=idfa&is_lat=1&us_privacy=1YNN",
        GAM + f"&rdid={IDFA}&idtype=idfa&is_lat=0&us_privacy=1YNN",
    ),
    "gam_repeated": (GAM + f"&rdid={IDFA}&idtype=idfa&is_lat=0&is_lat=1&us_privacy=1YNN", None),
    "freewheel": (
        FW.format(idfa=IDFA, extra="&_fw_is_lat=1&_fw_us_privacy=1YNN"),
        FW.format(idfa=IDFA, extra="&_fw_is_lat=0&_fw_us_privacy=1YNN"),
    ),
    "adswizz": (
        AW.format(idfa=IDFA) + "&aw_0_req.lmt=1&us_privacy=1YNN",
        AW.format(idfa=IDFA) + "&aw_0_req.lmt=0&us_privacy=1YNN",
    ),
}


@pytest.mark.parametrize("case", sorted(LAT_REQUESTS))
async def test_a_limit_ad_tracking_device_id_is_never_used_as_identity(
    fake: FakePermutive, case: str
) -> None:
    flagged, unflagged = LAT_REQUESTS[case]
    async with Enricher(config(fake)) as e:
        r = await e.enrich(flagged)
        assert r.consent.allowed and r.behavioral.source == "none"
        assert fake.calls["ccs"] == 0
        if unflagged is not None:
            r = await e.enrich(unflagged)
            assert fake.calls["ccs"] == 1
            sent = fake.bodies["ccs"][0]["body"]
            assert IDFA in json.dumps(sent)


@pytest.mark.parametrize("case", ["gam", "freewheel", "adswizz"])
async def test_a_limit_ad_tracking_request_drops_advertising_ids_from_every_source(
    fake: FakePermutive, case: str
) -> None:
    """The host (library argument, reserved parameter, header) cannot bring back the device id
    the request flagged; a Permutive user id or a first-party alias is no advertising id."""
    flagged, _ = LAT_REQUESTS[case]
    device = Context(identity=Identity(alias=Alias(tag="idfa", id=IDFA)))
    first_party = Identity(
        aliases=(
            Alias(tag="idfa", id=IDFA, priority=0),
            Alias(tag="email_sha256", id="e", priority=1),
        )
    )
    async with Enricher(config(fake)) as e:
        r = await e.enrich(flagged, device)
        assert (r.behavioral.source, r.behavioral.reason) == ("none", "no_identity")
        assert fake.calls["ccs"] == 0
        await e.enrich(flagged, Context(identity=first_party))
        await e.enrich(flagged, Context(identity=Identity(user_id=USER)))
    sent = [c["body"] for c in fake.bodies["ccs"]]
    assert len(sent) == 2 and IDFA not in json.dumps(sent)
    assert sent[0]["aliases"] == [{"tag": "email_sha256", "id": "e", "priority": 1}]
    assert sent[1]["user_id"] == USER


async def test_sidecar_alias_cannot_bring_back_a_limit_ad_tracking_device_id(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        tail = (
            "/gampad/ads?iu=/1/ctv&description_url=https%3A%2F%2Fpub.example%2Fv%2F1&is_lat=1"
            "&us_privacy=1YNN"  # consent allowed: only the flag stands in the way
        )
        resp = await side.client.get(f"/proxy/gam{tail}&cohortkv_alias=idfa%3A{IDFA}")
        assert resp.status == 200
        resp = await side.client.get(
            f"/proxy/gam{tail}", headers={"X-Cohortkv-Alias": f"tifa:{IDFA}"}
        )
        assert resp.status == 200
        assert fake.calls["ccs"] == 0
        # A first-party alias is not an advertising id: the flag leaves it (docs/privacy.md).
        resp = await side.client.get(f"/proxy/gam{tail}&cohortkv_alias=ppid%3Apub-42")
        assert resp.status == 200
    (call,) = fake.bodies["ccs"]
    assert call["body"]["alias"] == {"tag": "ppid", "id": "pub-42"} and IDFA not in str(call)


async def test_sidecar_reserved_parameter_and_header_cannot_grant_over_the_request(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    alias = f"cohortkv_alias=idfa%3A{IDFA}"
    async with running(sidecar_config(fake, ads)) as side:
        tail = "/gampad/ads?iu=/1/ctv&description_url=https%3A%2F%2Fpub.example%2Fv%2F1"
        resp = await side.client.get(f"/proxy/gam{tail}&tfcd=1&{alias}&cohortkv_consent=granted")
        assert resp.status == 200
        resp = await side.client.get(
            f"/proxy/gam{tail}&gdpr=1&gdpr_consent={TC_DENIES}&{alias}",
            headers={"X-Cohortkv-Consent": "granted"},
        )
        assert resp.status == 200
        resp = await side.client.get(
            f"/proxy/freewheel/ad/g/1?nw=1&caid=c1;_fw_did=idfa:{IDFA}&_fw_coppa=1;slid=pre"
            "&cohortkv_consent=granted"
        )
        assert resp.status == 200
        assert fake.calls["ccs"] == 0
        denied = side.sample(
            "cohortkv_consent_decisions_total", decision="denied", reason="child_directed"
        )
        assert denied == 2
        # The same reserved parameter does grant where the ad request says nothing itself.
        resp = await side.client.get(f"/proxy/gam{tail}&{alias}&cohortkv_consent=granted")
        assert resp.status == 200
        assert fake.calls["ccs"] == 1


def test_cli_consent_flag_cannot_grant_over_a_child_directed_request(
    fake_urls: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ccs, ctx = fake_urls
    code = main(
        [
            "enrich",
            GAM + "&tfcd=1",
            "--alias",
            f"idfa:{IDFA}",
            "--consent",
            "granted",
            "--json",
            "--api-key",
            API_KEY,
            "--ccs-url",
            ccs,
            "--ctx-url",
            ctx,
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["consent"] == {"allowed": False, "reason": "child_directed"}
    assert doc["behavioral"]["source"] == "skipped"


@pytest.fixture
def fake_urls() -> Any:
    """The fake Permutive APIs on a thread of their own, for synchronous CLI runs."""
    import asyncio
    import threading

    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        fake = FakePermutive()
        loop.run_until_complete(fake.__aenter__())
        holder.update(loop=loop, fake=fake)
        ready.set()
        loop.run_forever()
        loop.run_until_complete(fake.__aexit__())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    fake = holder["fake"]
    yield fake.url, fake.url
    holder["loop"].call_soon_threadsafe(holder["loop"].stop)
    thread.join(10)


# --- 3. no silent sandbox ------------------------------------------------------------------------


def test_an_enricher_without_key_or_sandbox_opt_in_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as e:
        Enricher(Config())
    message = str(e.value)
    assert "api_key" in message and "COHORTKV_API_KEY" in message
    assert "sandbox = true" in message and "--sandbox" in message


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_api_key_is_an_error(blank: str) -> None:
    with pytest.raises(
        ConfigError,
        match=r"api_key: expected a non-empty API key \(in the config file or COHORTKV_API_KEY\)",
    ):
        Enricher(Config(api_key=blank))
    from plugin.config import load_config

    with pytest.raises(ConfigError, match="api_key"):
        load_config(env={"COHORTKV_API_KEY": blank})


def test_sandbox_and_a_key_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="sandbox"):
        Enricher(Config(api_key="k" * 8, sandbox=True))


async def test_the_sandbox_on_purpose_warns_and_shows_in_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="cohortkv.enricher"):
        async with Enricher(Config(sandbox=True), registry=registry) as e:
            await e.enrich(GAM, Context(identity=DEVICE, consent=GRANTED))
            assert e.sandbox is not None
    assert registry.get_sample_value("cohortkv_sandbox_mode") == 1
    assert any("sandbox" in r.getMessage() for r in caplog.records)


async def test_sidecar_in_sandbox_mode_says_so_on_readyz_and_metrics(ads: FakeAdServer) -> None:
    from plugin.config import ServeConfig

    cfg = Config(sandbox=True, serve=ServeConfig(upstreams={"gam": ads.url}))
    async with running(cfg) as side:
        ready = await (await side.client.get("/readyz")).json()
        assert ready["sandbox"] is True
        text = await (await side.client.get("/metrics")).text()
        assert "cohortkv_sandbox_mode 1.0" in text


def test_cli_without_key_or_sandbox_exits_2_naming_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COHORTKV_API_KEY", raising=False)
    for argv in (["enrich", GAM], ["serve", "--port", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "api_key" in err and "COHORTKV_API_KEY" in err and "--sandbox" in err
        assert "Traceback" not in err


def test_cli_enrich_runs_on_the_sandbox_with_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["enrich", GAM, "--sandbox", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["platform"] == "gam"


# --- 4. the key and the data ----------------------------------------------------------------------


async def test_api_redirects_are_never_followed_and_are_counted() -> None:
    seen: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"user_id": "x", "cohorts": []})

    target = web.Application()
    target.router.add_route("*", "/{tail:.*}", elsewhere)
    async with TestServer(target) as other:
        where = str(other.make_url("/stolen"))

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(where)

        api = web.Application()
        api.router.add_post("/ccs/v1/segmentation", redirect)
        api.router.add_post("/ctx/v1/segment", redirect)
        async with TestServer(api) as server:
            base = str(server.make_url("")).rstrip("/")
            registry = CollectorRegistry()
            cfg = Config(api_key=API_KEY, ccs_url=base, ctx_url=base)
            async with Enricher(cfg, registry=registry) as e:
                r = await e.enrich(GAM, Context(identity=DEVICE, consent=GRANTED))
    assert seen == []
    assert r.behavioral.source == "none" and r.url == GAM
    for api_name in ("ccs", "contextual"):
        errors = registry.get_sample_value(
            "cohortkv_upstream_errors_total", {"api": api_name, "kind": "redirect"}
        )
        assert errors == 1


def test_log_redaction_covers_exceptions_tracebacks_and_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-live-0123456789abcdef"
    for json_lines in (False, True):
        stream = io.StringIO()
        monkeypatch.setattr("sys.stderr", stream)
        configure_logging(json_lines=json_lines, secrets=[secret])
        log = logging.getLogger("cohortkv.test")
        try:
            raise RuntimeError(f"upstream said {secret}")
        except RuntimeError:
            log.exception("failed calling with key %s", secret, extra={"detail": f"k={secret}"})
        log.warning("stack", stack_info=True, extra={"nested": {"key": secret}})
        out = stream.getvalue()
        assert secret not in out, out
        assert "RuntimeError" in out and "***" in out
    logging.getLogger().handlers.clear()


async def test_contextual_requests_carry_content_only(fake: FakePermutive) -> None:
    async with Enricher(config(fake)) as e:
        await e.enrich(
            GAM,
            Context(
                identity=DEVICE,
                consent=GRANTED,
                content=Content(
                    title="Highlights",
                    properties={"video_id": "v1"},
                ),
            ),
        )
    body = json.dumps(fake.bodies["contextual"][0])
    assert IDFA not in body
    assert "Highlights" in body and "pub.example" in body


async def test_content_urls_never_stand_in_the_clear_in_cache_keys(
    fake: FakePermutive, shared_redis: SharedRedis
) -> None:
    prefix_url = f"https://pub.example/v/secret-content-slug-{uuid.uuid4()}"
    cfg = config(fake, cache=shared_redis.cache())
    async with Enricher(cfg) as e:
        await e.enrich(
            GAM, Context(identity=DEVICE, consent=GRANTED, content=Content(url=prefix_url))
        )
        local_keys = list(e.contextual.cache._data)  # the in-process cache
    keys = keys_of(shared_redis)
    # keyed by the URL and what else the Contextual request carried (GAM: the `video` section)
    key = contextual_key(ContentDescription(prefix_url, {}, section="video").contextual_request())
    assert f"{shared_redis.prefix}:c:{key.hex()}" in keys
    assert not [k for k in keys if "secret-content-slug" in k or IDFA in k]
    assert local_keys == [key]


# -- what a review as an attacker found -------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ("&cohortkv_consent=granted&cohortkv_consent=denied", {}),
        ("&cohortkv_consent=denied&cohortkv_consent=granted", {}),
        ("&cohortkv_consent=denied", {"X-Cohortkv-Consent": "granted"}),
        ("&cohortkv_consent=granted", {"X-Cohortkv-Consent": "denied"}),
        ("", [("X-Cohortkv-Consent", "granted"), ("X-Cohortkv-Consent", "denied")]),
    ],
)
async def test_an_override_that_disagrees_with_itself_denies(
    fake: FakePermutive, ads: FakeAdServer, params: str, headers: Any
) -> None:
    """A viewer can put `&cohortkv_consent=granted` ahead of the template's `denied`: any
    denial among the overrides wins, wherever it stands."""
    async with running(sidecar_config(fake, ads)) as side:
        tail = f"/gampad/ads?iu=/1&rdid={IDFA}&idtype=idfa&description_url=https%3A%2F%2Fe.x%2Fv"
        resp = await side.client.get(f"/proxy/gam{tail}{params}", headers=headers)
        assert resp.status == 200
        assert fake.calls["ccs"] == 0
        assert "cohortkv_" not in ads.last.target


async def test_a_percent_encoded_reserved_name_is_read_and_removed_too(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        tail = f"/gampad/ads?iu=/1&rdid={IDFA}&idtype=idfa&description_url=https%3A%2F%2Fe.x%2Fv"
        resp = await side.client.get(
            f"/proxy/gam{tail}&cohortkv_consent=granted&cohortkv%5Fconsent=denied"
        )
        assert resp.status == 200
        assert fake.calls["ccs"] == 0  # the encoded denial counts
        assert "ohortkv" not in ads.last.target
        resp = await side.client.get(f"/proxy/gam{tail}&%63ohortkv_consent=granted")
        assert resp.status == 200
        assert fake.calls["ccs"] == 1 and "ohortkv" not in ads.last.target


@pytest.mark.parametrize("tag", ["gaid", "adid", "roku", "tvos", "IDFA", "Tifa", "device_id"])
async def test_limit_ad_tracking_drops_an_advertising_id_under_any_spelling_of_its_tag(
    fake: FakePermutive, tag: str
) -> None:
    flagged = GAM + f"&rdid={IDFA}&idtype=idfa&is_lat=1&us_privacy=1YNN"
    async with Enricher(config(fake)) as e:
        r = await e.enrich(flagged, Context(identity=Identity(alias=Alias(tag=tag, id=IDFA))))
    assert r.behavioral.reason == "no_identity" and fake.calls["ccs"] == 0


async def test_an_all_zero_id_from_the_host_is_never_used(fake: FakePermutive) -> None:
    zero = "00000000-0000-0000-0000-000000000000"
    async with Enricher(config(fake)) as e:
        r = await e.enrich(
            GAM + "&us_privacy=1YNN", Context(identity=Identity(alias=Alias(tag="idfa", id=zero)))
        )
    assert r.behavioral.reason == "no_identity" and fake.calls["ccs"] == 0


@pytest.mark.parametrize(
    "url",
    [
        GAM + f"&rdid={IDFA}&idtype=idfa&gpp=DBABL~BVVqAAAAAQ.YA&gpp_sid=-1",
        GAM + f"&rdid={IDFA}&idtype=idfa&gpp=DBABL~BVVqAAAAAQ.YA&gpp_sid=abc",
        GAM + f"&rdid={IDFA}&idtype=idfa&us_privacy=1YNN&gdpr=2",
        FW.format(idfa=IDFA, extra="&_fw_us_privacy=1YNN") + "&_fw_coppa=1;",
        FW.format(idfa=IDFA, extra="&_fw_us_privacy=1YNN;x=1;_fw_coppa=1"),
    ],
)
async def test_viewer_values_cannot_widen_what_is_read(fake: FakePermutive, url: str) -> None:
    """`gpp_sid=-1` says no section applies (and garbage reads as that); `gdpr=2` fails closed
    to "GDPR applies"; `_fw_coppa=1` counts in any FreeWheel section."""
    async with Enricher(config(fake)) as e:
        r = await e.enrich(url, Context(consent=ConsentSignals()))
    assert not r.consent.allowed, r.consent
    assert fake.calls["ccs"] == 0


async def test_header_bytes_that_are_not_utf8_are_bad_input_not_a_bug(
    fake: FakePermutive, ads: FakeAdServer
) -> None:
    async with running(sidecar_config(fake, ads)) as side:
        port = side.client.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /proxy/gam/gampad/ads?iu=1 HTTP/1.1\r\nHost: x\r\n"
            b"X-Cohortkv-Content-Url: https://example.com/\xff\r\n"
            b'X-Cohortkv-Properties: {"t": "\xff"}\r\nConnection: close\r\n\r\n'
        )
        await writer.drain()
        head = await reader.readline()
        writer.close()
        assert b" 200 " in head
        assert side.sample("cohortkv_serve_errors_total", route="proxy") == 0
        assert side.sample("cohortkv_bad_input_total", source="proxy", kind="encoding") == 2
