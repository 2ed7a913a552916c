"""Where JSON members and array elements lie in a body, so that a writer can splice.

A bid request is rewritten by cutting new members into its bytes, never by decoding and
encoding it again: a re-encoder changes number spellings (`1.00`, `1E2`, long decimals a Java
bidder reads as BigDecimal), whitespace, escapes and, with repeated keys, which copy survives.
This module finds the byte spans of one object's members (`object_at`) or one array's elements
(`array_at`) without building the values, and `Splice` applies non-overlapping edits.

It expects a body that has already been decoded once (msgspec validates JSON and UTF-8), but
never trusts it: anything it cannot read raises `SpanError`, never another exception or a loop.
A value's end is found by msgspec's C decoder where it can be: decoding from the value's first
byte stops at its end and reports the first trailing byte, which is checked; when that check
fails (another msgspec's wording, say), a small tokenizer over the bytes does the same.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_SCALAR = re.compile(rb"[^,\]}: \t\n\r\[{\"]+")
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_WHITESPACE = b" \t\n\r"
_QUOTE, _COLON, _COMMA = 0x22, 0x3A, 0x2C
_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_ARRAY, _CLOSE_ARRAY = 0x7B, 0x7D, 0x5B, 0x5D
_CLOSERS = frozenset((_COMMA, _CLOSE_OBJECT, _CLOSE_ARRAY))


class SpanError(ValueError):
    """The bytes at a position are not the JSON expected there."""


class Member(NamedTuple):
    key: str
    """The member's name, decoded (escapes resolved)."""
    start: int
    """Offset of the name's opening quote."""
    value: int
    """Offset of the value's first byte."""
    end: int
    """One past the value's last byte."""


class Obj(NamedTuple):
    start: int
    """Offset of `{`."""
    end: int
    """One past `}`."""
    members: tuple[Member, ...]


class Arr(NamedTuple):
    start: int
    """Offset of `[`."""
    end: int
    """One past `]`."""
    items: tuple[tuple[int, int], ...]
    """Each element's (first byte, one past its last byte)."""


def _ws(buf: bytes, pos: int) -> int:
    m = _WS.match(buf, pos)
    assert m is not None  # `*` always matches
    return m.end()


def _at(buf: bytes, pos: int) -> int:
    if pos >= len(buf):
        raise SpanError(f"unexpected end at byte {pos}")
    return buf[pos]


def string_end(buf: bytes, pos: int) -> int:
    m = _STRING.match(buf, pos)
    if m is None:
        raise SpanError(f"expected a string at byte {pos}")
    return m.end()


def value_end(buf: bytes, pos: int, view: memoryview | None = None) -> int:
    """One past the last byte of the JSON value that starts at `pos`."""
    c = _at(buf, pos)
    if c == _QUOTE:
        return string_end(buf, pos)
    if c in (_OPEN_OBJECT, _OPEN_ARRAY):
        end = _decoded_end(buf, pos, view if view is not None else memoryview(buf))
        return end if end is not None else container_end(buf, pos)
    m = _SCALAR.match(buf, pos)
    if m is None:
        raise SpanError(f"expected a value at byte {pos}")
    return m.end()


_SKIP = msgspec.json.Decoder(msgspec.Raw)
"""Validates a value without building it."""


def _reported(text: memoryview | bytes) -> int | None:
    """The offset msgspec's error names for the first trailing byte after the value `text`
    starts with; -1 when there is none; None when it fails otherwise (or says it otherwise)."""
    try:
        _SKIP.decode(text)
    except msgspec.DecodeError as e:
        m = _TRAILING.search(str(e))
        return None if m is None else int(m.group(1))
    return -1


def _calibrate() -> int | None:
    """How far past the trailing byte msgspec's reported offset lies (0.23 reports one past
    it); None, and the tokenizer only, if its wording or counting is not what we know."""
    probes = ((b"[[]] ,", 5), (b'{"a":{}}}', 8), (b"[]\n]", 3))
    bias = {(r if (r := _reported(text)) is not None else -100) - at for text, at in probes}
    found = bias.pop() if len(bias) == 1 else None
    return found if found in (0, 1) else None


_BIAS = _calibrate()


