"""Plain terminal output for the demo and verify commands: aligned columns, optional colour.

Colour is plain ANSI and only when the output is a terminal, `NO_COLOR` is unset (or empty, as
https://no-color.org says) and the person did not pass `--no-color`: piped output, logs and
tests see plain text with the same layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import IO, Literal

Color = Literal["bold", "dim", "red", "green", "yellow", "blue", "magenta", "cyan"]

_CODES: dict[str, str] = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SEPARATORS = "?&;"


def wants_color(stream: IO[str], no_color_flag: bool = False) -> bool:
    if no_color_flag or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Style:
    """Paints text when enabled; returns it untouched otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *colors: Color) -> str:
        if not self.enabled or not colors or not text:
            return text
        codes = ";".join(_CODES[c] for c in colors)
        return f"\x1b[{codes}m{text}\x1b[0m"


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def plain(text: str) -> str:
    """`text` without its colour codes."""
    return _ANSI.sub("", text)


def pad(text: str, width: int) -> str:
    """Left-aligned to `width` visible characters, whatever colour codes it holds."""
    return text + " " * max(0, width - visible_len(text))


def clip(text: str, width: int, mark: str = "...", *, at: str = "") -> str:
    """Plain `text` cut to at most `width` characters, ending in `mark` when it was cut; with
    `at`, the cut falls before one of those characters when one is near (a whole cohort id
    rather than half of one)."""
    if len(text) <= width:
        return text
    if width <= len(mark):
        return text[: max(0, width)]
    end = width - len(mark)
    if at:
        near = max(text.rfind(c, 0, end + 1) for c in at)
        if near >= end // 2:
            end = near
    return text[:end] + mark


def table(rows: Sequence[Sequence[str]], indent: str = "", gap: str = "  ") -> list[str]:
    """Rows as aligned lines; the last column is not padded (it may be long)."""
    if not rows:
        return []
    ncols = max(len(r) for r in rows)
    widths = [0] * ncols
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], visible_len(cell))
    lines = []
    for row in rows:
        cells = [pad(cell, widths[i]) for i, cell in enumerate(row[:-1])]
        cells.append(row[-1] if row else "")
        lines.append((indent + gap.join(cells)).rstrip())
    return lines


class UrlChange:
    """Where an enriched URL differs from the original.

    `inserted` is the exact span that differs (`after[start:end]` replacing `before[start:b_end]`);
    `param_before`/`param_after` widen it to whole parameters (between `?`, `&`, `;`), which is
    what a person wants to compare: `cust_params=a%3Db` → `cust_params=a%3Db%26permutive%3D1`.
    `lead` is how much of `param_after` comes before the change (`cust_params=a%3Db`: 17).
    """

    __slots__ = (
        "after",
        "b_end",
        "before",
        "end",
        "lead",
        "param_after",
        "param_before",
        "start",
    )

    def __init__(self, before: str, after: str) -> None:
        self.before = before
        self.after = after
        limit = min(len(before), len(after))
        p = 0
        while p < limit and before[p] == after[p]:
            p += 1
        s = 0
        while s < limit - p and before[-1 - s] == after[-1 - s]:
            s += 1
        self.start = p
        self.end = len(after) - s
        self.b_end = len(before) - s
        # Widen to parameter boundaries: the common prefix and suffix are the same text in both.
        # A change that starts (ends) with a separator is whole parameters already.
        inserted = after[p : self.end]
        lo = p
        if not inserted.startswith(tuple(_SEPARATORS)):
            while lo > 0 and before[lo - 1] not in _SEPARATORS:
                lo -= 1
        tail = before[self.b_end :]
        hi = 0
        if not inserted.endswith(tuple(_SEPARATORS)):
            while hi < len(tail) and tail[hi] not in _SEPARATORS:
                hi += 1
        self.param_before = before[lo : self.b_end + hi].strip(_SEPARATORS)
        widened = after[lo : self.end + hi]
        self.param_after = widened.strip(_SEPARATORS)
        stripped = len(widened) - len(widened.lstrip(_SEPARATORS))
        self.lead = max(0, p - lo - stripped)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def highlighted(self, style: Style, *colors: Color) -> str:
        """The enriched URL in full with the changed span painted."""
        a = self.after
        return a[: self.start] + style(a[self.start : self.end], *colors) + a[self.end :]


def milliseconds(value: float) -> str:
    return f"{value:6.1f} ms"
