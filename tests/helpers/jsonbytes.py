"""The bytes of a JSON body outside some of its members, read with Python's own JSON decoder
(not the adapters' reader): what a writer that splices must have left alone."""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_STEP = re.compile(r"^([^\[]+)(?:\[(name|bidders)=([^\]]+)\])?$")


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    assert m is not None
    return m.end()


def _members(text: str, i: int) -> list[tuple[str, int, int, int]]:
    """(name, start, value start, end) of the object at `i`."""
    assert text[i] == "{"
    out: list[tuple[str, int, int, int]] = []
    i = _ws(text, i + 1)
    while text[i] != "}":
        name, after = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        colon = _ws(text, after)
        assert text[colon] == ":"
        value = _ws(text, colon + 1)
        end = _DECODER.raw_decode(text, value)[1]
        out.append((name, i, value, end))
        i = _ws(text, end)
        if text[i] == ",":
            i = _ws(text, i + 1)
    return out


def _items(text: str, i: int) -> list[tuple[Any, int, int]]:
    """(decoded value, start, end) of each element of the array at `i`."""
    assert text[i] == "["
    out: list[tuple[Any, int, int]] = []
    i = _ws(text, i + 1)
    while text[i] != "]":
        value, end = _DECODER.raw_decode(text, i)
        out.append((value, i, end))
        i = _ws(text, end)
        if text[i] == ",":
            i = _ws(text, i + 1)
    return out


def _spans(text: str, at: int, path: list[str]) -> list[tuple[int, int]]:
    """The spans a changed path names: members, or array elements `[name=X]`/`[bidders=X]`."""
    m = _STEP.match(path[0])
    assert m is not None, path[0]
    name, selector, wanted = m.groups()
    if text[at] != "{":
        return []
    for key, start, value, end in _members(text, at):
        if key != name:
            continue
        if selector is None:
            return [(start, end)] if len(path) == 1 else _spans(text, value, path[1:])
        hits = [
            (s, e)
            for v, s, e in _items(text, value)
            if isinstance(v, dict)
            and (v.get("name") == wanted if selector == "name" else v.get("bidders") == [wanted])
        ]
        if len(path) == 1:
            return hits
        return [span for s, _ in hits for span in _spans(text, s, path[1:])]
    return []


def outside(body: bytes, changed: list[str]) -> str:
    """The body without the changed members (each with the comma that separates it). A path
    is dotted member names; `key[name=X]` / `key[bidders=X]` select the elements of array
    `key` whose `name` is X / whose `bidders` is `[X]`."""
    text = body.decode()
    cuts: list[tuple[int, int]] = []
    for path in changed:
        for start, end in _spans(text, _ws(text, 0), path.split(".")):
            before = len(text[:start].rstrip(" \t\n\r"))
            if text[before - 1] == ",":
                cuts.append((before - 1, end))
            else:
                after = _ws(text, end)
                cuts.append((start, _ws(text, after + 1) if text[after] == "," else end))
    out, pos = [], 0
    for start, end in sorted(cuts):
        out.append(text[pos : max(pos, start)])
        pos = max(pos, end)
    return "".join(out) + text[pos:]
