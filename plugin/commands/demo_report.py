"""How `cohortkv demo` prints: every line fits a 100-column terminal.

Each ad request is one row: the platform, the consent decision and its reason, where each
signal's cohorts came from and why (`SignalResult.source` and `.reason`) and how long it took.
Under the row, the cohorts written (`EnrichResult.keyvalues`, exactly what went into the
request) and the one parameter that changed, cut to fit. Full URLs only with `--verbose`. The
intro says what the demo runs against and how to read a row; the legend (`demo_summary`) says
what the reasons mean, why platforms get different cohorts and why a cached answer can gain
cohorts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

import msgspec

from adapters.registry import ADAPTERS
from plugin.commands.term import Color, Style, UrlChange, clip, plain, table, visible_len
from plugin.result import ConsentDecision, EnrichResult

if TYPE_CHECKING:
    from plugin.config import Config

WIDTH = 100
"""The terminal width every line fits in (without `--verbose`)."""

PLATFORM_LABELS: dict[str, str] = {a.name: a.label or a.name for a in ADAPTERS}
"""How each platform is named on screen (`GAM`, `FreeWheel`, `AdsWizz`)."""

ROW_INDENT = "    "
DETAIL_INDENT = ROW_INDENT + "  "
COLUMNS: tuple[tuple[str, int], ...] = (
    ("platform", 9),
    ("consent", 25),
    ("behavioral", 28),
    ("contextual", 17),
    ("time", 8),
)
"""The row's columns and widths: the longest cells of the demo (`denied tcf_purpose_denied`,
`cache cache_fallback_timeout`) fit whole; a longer one is cut. 99 columns with the gaps."""

SOURCE_TEXT: dict[str, str] = {
    "live": "answered in time, by this request's call or one it shares",
    "cache": "an earlier answer",
    "skipped": "not asked",
    "none": "nothing to use",
}

REASON_TEXT: dict[str, str] = {
    "live": "this request's own call answered in time",
    "shared_call": "another request's Contextual call for the same content answered in time: "
    "one call per content (URL and properties)",
    "view_reuse": "the view's play event went out already (never twice): live, the call of the "
    "break's first request, shared; cache, the user's freshest answer, for the view's later "
    "breaks",
    "play_rejected": "the CCS API refused the view's play event (4xx): never sent again; the "
    "last good answer",
    "play_failed": "the view's play event failed twice without saying whether it landed: not "
    "sent a third time; the last good answer",
    "fresh_cache": "the content's answer is fresh (cache.contextual_ttl_s): no call",
    "cache_first": "a cached answer at once ([behavioral] wait = if_uncached); the call "
    "refreshes it",
    "cache_fallback_timeout": "the call missed the budget: the last good answer went out; the "
    "late answer still refreshes the cache",
    "cache_fallback_error": "the call failed: the last good answer went out",
    "breaker_open": "the API failed repeatedly: no call until the breaker's probe",
    "shed": "too busy to call: the last good answer, if any",
    "no_identity": "no user identifier in the request: nothing to ask the CCS API",
    "invalid_identity": "the user identifier is not valid: nothing asked",
    "no_content": "no content: no play event is possible, so behavioral is cache-only",
    "consent_denied": "no consent: no CCS call at all; contextual cohorts still flow",
    "not_recognised": "not an ad request of a known platform: it went out unchanged",
}

SOURCE_COLORS: dict[str, Color] = {
    "live": "green",
    "cache": "yellow",
    "skipped": "magenta",
    "none": "dim",
}


_SEPARATORS = ("%26", "&", ";", ",")
"""What may start a change inside a parameter: GAM's encoded `&`, FreeWheel's and AdsWizz's own."""


class Request(msgspec.Struct, frozen=True):
    """One ad request of a break: the platform's label, the URL as sent by the player or
    stitcher, and what the enricher made of it."""

    platform: str
    original: str
    result: EnrichResult


class Break(msgspec.Struct, frozen=True):
    """One ad break, requested from every platform at once."""

    label: str
    note: str
    requests: list[Request]
    calls: str
    """What the break cost the APIs, e.g. `CCS +1, Contextual +1`."""


def signal_cell(source: str, reason: str) -> str:
    """`source reason` (`cache view_reuse`), or only the source when the reason says the same
    (`live`)."""
    return source if reason == source else f"{source} {reason}"


def consent_cell(decision: ConsentDecision) -> str:
    return f"{'allowed' if decision.allowed else 'denied'} {decision.reason}"


def written(keyvalues: Mapping[str, Sequence[str]]) -> str:
    """The key-values as written, `key=v1,v2`; `nothing written` when the request went out
    unchanged."""
    if not any(keyvalues.values()):
        return "nothing written"
    return " ".join(f"{k}={','.join(v)}" for k, v in keyvalues.items() if v)


def changed_param(original: str, enriched: str, width: int) -> str:
    """The one parameter (or FreeWheel key-values) that changed, within `width` characters.

    When it does not fit, its unchanged beginning gives way first (`cust_params=...permutive
    %3D1`), then its end, before a separator (`...`)."""
    change = UrlChange(original, enriched)
    if not change.changed:
        return ""
    param = change.param_after
    name = param[: param.find("=") + 1]
    if len(param) > width and change.lead > len(name) + len("..."):
        rest = param[change.lead :]
        for sep in _SEPARATORS:
            if rest.startswith(sep):
                rest = rest[len(sep) :]
                break
        param = name + "..." + rest
    return clip(param, width, at="&;,%")


