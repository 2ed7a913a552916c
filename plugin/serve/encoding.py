"""HTTP content codings of request bodies (`Content-Encoding`): gzip and deflate, decoded with a
bound and encoded again.

A client may compress a POST body (Prebid Server accepts gzip bid requests). The sidecar reads
the raw bytes (aiohttp's own decompression is off: it would hand over plain bytes still
labelled compressed), decodes them here to read or enrich them, and when it changes the body
encodes the result with the same codings, so that what the ad server receives always matches
its `Content-Encoding`.

Decoding is incremental with a cap on the output (`zlib` `max_length`): a decompression bomb
costs at most `limit` bytes of memory before it is refused. `deflate` is the zlib format
(RFC 9110); a raw deflate stream, which some clients send instead, is read too and written back
in the form it came in. Codings may be stacked (`gzip, gzip`: applied in order, so decoded in
reverse), up to `MAX_CODINGS`.
"""

from __future__ import annotations

import zlib
from enum import Enum

MAX_CODINGS = 4
"""Stacked codings beyond this are refused as unsupported (each one is a decode pass)."""
SUPPORTED = ("gzip", "deflate", "identity")
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_STEP = 64 * 1024
"""Input fed to the decompressor at once: memory per pass stays bounded whatever the ratio."""


class Coding(Enum):
    """One applied coding, in the exact form the bytes had (for encoding them back)."""

    GZIP = _GZIP_WBITS
    ZLIB = zlib.MAX_WBITS
    RAW_DEFLATE = -zlib.MAX_WBITS


class UnsupportedCoding(ValueError):
    """A coding cohortkv does not decode (br, zstd, compress, an unknown token, too many)."""

    def __init__(self, coding: str) -> None:
        super().__init__(coding)
        self.coding = coding


class TooLarge(ValueError):
    """The decoded body would exceed the limit."""


class Malformed(ValueError):
    """The bytes are not what their coding says (truncated, corrupt, trailing garbage)."""


def parse_codings(values: list[str]) -> tuple[str, ...]:
    """The codings named by the `Content-Encoding` header lines `values`, in the order they
    were applied, `identity` and empty list elements left out; lower case. Raises
    `UnsupportedCoding` for any other token, or more than `MAX_CODINGS`."""
    out: list[str] = []
    for value in values:
        for token in value.split(","):
            name = token.strip().lower()
            if name in ("", "identity"):
                continue
            if name == "x-gzip":
                name = "gzip"
            if name not in ("gzip", "deflate"):
                raise UnsupportedCoding(name)
            out.append(name)
    if len(out) > MAX_CODINGS:
        raise UnsupportedCoding(", ".join(out))
    return tuple(out)


def decode(data: bytes, codings: tuple[str, ...], limit: int) -> tuple[bytes, tuple[Coding, ...]]:
    """`data` with `codings` undone (last applied first), never more than `limit` bytes at any
    stage, and the forms found (in application order, for `encode`)."""
    forms: list[Coding] = []
    for name in reversed(codings):
        form = _form(name, data)
        data = _inflate(data, form, limit)
        forms.append(form)
    forms.reverse()
    return data, tuple(forms)


def encode(data: bytes, forms: tuple[Coding, ...]) -> bytes:
    """`data` with `forms` applied in order: what `decode` undid, done again."""
    for form in forms:
        c = zlib.compressobj(6, zlib.DEFLATED, form.value)
        data = c.compress(data) + c.flush()
    return data


def _form(name: str, data: bytes) -> Coding:
    if name == "gzip":
        return Coding.GZIP
    # The zlib header: compression method 8, and the two bytes a multiple of 31 (RFC 1950).
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        return Coding.ZLIB
    return Coding.RAW_DEFLATE


def _inflate(data: bytes, form: Coding, limit: int) -> bytes:
    """One coding undone. gzip may hold several members one after another (as `gzip -c a b`
    writes them); anything after the last complete stream is malformed."""
    out: list[bytes] = []
    size = 0
    rest = data
    while True:
        d = zlib.decompressobj(form.value)
        pos = 0
        try:
            while not d.eof:
                if d.unconsumed_tail:
                    feed = d.unconsumed_tail
                elif pos < len(rest):
                    feed = rest[pos : pos + _STEP]
                    pos += len(feed)
                else:
                    feed = b""  # input used up: only output zlib still holds
                chunk = d.decompress(feed, limit - size + 1)
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                if not chunk and not feed:
                    break
                out.append(chunk)
        except zlib.error as e:
            raise Malformed(str(e)) from None
        if not d.eof:
            raise Malformed("truncated")
        rest = d.unused_data + rest[pos:]
        if form is not Coding.GZIP or not rest:
            break
    if rest:
        raise Malformed("trailing data")
    return b"".join(out)
