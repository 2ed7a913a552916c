"""`cohortkv verify`: the Direct API guide's six verification steps, against a configured API.

Each step checks what the guide's step means, so that an API that answers the same for
everyone cannot pass it:

1. identity: one identifier twice gets one `user_id`, and another identifier a different one;
2. event collection: the verification event changes the user's membership: a fresh user is in
   the test cohort (or, without one, in some cohort) after the event and was not before it (a
   first call with a baseline event, `--baseline-event`, shows "before");
3. activations come back for the platform;
4. the Contextual API answers a known URL with activations, as the guide shows them (no
   `cohorts` member needed);
5. both signals land in an ad request; 6. no CCS call is made for an unconsented user while
   contextual cohorts still flow.

Steps 1-4 talk to the APIs directly; 5 and 6 go through the enricher, as production traffic
does. With no API key and no API URL the built-in sandbox is started in-process. Each step
prints PASS, FAIL, or UNPROVEN (it could not be shown either way: not a pass) with its
evidence; anything but PASS makes the exit status 1. The API key never appears in the output.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry

from adapters.base import Adapter
from adapters.registry import EXAMPLE_PLATFORMS, adapter_by_name, build_adapters
from plugin.commands.args import UsageError
from plugin.commands.config_args import add_api_flags, config_from_args
from plugin.commands.demo import (
    PREROLL,
    TC_GRANTED,
    TC_PURPOSE1_DENIED,
    Video,
    Viewer,
    ad_request,
)
from plugin.commands.demo_summary import sample_sum
from plugin.commands.failures import upstream_text
from plugin.commands.term import Color, Style, UrlChange, table, wants_color
from plugin.config import Config, HttpConfig, adapter_settings
from plugin.context import Content, Context
from plugin.identity import Alias
from plugin.observe.metrics import Metrics
from plugin.permutive.clients import CcsClient, ContextualClient, UpstreamError, make_session
from plugin.permutive.wire import CcsRequest, CcsResponse, ContextualResponse, Event
from plugin.request import AdRequest
from plugin.result import EnrichResult
from plugin.signals.content_properties import ContentDescription

if TYPE_CHECKING:
    from plugin.sandbox import Sandbox
    from plugin.sandbox.workspace import Workspace

PLATFORMS: tuple[str, ...] = EXAMPLE_PLATFORMS
"""Every platform of the registry with an example ad request to check with."""
DEFAULT_CONTENT_URL = "https://example.com/sport/football/pl-highlights-week-20"
"""A URL the sandbox's default workspace has contextual cohorts for (sport, football)."""
DEFAULT_ALIAS_TAG = "tifa"
DEFAULT_BASELINE_EVENT = "Pageview"
"""The event that shows a fresh user's cohorts before the verification event: the CCS API
takes no call without events, and a workspace has Pageview events (Custom Cohorts page)."""
VERIFICATION_PREFIX = "Verification"
"""Name prefix of the sandbox workspace's test cohort (`any Videoview or AudioPlay`)."""
MIN_ENRICH_BUDGET_MS = 2000
"""Steps 5-6 check wiring, not latency: a slow API must not turn them into cache answers."""

TITLES: dict[int, str] = {
    1: "Identity: one alias gets one user_id, another alias another",
    2: "Event collection: the event puts a fresh user in the test cohort",
    3: "Activations: activations=true returns platforms and cohort ids",
    4: "Contextual signals: a known URL has contextual activations",
    5: "Signal merging: behavioral and contextual cohorts in the ad request",
    6: "Consent gating: no CCS call without consent; contextual still flows",
}


Verdict = Literal["PASS", "FAIL", "UNPROVEN"]


class Step(msgspec.Struct):
    number: int
    title: str
    verdict: Verdict
    evidence: list[str]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


class _Fail(Exception):
    """A step's failure, with the lines that explain it."""

    verdict: Verdict = "FAIL"

    def __init__(self, *lines: str) -> None:
        super().__init__(lines[0] if lines else "failed")
        self.lines = list(lines)


class _Unproven(_Fail):
    """The step could not show what it checks either way: not a pass."""

    verdict: Verdict = "UNPROVEN"


