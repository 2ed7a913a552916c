"""What the proxy sends the ad server besides the URL: the headers it passes on, and the body.

Only the listed request headers go on (no cookies, no `Authorization`, no `X-Cohortkv-*`);
`X-Forwarded-For` gets the caller's address appended. A POST body goes out matching its
`Content-Encoding`: as sent when the adapter wrote nothing, else encoded again with the codings
it came in (`plugin.serve.encoding`).

Header values that are not UTF-8 arrive from aiohttp's parser as surrogates, which cannot be
written as UTF-8 text (`caf\\xe9\\xff` would go out as `caf`). They are read as ISO-8859-1,
HTTP's historic charset, so that every character goes on (in UTF-8), and counted.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from plugin.observe.metrics import RateLimitedLog
from plugin.request import AdRequest
from plugin.reserved import is_text
from plugin.serve.encoding import encode
from plugin.serve.intake import Body
from plugin.serve.limits import REQUEST_ID, REQUEST_ID_HEADER

FORWARDED_HEADERS: tuple[str, ...] = (
    "User-Agent",
    "X-Device-User-Agent",
    "X-Device-IP",
    "X-Device-Referer",
    "Referer",
    "Accept",
    "Accept-Language",
    "Accept-Encoding",
    "traceparent",
    "tracestate",
    "baggage",
)
"""Request headers passed on to the ad server (X-Forwarded-For is extended, not just passed)."""
_FORWARDED = {name.lower(): name for name in FORWARDED_HEADERS}
BODY_HEADERS: tuple[str, ...] = ("Content-Type", "Content-Encoding")
"""Headers that describe a POST body: passed on with it."""

OutBody = tuple[bytes, list[tuple[str, str]]]
"""The body that goes to the ad server, and the headers that describe it."""


def ad_request(request: web.Request, url: str, body: Body | None) -> AdRequest:
    """The ad request as the adapters read it: a body decoded (and no longer labelled with its
    coding); one that could not be decoded as it came, labelled, so that no adapter reads it."""
    if body is None:
        return AdRequest(url=url, method=request.method)
    content_type = request.headers.get("Content-Type")
    headers: list[tuple[str, str]] = [("Content-Type", content_type)] if content_type else []
    if body.plain is None and body.encoding is not None:
        headers.append(("Content-Encoding", body.encoding))
    plain = body.plain if body.plain is not None else body.raw
    return AdRequest(url=url, method=request.method, headers=tuple(headers), body=plain)


class Outgoing:
    __slots__ = ("_bad", "_warn")

    def __init__(self, bad: Callable[[str], None], warn: RateLimitedLog) -> None:
        self._bad = bad
        self._warn = warn

    def text(self, value: str) -> str:
        """A header value as aiohttp can write it: bytes that are not UTF-8 read as ISO-8859-1
        (counted), anything else as it is."""
        if value.isascii() or is_text(value):
            return value
        self._bad("header_encoding")
        self._warn.warning(
            "proxy:header_encoding", "a header value that is not UTF-8 was read as ISO-8859-1"
        )
        return value.encode("utf-8", "surrogateescape").decode("latin-1")

    def headers(self, request: web.Request) -> list[tuple[str, str]]:
        """The request's headers that go on (the first of each, as listed), one pass over
        the few a request carries rather than a look-up per listed name."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        chain: str | None = None
        for name, value in request.headers.items():
            lower = name.lower()
            listed = _FORWARDED.get(lower)
            if listed is not None:
                if listed not in seen:
                    seen.add(listed)
                    out.append((listed, self.text(value)))
            elif lower == "x-forwarded-for" and chain is None:
                chain = self.text(value)
        peer = request.remote
        if peer:
            out.append(("X-Forwarded-For", f"{chain}, {peer}" if chain else peer))
        elif chain:
            out.append(("X-Forwarded-For", chain))
        rid = request.get(REQUEST_ID)
        if rid is not None:
            out.append((REQUEST_ID_HEADER, rid))
        return out

    def body(
        self, request: web.Request, ad: AdRequest, out: AdRequest, body: Body | None
    ) -> OutBody | None:
        """The body for the ad server (`ad` is what the adapter was given, `out` what it gave
        back) and its headers. Its bytes always match its `Content-Encoding`."""
        if body is None:
            return None
        headers = [
            (name, self.text(value))
            for name, value in (
                ("Content-Type", request.headers.get("Content-Type")),
                ("Content-Encoding", body.encoding),
            )
            if value
        ]
        if out.body is ad.body:
            return body.raw, headers
        return (encode(out.body, body.forms) if body.forms else out.body), headers
