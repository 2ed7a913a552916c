"""How deep a JSON text nests, found before decoding it: decoding (or walking) thousands of
levels ends in a RecursionError. Used by the JSON API's bodies (`plugin.serve.validate`) and a
caller's `X-Cohortkv-Properties` header (`plugin.overrides`) alike."""

from __future__ import annotations

import itertools
import re

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused before decoding: no real body comes
near it, and decoding (or walking) thousands of levels ends in a RecursionError."""

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_AS_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text `raw` nests arrays and objects more than `limit` levels deep.

    No more than `limit` opening brackets cannot (two `count`s: the usual case). Otherwise
    escapes and string contents are taken out, the brackets left become +1/-1 steps, and the
    depth is the largest running sum: C loops over the bytes, and one C-level iteration per
    bracket, well below what decoding the same text costs. Text that is not JSON may get
    either answer; the decoder refuses it next.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    s = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")  # strings without brackets
    if b'"' in s:  # strings with brackets: what is between quotes 2k and 2k+1 goes
        s = b"".join(s.split(b'"')[::2])
    steps = s.translate(_AS_STEPS)
    if b"\x01" * (limit + 1) in steps:
        return True
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0) > limit
