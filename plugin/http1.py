"""HTTP/1.1 response framing for the proxy's ad-server client (`plugin.httpclient`).

Pure functions and one small state machine, no I/O: `parse_head` reads a status line and
headers, `framing` decides how the body is delimited (RFC 9112 section 6.3), and `Body` cuts
the bytes that follow into body chunks, however the network split them. Anything a strict
reader would refuse (a bad status line, a header without a colon, a Content-Length that is not
one number, a chunk size that is not hex) raises `ProtocolError`: the proxy then answers 502
rather than pass on a response it cannot delimit.
"""

from __future__ import annotations

import re

from multidict import CIMultiDict

MAX_HEAD = 64 * 1024
"""Bytes of status line and headers at most: an ad server's answer has a few hundred."""
_MAX_SIZE_LINE = 1024
_MAX_TRAILERS = 64
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")


class ProtocolError(Exception):
    """The ad server's bytes are not an HTTP/1.1 response this client can delimit."""


class Head:
    """A response's status line and headers, as read."""

    __slots__ = ("headers", "keep_alive", "reason", "status", "version")

    def __init__(self, version: int, status: int, reason: str, headers: CIMultiDict[str]) -> None:
        self.version = version
        """The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0."""
        self.status = status
        self.reason = reason
        self.headers = headers
        # HTTP/1.0 is never kept: its keep-alive is an extension whose framing rules are loose.
        self.keep_alive = version == 1 and (
            "Connection" not in headers or "close" not in _connection_tokens(headers)
        )


def parse_head(raw: bytes) -> Head:
    """The status line and header fields of `raw` (without the blank line that ends them)."""
    line_end = raw.find(b"\r\n")
    status_line, fields = (raw, b"") if line_end < 0 else (raw[:line_end], raw[line_end:])
    status = _STATUS_LINE.fullmatch(status_line)
    if status is None:
        raise ProtocolError("status line")
    if _FIELDS.fullmatch(fields) is None:
        raise ProtocolError("header field")
    # One decode of the whole block (names are ASCII tokens, checked above), one findall.
    text = fields.decode("utf-8", "surrogateescape")
    found: list[tuple[str, str]] = _FIELD.findall(text)
    if " \r" in text or "\t\r" in text or text.endswith((" ", "\t")):  # trailing whitespace
        found = [(name, value.rstrip(" \t")) for name, value in found]
    headers: CIMultiDict[str] = CIMultiDict(found)
    reason = (status.group(3) or b"").decode("latin-1")
    return Head(status.group(1)[0] - 48, int(status.group(2)), reason, headers)


_TOKEN_RE = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([^\r\n\x00]*))?")
_FIELDS = re.compile(rb"(?:\r\n" + _TOKEN_RE + rb":[^\r\n\x00]*)*")
"""Every header line well formed: a token, a colon, a value without CR, LF or NUL."""
_FIELD = re.compile(r"\r\n(" + _TOKEN_RE.decode() + r"):[ \t]*([^\r\n\x00]*)")


def _connection_tokens(headers: CIMultiDict[str]) -> set[str]:
    return {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}


CLOSE_DELIMITED = -1
CHUNKED = -2


def framing(head: Head, method: str) -> int:
    """How the body after `head` ends: its length in bytes (0: no body), `CHUNKED`, or
    `CLOSE_DELIMITED` (it runs to the end of the connection)."""
    status = head.status
    if method == "HEAD" or status < 200 or status in (204, 304):
        return 0
    headers = head.headers
    if "Transfer-Encoding" not in headers:  # the usual answer: one plain Content-Length
        plain = headers.getall("Content-Length", None)
        if plain is not None and len(plain) == 1:
            value = plain[0]
            if 0 < len(value) <= 18 and value.isascii() and value.isdigit():
                return int(value)
    codings = headers.getall("Transfer-Encoding", ())
    if codings:
        if "Content-Length" in headers:  # a smuggling shape: which one would a peer use?
            raise ProtocolError("Transfer-Encoding with Content-Length")
        tokens = [t for v in codings for t in (p.strip().lower() for p in v.split(",")) if t]
        if tokens.count("chunked") > 1:
            raise ProtocolError("Transfer-Encoding")
        if not tokens or tokens[-1] != "chunked":
            return CLOSE_DELIMITED  # RFC 9112 6.3 (4): read until the connection closes
        return CHUNKED
    given = headers.getall("Content-Length", ())
    lengths = {piece.strip() for value in given for piece in value.split(",")}
    if not lengths:
        return CLOSE_DELIMITED
    if len(lengths) != 1:
        raise ProtocolError("Content-Length")
    (length,) = lengths
    if not length or len(length) > 18 or not set(length.encode()) <= _DIGITS:
        raise ProtocolError("Content-Length")
    return int(length)


class Body:
    """Cuts a body out of the bytes that follow a head: `feed` gives the body bytes in `data`
    (and sets `done` once the body is whole); what follows the body is left in `rest`."""

    __slots__ = ("_buf", "_left", "_state", "_trailers", "done", "length", "rest")

    def __init__(self, frame: int) -> None:
        self.length = frame if frame >= 0 else None
        """The body's length when it is delimited by one, else None."""
        self.done = frame == 0
        self.rest = b""
        self._buf = b""
        self._left = frame  # bytes left of the body, or of the current chunk
        self._state = "size" if frame == CHUNKED else "plain"
        self._trailers = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The body bytes in `data`, in order (possibly none)."""
        if self.done:
            self.rest += data
            return []
        if self._state == "plain":
            return self._plain(data)
        return self._chunked(data)

    def eof(self) -> None:
        """The connection ended: fine for a body delimited by it, else a truncated body."""
        if self._left == CLOSE_DELIMITED and self._state == "plain":
            self.done = True
        elif not self.done:
            raise ProtocolError("body cut short")

    def _plain(self, data: bytes) -> list[bytes]:
        if self._left == CLOSE_DELIMITED:
            return [data] if data else []
        if len(data) < self._left:
            self._left -= len(data)
            return [data] if data else []
        piece, self.rest = data[: self._left], data[self._left :]
        self._left = 0
        self.done = True
        return [piece] if piece else []

    def _chunked(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        while buf and not self.done:
            if self._state == "data":
                take = buf[: self._left]
                out.append(take)
                self._left -= len(take)
                buf = buf[len(take) :]
                if self._left == 0:
                    self._state = "crlf"
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_SIZE_LINE:
                    raise ProtocolError("chunk line")
                self._buf = buf
                return out
            line, buf = buf[:end], buf[end + 2 :]
            self._line(line)
        self.rest = buf
        return out

    def _line(self, line: bytes) -> None:
        state = self._state
        if state == "crlf":
            if line:
                raise ProtocolError("chunk end")
            self._state = "size"
        elif state == "size":
            size = line.split(b";", 1)[0].strip(b" \t")
            if not size or len(size) > 15 or not set(size) <= _HEX:
                raise ProtocolError("chunk size")
            self._left = int(size, 16)
            self._state = "data" if self._left else "trailer"
        elif not line:  # "trailer": the blank line after the trailer fields ends the body
            self.done = True
        else:
            self._trailers += 1
            if self._trailers > _MAX_TRAILERS:
                raise ProtocolError("trailer fields")