class VerifyApis:
    """The CCS and Contextual APIs as steps 1-4 call them: through the product's own clients (the
    same URL, headers, settings and decoding an ad request's call uses) on one session, without
    a breaker. An API's failure is the step's failure, saying what went wrong, the key redacted."""

    def __init__(
        self, session: aiohttp.ClientSession, config: Config, api_key: str, http: HttpConfig
    ) -> None:
        self.config = config
        self.api_key = api_key
        metrics = Metrics(CollectorRegistry())
        ccs, ctx, key = config.ccs_url, config.ctx_url, api_key
        self._ccs = CcsClient(session, ccs, key, metrics, http)
        self._ccs_checked = CcsClient(session, ccs, key, metrics, http, synchronous_validation=True)
        self._ctx = ContextualClient(session, ctx, key, metrics, http)

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Config, api_key: str) -> AsyncIterator[VerifyApis]:
        """The APIs on a session of their own, closed when the steps are done."""
        # Every step reports its own failure: no breaker may turn a later one into "open".
        http = msgspec.structs.replace(config.http, breaker_failures=1_000_000)
        async with make_session(http.pool_limit, http.pool_limit_per_host, 5.0) as session:
            yield cls(session, config, api_key, http)

    async def ccs(
        self, alias: Alias, event: Event, *, synchronous_validation: bool = False
    ) -> CcsResponse:
        """One CCS call through the product's own client (the same URL, headers, breaker-free
        settings and decoding an ad request's call uses)."""
        client = self._ccs_checked if synchronous_validation else self._ccs
        try:
            answer = await client.segment(CcsRequest(events=[event], alias=alias))
        except UpstreamError as e:
            raise _Fail(self._upstream_text("CCS", self.config.ccs_url, e)) from None
        return CcsResponse(
            user_id=answer.user_id,
            cohorts=list(answer.cohorts),
            activations={p: list(codes) for p, codes in answer.activations or ()},
        )

    async def ctx(self, url: str) -> ContextualResponse:
        request = ContentDescription(url, {}).contextual_request()
        try:
            answer = await self._ctx.segment(request)
        except UpstreamError as e:
            raise _Fail(self._upstream_text("Contextual", self.config.ctx_url, e)) from None
        return ContextualResponse(
            cohorts=list(answer.cohorts),
            activations={p: list(codes) for p, codes in answer.activations or ()},
        )

    async def why(self, alias: Alias, event: Event) -> list[str]:
        """Asks again with synchronous validation: a schema mismatch then says what it is."""
        try:
            await self.ccs(alias, event, synchronous_validation=True)
        except _Fail as e:
            return [f"with synchronous-validation=true: {e.lines[0]}"]
        return [
            "the event passes synchronous validation: check the cohort's rule matches "
            f"{event.name} (--test-cohort names the cohort to expect)"
        ]

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    def _upstream_text(self, api: str, url: str, e: UpstreamError) -> str:
        return upstream_text(api, url, e, self.redact)


