"""What `cohortkv verify` checks against: the platform, the test user's alias tag, the content,
the APIs' config; how a step fails, and the words its evidence is written in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from adapters.base import Adapter
from adapters.registry import adapter_by_name, build_adapters
from plugin.config import Config, adapter_settings
from plugin.identity import Alias
from plugin.permutive.wire import Event
from plugin.result import EnrichResult

if TYPE_CHECKING:
    from plugin.sandbox import Sandbox

Verdict = Literal["PASS", "FAIL", "UNPROVEN"]


class Fail(Exception):
    """A step's failure, with the lines that explain it."""

    verdict: Verdict = "FAIL"

    def __init__(self, *lines: str) -> None:
        super().__init__(lines[0] if lines else "failed")
        self.lines = list(lines)


class Unproven(Fail):
    """The step could not show what it checks either way: not a pass."""

    verdict: Verdict = "UNPROVEN"


class Target:
    """What the steps verify: `config`'s APIs, for `platform`, with fresh users of `alias_tag`
    and `content_url`; `sandbox` is the in-process one, if any."""

    def __init__(
        self,
        config: Config,
        platform: str,
        content_url: str,
        alias_tag: str,
        sandbox: Sandbox | None,
    ) -> None:
        self.config = config
        self.platform = platform
        self.content_url = content_url
        self.alias_tag = alias_tag
        self.sandbox = sandbox

    def fresh_alias(self) -> Alias:
        return Alias(tag=self.alias_tag, id=str(uuid.uuid4()).upper())

    def play_event(self) -> Event:
        return Event(
            name=self.adapter().play_event,
            time=now(),
            properties={"video_id": "cohortkv-verify", "title": "cohortkv verification"},
        )

    def activation_names(self) -> tuple[str, ...]:
        return self.adapter().activation_platforms

    def adapter_settings(self) -> dict[str, Any]:
        table = self.config.adapters.get(self.platform, {})
        return dict(table) if isinstance(table, dict) else {}

    def adapter(self) -> Adapter:
        return adapter_by_name(build_adapters(adapter_settings(self.config)), self.platform)

    def cohort(self, code: str) -> str:
        if self.sandbox is not None:
            for c in self.sandbox.state.workspace.cohorts:
                if c.code == code:
                    return f"{code} ({c.name})"
        return code

    def no_names(self) -> str:
        if self.activation_names():
            return ""
        return (
            f" ([adapters.{self.platform}] activation_platforms is empty: set the activation"
            " names your workspace uses for this platform)"
        )


def now() -> str:
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


def describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def codes(codes: Any) -> str:
    return "[" + ", ".join(str(c) for c in codes) + "]"


def keyvalues(kv: dict[str, list[str]]) -> str:
    return " ".join(f"{k}={','.join(v)}" for k, v in kv.items())


def decision(r: EnrichResult) -> str:
    return f"{'allowed' if r.consent.allowed else 'denied'} ({r.consent.reason})"
