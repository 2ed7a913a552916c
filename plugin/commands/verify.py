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

Steps 1-4 talk to the APIs directly (`verify_api.py`); 5 and 6 go through the enricher, as
production traffic does (`verify_enricher.py`); `verify_target.py` holds what both check
against. With no API key and no API URL the built-in sandbox is started in-process. Each step
prints PASS, FAIL, or UNPROVEN (it could not be shown either way: not a pass) with its
evidence; anything but PASS makes the exit status 1. The API key never appears in the output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING

import msgspec

from adapters.registry import EXAMPLE_PLATFORMS
from plugin.commands.args import UsageError
from plugin.commands.config_args import add_api_flags, config_from_args
from plugin.commands.term import Color, Style, table, wants_color
from plugin.commands.verify_api import ApiSteps, VerifyApis
from plugin.commands.verify_enricher import EnricherSteps
from plugin.commands.verify_target import Fail, Target, Verdict, describe
from plugin.config import Config

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

TITLES: dict[int, str] = {
    1: "Identity: one alias gets one user_id, another alias another",
    2: "Event collection: the event puts a fresh user in the test cohort",
    3: "Activations: activations=true returns platforms and cohort ids",
    4: "Contextual signals: a known URL has contextual activations",
    5: "Signal merging: behavioral and contextual cohorts in the ad request",
    6: "Consent gating: no CCS call without consent; contextual still flows",
}


class Step(msgspec.Struct):
    number: int
    title: str
    verdict: Verdict
    evidence: list[str]

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS"


class Verifier:
    """Runs the steps against `config`'s APIs; `sandbox` is the in-process one, if any."""

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
        self.api_key: str = config.api_key
        self.target = Target(config, platform, content_url, alias_tag, sandbox)
        self.test_cohort = test_cohort
        self.baseline_event = baseline_event

    async def run(self) -> list[Step]:
        async with VerifyApis.open(self.target.config, self.api_key) as apis:
            direct = ApiSteps(self.target, apis, self.test_cohort, self.baseline_event)
            enriched = EnricherSteps(self.target)
            steps: list[tuple[int, Callable[[], Awaitable[list[str]]]]] = [
                (1, direct.identity),
                (2, direct.event_collection),
                (3, direct.activations),
                (4, direct.contextual),
                (5, lambda: enriched.merging(direct.alias)),
                (6, enriched.consent_gating),
            ]
            out = []
            for number, check in steps:
                verdict: Verdict = "PASS"
                try:
                    evidence = await check()
                except Fail as e:
                    evidence, verdict = e.lines, e.verdict
                except Exception as e:  # a step must report, never crash the others
                    evidence, verdict = [f"unexpected error: {apis.redact(describe(e))}"], "FAIL"
                out.append(Step(number, TITLES[number], verdict, evidence))
            return out


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