class Verifier:
    """Runs the steps against `config`'s APIs; `sandbox` is the in-process one, if any."""

    apis: VerifyApis

    def __init__(
        self,
        config: Config,
        *,
        platform: str = "gam",
        test_cohort: str | None = None,
        content_url: str = DEFAULT_CONTENT_URL,
        alias_tag: str = DEFAULT_ALIAS_TAG,
        baseline_event: str = DEFAULT_BASELINE_EVENT,
        sandbox: Sandbox | None = None,
    ) -> None:
        if platform not in PLATFORMS:
            raise UsageError("--platform", f"one of {', '.join(PLATFORMS)}", platform)
        if config.api_key is None:
            raise UsageError("--api-key: an API key is needed to verify an API")
        self.config = config
        self.api_key: str = config.api_key
        self.platform = platform
        self.test_cohort = test_cohort
        self.content_url = content_url
        self.alias_tag = alias_tag
        self.baseline_event = baseline_event
        self.sandbox = sandbox
        self._answer: CcsResponse | None = None  # step 2's answer, checked again in step 3
        self._alias: Alias | None = None  # step 2's user: has history for step 5

    # -- running --------------------------------------------------------------------------

    async def run(self) -> list[Step]:
        async with VerifyApis.open(self.config, self.api_key) as apis:
            self.apis = apis
            steps: list[tuple[int, Callable[[], Awaitable[list[str]]]]] = [
                (1, self.identity),
                (2, self.event_collection),
                (3, self.activations),
                (4, self.contextual),
                (5, self.merging),
                (6, self.consent_gating),
            ]
            out = []
            for number, check in steps:
                verdict: Verdict = "PASS"
                try:
                    evidence = await check()
                except _Fail as e:
                    evidence, verdict = e.lines, e.verdict
                except Exception as e:  # a step must report, never crash the others
                    evidence, verdict = [f"unexpected error: {apis.redact(_describe(e))}"], "FAIL"
                out.append(Step(number, TITLES[number], verdict, evidence))
            return out

    # -- the steps ------------------------------------------------------------------------

    async def identity(self) -> list[str]:
        alias, other = self._fresh_alias(), self._fresh_alias()
        first = await self.apis.ccs(alias, self._play_event())
        second = await self.apis.ccs(alias, self._play_event())
        third = await self.apis.ccs(other, self._play_event())
        shown = f"alias {alias.tag}:{alias.id}"
        got = [
            f"{shown} twice -> user_id {first.user_id or '(none)'}, then "
            f"{second.user_id or '(none)'}",
            f"another alias {other.tag}:{other.id} -> user_id {third.user_id or '(none)'}",
        ]
        if not (first.user_id and second.user_id and third.user_id):
            raise _Fail(*got, "an answer has no user_id: the identity cannot be checked")
        if first.user_id != second.user_id:
            raise _Fail(
                *got,
                "the same identifier must resolve to the same user: check the alias tag is "
                "configured in the workspace",
            )
        if third.user_id == first.user_id:
            raise _Fail(
                *got,
                "two different identifiers resolved to one user: users would share their "
                "behaviour (the API answers one user_id for everyone?)",
            )
        return got

    async def event_collection(self) -> list[str]:
        alias = self._alias = self._fresh_alias()
        baseline = Event(name=self.baseline_event, time=_now(), properties={})
        before = await self.apis.ccs(alias, baseline)
        event = self._play_event()
        answer = self._answer = await self.apis.ccs(alias, event)
        got = [
            f"fresh alias {alias.tag}:{alias.id}, one {baseline.name} event -> cohorts "
            f"{_codes(before.cohorts)}",
            f"then one {event.name} event -> cohorts {_codes(answer.cohorts)}",
        ]
        expected = self.test_cohort
        if expected is None:
            entered = [c for c in answer.cohorts if c not in before.cohorts]
            if entered:
                return [*got, f"entered {_codes(entered)} with the event (no --test-cohort)"]
            if not answer.cohorts:
                raise _Fail(
                    *got,
                    "no cohorts after the event: check cohorts are active and match "
                    f"{event.name}; pass --test-cohort CODE to name the test cohort",
                )
            raise _Unproven(
                *got,
                f"could not prove the {event.name} event was collected: the user's cohorts did "
                "not change with it; pass --test-cohort CODE for a cohort it enters",
            )
        if expected in answer.cohorts and expected not in before.cohorts:
            return [*got, f"entered the test cohort {self._cohort(expected)} with the event"]
        if expected in answer.cohorts:
            raise _Unproven(
                *got,
                f"could not prove the {event.name} event was collected: the fresh user was in "
                f"the test cohort {self._cohort(expected)} before it (a cohort that "
                f"{baseline.name} enters cannot show it; --baseline-event names another event)",
            )
        raise _Fail(
            *got,
            f"the test cohort {self._cohort(expected)} is missing",
            *await self.apis.why(alias, event),
        )

    async def activations(self) -> list[str]:
        answer = self._answer
        if answer is None:
            raise _Fail("no CCS answer to check: step 2 got none")
        acts = answer.activations
        if not acts or not any(acts.values()):
            raise _Fail(
                f"cohorts {_codes(answer.cohorts)} but no activations (asked with "
                "activations=true)",
                "a cohort must be activated for a platform in the dashboard to appear",
            )
        names = self._activation_names()
        listed = ", ".join(f"{p} {_codes(c)}" for p, c in acts.items())
        mine = {p: c for p, c in acts.items() if p in names and c}
        if not mine:
            raise _Fail(
                f"activations: {listed}",
                names_line(self.platform, names, acts),
                suggestion(self.platform, acts, self._adapter_settings()),
            )
        stray = sorted({c for codes in acts.values() for c in codes} - set(answer.cohorts))
        lines = [f"activations: {listed}", names_line(self.platform, names, acts)]
        note = f"; not among the user's cohorts: {', '.join(stray)}" if stray else ""
        lines.append(
            f"{self.platform} reads {', '.join(names)}: "
            + ", ".join(f"{p} {_codes(c)}" for p, c in mine.items())
            + note
        )
        return lines

    async def contextual(self) -> list[str]:
        answer = await self.apis.ctx(self.content_url)
        acts = {p: codes for p, codes in answer.activations.items() if codes}
        listed = ", ".join(f"{p} {_codes(c)}" for p, c in acts.items()) or "(none)"
        got = f"url {self.content_url} -> activations {listed}"
        if not acts:
            said = (
                f" (cohorts {_codes(answer.cohorts)} without activations)" if answer.cohorts else ""
            )
            raise _Fail(
                got + said,
                "no contextual activations: pass --content-url with a page of yours that the "
                "workspace's contextual cohorts match, activated for a platform",
            )
        names = self._activation_names()
        mine = sorted({c for p, codes in acts.items() if p in names for c in codes})
        if not mine:
            raise _Fail(
                got,
                names_line(self.platform, names, acts),
                suggestion(self.platform, acts, self._adapter_settings()),
            )
        return [
            got,
            names_line(self.platform, names, acts),
            f"activated for {self.platform}: {_codes(mine)}",
        ]

    def _no_names(self) -> str:
        if self._activation_names():
            return ""
        return (
            f" ([adapters.{self.platform}] activation_platforms is empty: set the activation"
            " names your workspace uses for this platform)"
        )

    async def merging(self) -> list[str]:
        alias = self._alias or self._fresh_alias()
        viewer = Viewer("verify", alias.tag, alias.id, TC_GRANTED)
        registry = CollectorRegistry()
        r, ad = await self._enrich(viewer, registry)
        b, c = r.behavioral, r.contextual
        got = (
            f"{self.platform} ad request (consent {_decision(r)}): behavioral {b.source} "
            f"{_codes(b.cohorts)}, contextual {c.source} {_codes(c.cohorts)} -> "
            f"{_keyvalues(r.keyvalues) or '(none)'}"
        )
        sent = {v for values in r.keyvalues.values() for v in values}
        missing = [x for x in (*b.cohorts, *c.cohorts) if x not in sent]
        unchanged = r.request is None or r.request == ad
        if not b.cohorts or not c.cohorts or missing or unchanged:
            why = []
            if not b.cohorts:
                why.append(f"no behavioral cohorts for {self.platform} ({b.source})")
            if not c.cohorts:
                why.append(f"no contextual cohorts for {self.platform} ({c.source})")
            if missing:
                why.append(f"not in the key-values: {', '.join(missing)}")
            if unchanged:
                why.append("the ad request was not changed" + self._no_names())
            raise _Fail(got, "; ".join(why))
        if ad.method != "GET":
            return [got, f"{ad.method} body gained {_keyvalues(r.keyvalues)}"]
        change = UrlChange(ad.url, r.url)
        return [got, f"URL gained {change.param_after}"]

    async def consent_gating(self) -> list[str]:
        alias = self._fresh_alias()
        viewer = Viewer("verify", alias.tag, alias.id, TC_PURPOSE1_DENIED)
        registry = CollectorRegistry()
        sandbox_before = self.sandbox.calls["ccs"] if self.sandbox is not None else 0
        r, _ = await self._enrich(viewer, registry)
        metric = sample_sum(registry, "cohortkv_upstream_seconds_count", api="ccs")
        if self.sandbox is not None:
            ccs = self.sandbox.calls["ccs"] - sandbox_before
            counted = f"CCS calls +{ccs} (sandbox counter; enricher metric +{metric:.0f})"
        else:
            ccs = int(metric)
            counted = f'CCS calls +{ccs} (cohortkv_upstream_seconds_count{{api="ccs"}})'
        c = r.contextual
        got = [
            f"consent {_decision(r)}: behavioral {r.behavioral.source}, {counted}",
            f"contextual {c.source} {_codes(c.cohorts)} -> {_keyvalues(r.keyvalues) or '(none)'}",
        ]
        why = []
        if r.consent.allowed:
            why.append("a TC string without Purpose 1 was taken as consent")
        if ccs or r.behavioral.source != "skipped":
            why.append("the CCS API was called for an unconsented user")
        if not c.cohorts:
            why.append(f"no contextual cohorts reached the ad request ({c.source})")
        if why:
            raise _Fail(*got, "; ".join(why))
        return got

    async def _enrich(
        self, viewer: Viewer, registry: CollectorRegistry
    ) -> tuple[EnrichResult, AdRequest]:
        from plugin.enricher import Enricher

        video = Video(
            "cohortkv-verify", "cohortkv verification", (), 60, self.content_url, "verify"
        )
        ad = ad_request(self.platform, viewer, video, PREROLL, 1)
        props = {"video_id": video.video_id, "title": video.title}
        context = Context(content=Content(url=video.url, properties=props))
        budget = max(self.config.budget_ms, MIN_ENRICH_BUDGET_MS)
        async with Enricher(self.config, registry=registry) as enricher:
            result = await enricher.enrich(ad, context, platform=self.platform, budget_ms=budget)
        return result, ad

    # -- helpers --------------------------------------------------------------------------

    def _fresh_alias(self) -> Alias:
        return Alias(tag=self.alias_tag, id=str(uuid.uuid4()).upper())

    def _play_event(self) -> Event:
        return Event(
            name=self._adapter().play_event,
            time=_now(),
            properties={"video_id": "cohortkv-verify", "title": "cohortkv verification"},
        )

    def _activation_names(self) -> tuple[str, ...]:
        return self._adapter().activation_platforms

    def _adapter_settings(self) -> dict[str, Any]:
        table = self.config.adapters.get(self.platform, {})
        return dict(table) if isinstance(table, dict) else {}

    def _adapter(self) -> Adapter:
        return adapter_by_name(build_adapters(adapter_settings(self.config)), self.platform)

    def _cohort(self, code: str) -> str:
        if self.sandbox is not None:
            for c in self.sandbox.state.workspace.cohorts:
                if c.code == code:
                    return f"{code} ({c.name})"
        return code


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def names_line(platform: str, names: tuple[str, ...], activations: dict[str, list[str]]) -> str:
    """The activation names an answer carried, and which of them the platform reads."""
    carried = [p for p, codes in activations.items() if codes]
    read = [n for n in names if n in carried]
    absent = [n for n in names if n not in carried]
    line = (
        f"activation names in the answer: {', '.join(carried) or '(none)'}; "
        f"{platform} reads {', '.join(read) or 'none of them'}"
    )
    if absent:
        line += f" (configured, not in this answer: {', '.join(absent)})"
    return line


