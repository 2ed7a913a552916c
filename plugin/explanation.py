"""What the explain page shows about one ad request: the dry run's findings, as plain structs
(`plugin.dryrun` fills them, `plugin.dryrun_text` puts them in words)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from plugin.request import AdRequest
from plugin.result import ConsentDecision

Api = Literal["ccs", "contextual"]


class CohortRow(msgspec.Struct, frozen=True):
    code: str
    name: str | None
    activated: bool
    """Activated for one of the platform's `activation_platforms`."""
    written: bool


class SignalView(msgspec.Struct):
    source: str
    """`live`, `cache`, `none`, `skipped`, or `not_asked` (dry run: the API would be asked)."""
    reason: str
    cohorts: list[CohortRow] = []
    note: str = ""


class Ask(msgspec.Struct):
    """One API call the enricher would make for this request, and, after a run, how it went."""

    api: Api
    would_call: bool
    why_not: str | None = None
    request: Any = None
    """The body as it would go out (JSON), when there is one."""
    called: bool = False
    outcome: str | None = None
    """`ok`, or the failure kind (`auth`, `timeout`, `http_5xx`, ...)."""
    elapsed_ms: float | None = None
    note: str = ""


class Read(msgspec.Struct):
    """What cohortkv reads out of the request (and the host's context on top)."""

    identity: Any
    identity_problem: str | None
    limit_ad_tracking: bool
    consent_signals: Any
    host_consent: Any
    content: dict[str, Any]
    session: dict[str, Any]
    view: dict[str, Any]


class Explanation(msgspec.Struct):
    mode: Literal["dry_run", "run"]
    platform: str | None
    recognised: bool
    unrecognised: str | None = None
    read: Read | None = None
    consent: ConsentDecision | None = None
    asks: list[Ask] = []
    behavioral: SignalView | None = None
    contextual: SignalView | None = None
    activation_platforms: list[str] = []
    keyvalues: dict[str, list[str]] = {}
    not_written: list[str] = []
    """Values the signals gave that the platform could not carry (a length budget, ...)."""
    before: AdRequest | None = None
    after: AdRequest | None = None
    summary: list[str] = []
    notes: list[str] = []
    adapter_errors: list[str] = []
