"""adapters.jsonspan against msgspec's decoder: JSON written every way a sender may write it
(whitespace, number spellings, escapes, repeated keys), and garbage."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.jsonspan import (
    SpanError,
    Splice,
    array_at,
    container_end,
    object_at,
    root_at,
    value_end,
)

WS = st.sampled_from(["", " ", "\n", "\t", "\r\n  ", "  \n\t "])


def _escape_char(c: str, how: int) -> str:
    if c == '"':
        return '\\"'
    if c == "\\":
        return "\\\\"
    if ord(c) < 0x20 or how == 1:
        if ord(c) > 0xFFFF:
            hi, lo = divmod(ord(c) - 0x10000, 0x400)
            return f"\\u{0xD800 + hi:04x}\\u{0xDC00 + lo:04X}"
        return f"\\u{ord(c):04x}"
    if c == "/" and how == 2:
        return "\\/"
    return c


@st.composite
def spelt_string(draw: st.DrawFn, text: str) -> str:
    """`text` as a JSON string, each character plain or escaped."""
    hows = draw(st.lists(st.integers(0, 2), min_size=len(text), max_size=len(text)))
    return '"' + "".join(_escape_char(c, h) for c, h in zip(text, hows, strict=True)) + '"'


@st.composite
def spelt_number(draw: st.DrawFn) -> tuple[str, Any]:
    """A JSON number as senders spell them: `1.00`, `1E2`, `-0`, long decimals."""
    whole = draw(st.integers(-(10**20), 10**20))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        text = str(whole)
    elif kind == 1:
        text = f"{whole}.{draw(st.from_regex(r'[0-9]{1,22}', fullmatch=True))}"
    elif kind == 2:
        exp = draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+", "-"]))
        text = f"{whole}{exp}{draw(st.integers(0, 30))}"
    else:
        text = draw(st.sampled_from(["-0", "0.0", "1.00", "1E2", "0.12345678901234567891"]))
    return text, msgspec.json.decode(text.encode())


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
KEYS = st.sampled_from(["id", "user", "data", "ext", "name", "a", "é", "u\u2028"]) | TEXT


def spelt(depth: int = 0) -> st.SearchStrategy[str]:
    """Some JSON text, written the way a hand, a Java or a Go encoder might write it."""
    scalars = (
        st.sampled_from(["true", "false", "null"])
        | spelt_number().map(lambda n: n[0])
        | TEXT.flatmap(spelt_string)
    )
    if depth >= 3:
        return scalars
    return scalars | spelt_object(depth) | spelt_array(depth)


@st.composite
def spelt_object(draw: st.DrawFn, depth: int = 0) -> str:
    keys = draw(st.lists(KEYS, max_size=5))
    if keys and draw(st.booleans()):
        keys.append(keys[0])  # a repeated key
    parts = [
        draw(WS) + draw(spelt_string(k)) + draw(WS) + ":" + draw(WS) + draw(spelt(depth + 1))
        for k in keys
    ]
    return "{" + ",".join(p + draw(WS) for p in parts) + (draw(WS) if not parts else "") + "}"


@st.composite
def spelt_array(draw: st.DrawFn, depth: int = 0) -> str:
    items = [draw(WS) + draw(spelt(depth + 1)) + draw(WS) for _ in range(draw(st.integers(0, 4)))]
    return "[" + ",".join(items) + (draw(WS) if not items else "") + "]"


@st.composite
def body_object(draw: st.DrawFn) -> str:
    return draw(WS) + draw(spelt_object(1)) + draw(WS)


def _pairs(text: bytes) -> list[tuple[str, Any]]:
    """The members of a JSON object, every copy of a repeated key kept (Python's decoder)."""
    got: list[list[tuple[str, Any]]] = []
    json.loads(text, object_pairs_hook=lambda p: got.append(p) or dict(p))
    return got[-1]


@given(body_object())
def test_members_are_where_the_decoder_finds_them(text: str) -> None:
    body = text.encode()
    obj = object_at(body, root_at(body))
    assert body[obj.end :].strip() == b""
    want = _pairs(body)
    assert [m.key for m in obj.members] == [k for k, _ in want]
    for m, (_, value) in zip(obj.members, want, strict=True):
        assert json.loads(body[m.value : m.end]) == value
        assert body[m.start : m.start + 1] == b'"'
        assert body[m.end - 1 : m.end].strip() == body[m.end - 1 : m.end]  # no trailing space


@given(st.lists(spelt(1), max_size=5), WS)
def test_elements_are_where_the_decoder_finds_them(items: list[str], ws: str) -> None:
    body = ("[" + ws + f",{ws}".join(items) + ws + "]").encode()
    arr = array_at(body, 0)
    assert arr.end == len(body)
    assert [msgspec.json.decode(body[s:e]) for s, e in arr.items] == msgspec.json.decode(body)


@given(spelt(0), st.sampled_from(["", " ", ",", "]", "}", ' , "x": 1}']))
def test_both_ways_of_finding_a_value_end_agree(text: str, after: str) -> None:
    body = (text + after).encode()
    end = value_end(body, 0)
    assert end == len(text.encode())
    if text.startswith(("{", "[")):
        assert container_end(body, 0) == end


@given(body_object(), spelt(1), st.data())
def test_a_spliced_value_is_the_only_change(text: str, new: str, data: st.DataObject) -> None:
    body = text.encode()
    obj = object_at(body, root_at(body))
    splice = Splice(body)
    if obj.members:
        m = data.draw(st.sampled_from(obj.members))
        splice.replace(m.value, m.end, new.encode())
        out = splice.result()
        assert out[: m.value] == body[: m.value]
        assert out[m.value + len(new.encode()) :] == body[m.end :]
        assert json.loads(out[m.value : m.value + len(new.encode())]) == json.loads(new)
    at = obj.members[-1].end if obj.members else obj.start + 1
    splice = Splice(body)
    splice.insert(at, (b"," if obj.members else b"") + b'"zz":' + new.encode())
    out = splice.result()
    assert [k for k, _ in _pairs(out)] == [m.key for m in obj.members] + ["zz"]


@given(st.binary(max_size=64) | spelt(0).map(lambda t: t.encode()[: len(t) // 2]))
def test_garbage_raises_span_error_only(body: bytes) -> None:
    for read in (object_at, array_at, value_end):
        with contextlib.suppress(SpanError):
            read(body, 0)


def test_numbers_and_escapes_are_never_touched() -> None:
    body = b'{"bidfloor": 1.00, "x": 1E2, "y": 0.12345678901234567891, "s": "caf\\u00e9\\/"}'
    obj = object_at(body, 0)
    assert [body[m.value : m.end] for m in obj.members] == [
        b"1.00",
        b"1E2",
        b"0.12345678901234567891",
        b'"caf\\u00e9\\/"',
    ]


def test_overlapping_edits_are_refused() -> None:
    splice = Splice(b"0123456789")
    splice.replace(2, 5, b"x")
    splice.replace(4, 6, b"y")
    with pytest.raises(SpanError):
        splice.result()


def test_insertions_at_one_place_keep_their_order() -> None:
    splice = Splice(b"ab")
    splice.insert(1, b"1")
    splice.insert(1, b"2")
    splice.replace(1, 2, b"B")
    assert splice.result() == b"a12B"


def test_the_fast_way_is_in_use_with_the_msgspec_we_install() -> None:
    """Value ends come from msgspec's decoder (checked, with the tokenizer as fallback): if a
    new msgspec words or counts its error otherwise, this says the hot path got slower."""
    from adapters import jsonspan

    assert jsonspan._BIAS is not None