def suggestion(platform: str, activations: dict[str, list[str]], table: dict[str, Any]) -> str:
    """What to configure when none of an answer's activation names is the platform's."""
    carried = ", ".join(f'"{p}"' for p, codes in activations.items() if codes)
    where = f"[adapters.{platform}] activation_platforms"
    if table.get("scope") == "bidders":
        where = f"[adapters.{platform}.bidders]"
    return (
        f"none for {platform}: set {where} to the names your dashboard activates for it,"
        f" e.g. [{carried}]"
    )


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _codes(codes: Any) -> str:
    return "[" + ", ".join(str(c) for c in codes) + "]"


def _keyvalues(kv: dict[str, list[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in kv.items())


def _decision(r: EnrichResult) -> str:
    return f"{'allowed' if r.consent.allowed else 'denied'} ({r.consent.reason})"


def verification_cohort(workspace: Workspace) -> str | None:
    """The code of the workspace's verification cohort (`Verification: …`), if it has one."""
    for c in workspace.cohorts:
        if c.name.startswith(VERIFICATION_PREFIX):
            return str(c.code)
    return None


def report(steps: list[Step], out: IO[str], style: Style, header: list[list[str]]) -> None:
    s = style
    out.write(s("cohortkv verify", "bold") + ": the Direct API verification steps\n")
    for line in table(header, indent="  "):
        out.write(line + "\n")
    out.write("\n")
    colour: dict[Verdict, Color] = {"PASS": "green", "FAIL": "red", "UNPROVEN": "yellow"}
    for step in steps:
        verdict = s(step.verdict, "bold", colour[step.verdict])
        out.write(f"  {step.number}  {verdict}  {step.title}\n")
        for line in step.evidence:
            out.write(f"           {line}\n")
    passed = sum(1 for st in steps if st.passed)
    unproven = sum(1 for st in steps if st.verdict == "UNPROVEN")
    summary = f"{passed} of {len(steps)} steps passed"
    if unproven:
        summary += f" ({unproven} could not be proven)"
    out.write("\n" + s(summary, "bold", "green" if passed == len(steps) else "red") + "\n")


# --- command line ------------------------------------------------------------------------------


HELP = "run the Direct API verification steps against an API"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the Direct API verification steps (identity, event collection, activations, "
        "contextual, merging, consent gating) against an API; the built-in sandbox when no "
        "API key or URL is given. Exit status 1 when a step fails."
    )
    add_api_flags(parser)
    parser.add_argument(
        "--platform", choices=PLATFORMS, default="gam", help="ad server to check (default: gam)"
    )
    parser.add_argument(
        "--test-cohort",
        metavar="CODE",
        help="cohort a fresh user must enter after one play event (default: the sandbox "
        "workspace's verification cohort; against another API, any cohort counts)",
    )
    parser.add_argument(
        "--content-url",
        metavar="URL",
        default=DEFAULT_CONTENT_URL,
        help=f"content URL with contextual cohorts (default: {DEFAULT_CONTENT_URL})",
    )
    parser.add_argument(
        "--baseline-event",
        metavar="NAME",
        default=DEFAULT_BASELINE_EVENT,
        help="event that shows a fresh user's cohorts before the verification event "
        f"(default: {DEFAULT_BASELINE_EVENT}); it must not enter the test cohort",
    )
    parser.add_argument(
        "--alias-tag",
        metavar="TAG",
        default=DEFAULT_ALIAS_TAG,
        help=f"identifier tag configured in the workspace (default: {DEFAULT_ALIAS_TAG})",
    )
    parser.add_argument("--no-color", action="store_true", help="plain output, no ANSI colour")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    from plugin.sandbox import start_sandbox

    config = config_from_args(args)
    if not args.alias_tag.strip():
        raise UsageError("--alias-tag", "a non-empty identifier tag")
    if not args.baseline_event.strip():
        raise UsageError("--baseline-event", "a non-empty event name")
    if not args.content_url.strip() or "://" not in args.content_url:
        raise UsageError("--content-url", f"a URL such as {DEFAULT_CONTENT_URL}", args.content_url)
    sandbox = None
    if config.api_key is None:
        default = Config()
        if config.ccs_url != default.ccs_url or config.ctx_url != default.ctx_url:
            raise UsageError(
                "--api-key: required with --ccs-url/--ctx-url (a `cohortkv sandbox` takes the "
                "key 'sandbox'); with neither, the built-in sandbox is used"
            )
        sandbox = await start_sandbox()
        config = config.with_overrides(
            sandbox=False,
            api_key=sandbox.api_key,
            ccs_url=sandbox.base_url,
            ctx_url=sandbox.base_url,
        )
    try:
        test_cohort = args.test_cohort
        if test_cohort is None and sandbox is not None:
            test_cohort = verification_cohort(sandbox.state.workspace)
        verifier = Verifier(
            config,
            platform=args.platform,
            test_cohort=test_cohort,
            content_url=args.content_url,
            alias_tag=args.alias_tag.strip(),
            baseline_event=args.baseline_event.strip(),
            sandbox=sandbox,
        )
        steps = await verifier.run()
    finally:
        if sandbox is not None:
            await sandbox.close()
    where = " (in-process sandbox)" if sandbox is not None else ""
    header = [
        ["CCS API", config.ccs_url + where],
        ["Contextual API", config.ctx_url + where],
        ["platform", args.platform],
    ]
    style = Style(wants_color(sys.stdout, args.no_color))
    report(steps, sys.stdout, style, header)
    return 0 if all(st.passed for st in steps) else 1