class Report:
    """Writes the demo's lines to `stream`; each fits `width` columns unless `fit=False`."""

    def __init__(
        self, stream: IO[str], *, color: bool = False, verbose: bool = False, width: int = WIDTH
    ) -> None:
        self.stream = stream
        self.s = Style(color)
        self.verbose = verbose
        self.width = width

    def __call__(self, text: str = "", *, fit: bool = True) -> None:
        if fit and visible_len(text) > self.width:
            text = clip(plain(text), self.width)
        self.stream.write(text + "\n")

    def heading(self, text: str) -> None:
        self()
        bar = "=" * max(3, self.width - 4 - len(text))
        self(self.s(f"== {text} ", "bold") + self.s(bar, "dim"))

    def rows(self, rows: Sequence[Sequence[str]], indent: str = "  ") -> None:
        for line in table(rows, indent=indent):
            self(line)

    def wrapped(self, rows: Iterable[tuple[str, str]], indent: str = "  ") -> None:
        """Label-and-text rows, the text wrapped to the width under its own column."""
        pairs = list(rows)
        if not pairs:
            return
        label_width = max(len(label) for label, _ in pairs)
        text_width = self.width - len(indent) - label_width - 2
        for label, text in pairs:
            lines = textwrap.wrap(text, text_width) or [""]
            for i, line in enumerate(lines):
                head = label if i == 0 else ""
                self(f"{indent}{head:<{label_width}}  {line}".rstrip())

    def intro(self, sandbox_url: str, config: Config, platforms: Sequence[str]) -> None:
        """What the demo runs against, with which budget and ad servers, and how to read a row."""
        o, s = self, self.s
        o(s("cohortkv demo", "bold") + ": Permutive cohorts in CTV ad requests, end to end")
        servers = ", ".join(PLATFORM_LABELS[p] for p in platforms)
        if len(platforms) > 1:
            servers += ": each ad break is requested from all of them at once"
        urls = "full URLs, before and after" if self.verbose else "--verbose: full URLs"
        o.wrapped(
            [
                (
                    "sandbox",
                    f"{sandbox_url}, the CCS and Contextual APIs in this process "
                    "(no API key, no network)",
                ),
                (
                    "budget",
                    f"{config.budget_ms} ms per ad request; behavioral and contextual cohorts "
                    f'merged under "{config.keys.behavioral}"',
                ),
                ("ad servers", servers),
                (
                    "each row",
                    "one ad request: consent, where each signal's cohorts came from and why "
                    f"(source reason), time; under it what was written ({urls}). Legend at "
                    "the end.",
                ),
            ]
        )

    # -- one ad break -------------------------------------------------------------------------

    def ad_break(self, b: Break, *, header: bool = True) -> None:
        """The break's note, the column header if asked, then two lines per ad request: the row
        and, under it, what was written (`--verbose`: and the full URLs)."""
        s = self.s
        room = self.width - len(ROW_INDENT) - len(b.label) - len(b.calls) - 6
        note = clip(b.note, room, at=" ")
        self(f"{ROW_INDENT}{s(b.label, 'bold', 'cyan')}  {note}  {s('(' + b.calls + ')', 'dim')}")
        if header:
            self(self._cells([(name, "dim") for name, _ in COLUMNS]))
        for r in b.requests:
            self(self._row(r))
            self(self._detail(r))
            if self.verbose:
                self._urls(r)

    def _cells(self, cells: Sequence[tuple[str, Color | None]]) -> str:
        """A row on the fixed columns: each cell cut to its width, the last one right-aligned."""
        out = []
        last = len(COLUMNS) - 1
        for i, ((text, color), (_, width)) in enumerate(zip(cells, COLUMNS, strict=True)):
            text = clip(text, width) if i < last else text
            shown = self.s(text, color) if color else text
            fill = " " * max(0, width - len(text))
            out.append(fill + shown if i == last else shown + fill)
        return ROW_INDENT + "  ".join(out)

    def _row(self, r: Request) -> str:
        res = r.result
        b, c = res.behavioral, res.contextual
        return self._cells(
            [
                (r.platform, None),
                (consent_cell(res.consent), "green" if res.consent.allowed else "magenta"),
                (signal_cell(b.source, b.reason), SOURCE_COLORS.get(b.source, "dim")),
                (signal_cell(c.source, c.reason), SOURCE_COLORS.get(c.source, "dim")),
                (f"{res.elapsed_ms:.1f} ms", None),
            ]
        )

    def _detail(self, r: Request) -> str:
        """The cohorts written, then the changed parameter in what room is left."""
        kv = written(r.result.keyvalues)
        room = self.width - len(DETAIL_INDENT) - len(kv) - 2
        param = changed_param(r.original, r.result.url, room) if room >= 16 else ""
        if not param:
            note = "" if r.result.url != r.original else "  (the request went out unchanged)"
            return clip(f"{DETAIL_INDENT}{kv}{note}", self.width)
        return f"{DETAIL_INDENT}{self.s(kv, 'bold')}  {self.s(param, 'dim')}"

    def _urls(self, r: Request) -> None:
        s = self.s
        change = UrlChange(r.original, r.result.url)
        self(f"{DETAIL_INDENT}{s('original', 'dim')} {r.original}", fit=False)
        shown = change.highlighted(s, "green", "bold") if change.changed else r.result.url
        self(f"{DETAIL_INDENT}{s('enriched', 'dim')} {shown}", fit=False)