def _decoded_end(buf: bytes, pos: int, view: memoryview) -> int | None:
    """The container's end as msgspec finds it, or None when its answer cannot be checked."""
    if _BIAS is None:
        return None
    reported = _reported(view[pos:])
    if reported is None:
        return None
    after = len(buf) if reported < 0 else pos + reported - _BIAS
    end = after
    while end > pos and buf[end - 1] in _WHITESPACE:
        end -= 1
    closer = _CLOSE_OBJECT if buf[pos] == _OPEN_OBJECT else _CLOSE_ARRAY
    if end <= pos or buf[end - 1] != closer or (after < len(buf) and buf[after] not in _CLOSERS):
        return None
    return end


def container_end(buf: bytes, pos: int) -> int:
    """One past the `}` or `]` that closes the container opened at `pos` (the tokenizer)."""
    depth = 0
    for m in _TOKEN.finditer(buf, pos):
        c = buf[m.start()]
        if c == _QUOTE:
            continue
        if c in (_OPEN_OBJECT, _OPEN_ARRAY):
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    raise SpanError(f"container at byte {pos} is not closed")


def decode_key(raw: bytes) -> str:
    """A member name from its quoted bytes."""
    if b"\\" not in raw:
        try:
            return raw[1:-1].decode()
        except UnicodeDecodeError:
            raise SpanError("member name is not UTF-8") from None
    try:
        key = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise SpanError("member name is not a JSON string") from None
    if not isinstance(key, str):
        raise SpanError("member name is not a string")
    return key


_HEAD = re.compile(rb'[ \t\n\r]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\n\r]*:[ \t\n\r]*', re.S)
_NEXT_MEMBER = re.compile(rb"[ \t\n\r]*([,}])")
_NEXT_ITEM = re.compile(rb"[ \t\n\r]*([,\]])[ \t\n\r]*")


def object_at(buf: bytes, pos: int, view: memoryview | None = None) -> Obj:
    """The members of the object whose `{` is at `pos`."""
    if _at(buf, pos) != _OPEN_OBJECT:
        raise SpanError(f"expected an object at byte {pos}")
    view = view if view is not None else memoryview(buf)
    members: list[Member] = []
    i = _ws(buf, pos + 1)
    if _at(buf, i) == _CLOSE_OBJECT:
        return Obj(pos, i + 1, ())
    while True:
        head = _HEAD.match(buf, i)
        if head is None:
            raise SpanError(f"expected a member at byte {i}")
        value = head.end()
        end = value_end(buf, value, view)
        members.append(Member(decode_key(head.group(1)), head.start(1), value, end))
        after = _NEXT_MEMBER.match(buf, end)
        if after is None:
            raise SpanError(f"expected ',' or '}}' at byte {end}")
        if buf[after.start(1)] == _CLOSE_OBJECT:
            return Obj(pos, after.end(), tuple(members))
        i = after.end()


def array_at(buf: bytes, pos: int, view: memoryview | None = None) -> Arr:
    """The elements of the array whose `[` is at `pos`."""
    if _at(buf, pos) != _OPEN_ARRAY:
        raise SpanError(f"expected an array at byte {pos}")
    view = view if view is not None else memoryview(buf)
    items: list[tuple[int, int]] = []
    i = _ws(buf, pos + 1)
    if _at(buf, i) == _CLOSE_ARRAY:
        return Arr(pos, i + 1, ())
    while True:
        end = value_end(buf, i, view)
        items.append((i, end))
        after = _NEXT_ITEM.match(buf, end)
        if after is None:
            raise SpanError(f"expected ',' or ']' at byte {end}")
        if buf[after.start(1)] == _CLOSE_ARRAY:
            return Arr(pos, after.start(1) + 1, tuple(items))
        i = after.end()


def root_at(buf: bytes) -> int:
    """Offset of the body's first value (after leading whitespace)."""
    return _ws(buf, 0)


class Splice:
    """Edits to one body, applied together: each replaces `buf[start:end]` (an insertion when
    they are equal). Edits must not overlap; insertions at one offset keep their order."""

    __slots__ = ("buf", "edits")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.edits: list[tuple[int, int, int, bytes]] = []

    def replace(self, start: int, end: int, text: bytes) -> None:
        self.edits.append((start, end, len(self.edits), text))

    def insert(self, at: int, text: bytes) -> None:
        self.replace(at, at, text)

    def result(self) -> bytes:
        if not self.edits:
            return self.buf
        out: list[bytes] = []
        pos = 0
        for start, end, _, text in sorted(self.edits):
            if start < pos:
                raise SpanError("overlapping edits")
            out.append(self.buf[pos:start])
            out.append(text)
            pos = end
        out.append(self.buf[pos:])
        return b"".join(out)
