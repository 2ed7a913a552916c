"""An ad request before and after enrichment, as marked segments the explain page can show.

A URL is compared parameter by parameter (split on `&` and `;`, FreeWheel's sections), a body
line by line after pretty-printing its JSON, so that exactly the parameter or member that
changed is marked. Only text goes out: the page puts it in the DOM as text, never as markup.
"""

from __future__ import annotations

import difflib
import re
from typing import Any
from urllib.parse import unquote

import msgspec

from plugin.request import AdRequest

Segment = tuple[str, str]
"""(text, mark): mark is "" (unchanged), "add" (only after) or "del" (only before)."""

_SEPARATORS = re.compile(r"([&;])")


def request_diff(before: AdRequest, after: AdRequest) -> dict[str, Any]:
    """`{"method", "url", "kind": "url" | "body", "before": [...], "after": [...],
    "changes": [...]}`; `changes` lists each written parameter, percent-decoded."""
    if before.method != "GET" or before.body or after.body:
        a, b = _lines(before.body), _lines(after.body)
        old, new = _marked(a, b, lines=True)
        return {
            "method": after.method,
            "url": after.url,
            "kind": "body",
            "before": old,
            "after": new,
            "changes": [{"name": "body", "after": text.strip()} for text, m in new if m],
        }
    head_a, a = _tokens(before.url)
    head_b, b = _tokens(after.url)
    old, new = _marked(a, b)
    return {
        "method": after.method,
        "url": after.url,
        "kind": "url",
        "before": [(head_a, ""), *old],
        "after": [(head_b, ""), *new],
        "changes": _changes(a, b),
    }


def _tokens(url: str) -> tuple[str, list[str]]:
    head, sep, query = url.partition("?")
    return head + sep, [t for t in _SEPARATORS.split(query) if t] if query else []


def _lines(body: bytes) -> list[str]:
    if not body:
        return []
    try:
        text = msgspec.json.format(body, indent=2).decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace")
    return text.splitlines(keepends=True)


def _marked(a: list[str], b: list[str], lines: bool = False) -> tuple[list[Segment], list[Segment]]:
    """Segments of `a` and `b`. `lines` of JSON are compared without a trailing comma, so
    that the member before an added one is not marked for the comma it gained."""
    old: list[Segment] = []
    new: list[Segment] = []
    ka, kb = ([_key(t) for t in a], [_key(t) for t in b]) if lines else (a, b)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
        if op == "equal":
            old.append(("".join(a[i1:i2]), ""))
            new.append(("".join(b[j1:j2]), ""))
            continue
        if i2 > i1:
            old.append(("".join(a[i1:i2]), "del"))
        if j2 > j1:
            new.append(("".join(b[j1:j2]), "add"))
    return old, new


def _key(token: str) -> str:
    return token.rstrip().removesuffix(",")


def _changes(a: list[str], b: list[str]) -> list[dict[str, str | None]]:
    before = {name: value for name, _, value in (t.partition("=") for t in a)}
    out: list[dict[str, str | None]] = []
    seen = set(a)
    for token in b:
        if token in seen or token in ("&", ";"):
            continue
        name, _, value = token.partition("=")
        was = before.get(name)
        out.append(
            {
                "name": unquote(name),
                "before": unquote(was) if was is not None else None,
                "after": unquote(value),
            }
        )
    return out
