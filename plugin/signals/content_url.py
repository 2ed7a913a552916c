"""Content URLs as they may leave: no e-mail address or credentials in them.

A content URL goes to the Contextual API (`url`, `client.url`), into play events (`client.url`)
and into every cache and view key. Players and templates put whatever they have into it, and a
page URL can carry a viewer's address (`/watch?v=1&child_email=amy%40example.com`,
`/u/amy@example.com/watch`) or a login (`https://user:secret@host/`). So before anything uses
it, the userinfo goes, query (and fragment) fields that hold an e-mail address are removed and
path segments that hold one become `redacted`, however often they were percent-encoded; with
`[content] drop_query = true` the query and the fragment go entirely.

Content URLs recur (one page, many ad requests), so the result is kept per URL, bounded: the
hot path pays one dictionary lookup.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote

import msgspec

from adapters.params import keep
from plugin.context import Context
from plugin.observe.metrics import RateLimitedLog

log = logging.getLogger("cohortkv.content")

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]@[\w-]+(?:\.[\w-]+)+")
"""An address as people write them: a local part (its last character is enough), `@`, a
domain with at least one dot. Matched from the `@` on, so that the search stays linear: a
`+` on the local part would make a long field without an address quadratic to search."""
_MAX_DECODES = 4
"""Percent-decoding rounds before a field is searched: a value encoded twice or thrice still
shows its `@`."""
_MAX_KEPT = 4096
_MAX_KEPT_LENGTH = 2048
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
"""`scheme://authority`: the userinfo, if any, ends at the authority's last `@`."""
REDACTED_SEGMENT = "redacted"
"""What a path segment holding an e-mail address becomes: the path keeps its shape."""
REDACTION_REASONS = ("email", "userinfo")
"""`cohortkv_content_url_redactions_total{reason}`: an e-mail address (in the query, fragment
or path), or a `user:password@` before the host."""


class Cleaned(NamedTuple):
    """A content URL as it may leave, with what it lost."""

    url: str
    emails: int = 0
    """Query or fragment fields and path segments that held an e-mail address."""
    userinfo: bool = False
    """Whether a `user:password@` was removed."""


def holds_email(field: str) -> bool:
    """True when a query field (`name=value`, raw) holds an e-mail address, once decoded.
    A `+` is left as it is (form encoding reads it as a space): it may belong to the address."""
    text = field
    for _ in range(_MAX_DECODES):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return "@" in text and _EMAIL.search(text) is not None


def _without_emails(part: str) -> tuple[str, int]:
    """`part` (a query or a fragment, without its `?`/`#`) minus the fields holding an e-mail
    address, the other fields and their separators unchanged; and how many were removed."""
    if "@" not in part and "%" not in part:
        return part, 0
    fields = part.split("&")
    kept = [f for f in fields if not holds_email(f)]
    return "&".join(kept), len(fields) - len(kept)


def _clean_base(base: str) -> tuple[str, int, bool]:
    """`scheme://authority/path` without userinfo, its segments holding an e-mail address
    redacted; how many were, and whether userinfo was removed."""
    start, userinfo = 0, False
    m = _AUTHORITY.match(base)
    if m is not None:
        start = m.end()
        at = m.group(1).rfind("@")
        if at >= 0:
            base = base[: m.start(1)] + base[m.start(1) + at + 1 :]
            start -= at + 1
            userinfo = True
    path = base[start:]
    if "@" not in path and "%" not in path:
        return base, 0, userinfo
    segments = path.split("/")
    kept = [REDACTED_SEGMENT if holds_email(s) else s for s in segments]
    removed = sum(a != b for a, b in zip(segments, kept, strict=True))
    return (base[:start] + "/".join(kept) if removed else base), removed, userinfo


def clean_content_url(url: str, drop_query: bool = False) -> Cleaned:
    """The URL as it may leave, and what it lost."""
    hash_at = url.find("#")
    rest, fragment = (url, None) if hash_at < 0 else (url[:hash_at], url[hash_at + 1 :])
    q = rest.find("?")
    base, query = (rest, None) if q < 0 else (rest[:q], rest[q + 1 :])
    base, removed, userinfo = _clean_base(base)
    if drop_query:
        return Cleaned(base, removed, userinfo)
    out = base
    if query is not None:
        query, n = _without_emails(query)
        removed += n
        out += f"?{query}" if query else ""
    if fragment is not None:
        fragment, n = _without_emails(fragment)
        removed += n
        out += f"#{fragment}" if fragment else ""
    return Cleaned(out, removed, userinfo) if removed or userinfo else Cleaned(url)


def _untouched(url: str, drop_query: bool) -> bool:
    """True when `url` certainly leaves as it is: nothing to look at (the hot path)."""
    if drop_query and ("?" in url or "#" in url):
        return False
    return "@" not in url and "%" not in url


class ContentUrls:
    """`clean_content_url` for every URL that leaves, kept per URL; each URL that lost
    something is counted (`redacted(reason)`, once per use and reason) and logged at a bounded
    rate, without the URL."""

    def __init__(self, drop_query: bool, redacted: Callable[[str], None]) -> None:
        self.drop_query = drop_query
        self._redacted = redacted
        self._known: dict[str, Cleaned] = {}
        self._warn = RateLimitedLog(log)

    def peek(self, url: str | None) -> str | None:
        """The URL as it would leave, with nothing counted, logged or kept (the dry run)."""
        if not url or _untouched(url, self.drop_query):
            return url
        known = self._known.get(url)
        return (known or clean_content_url(url, self.drop_query)).url

    def __call__(self, url: str | None) -> str | None:
        if not url or _untouched(url, self.drop_query):
            return url
        known = self._known.get(url)
        if known is None:
            known = clean_content_url(url, self.drop_query)
            if len(url) <= _MAX_KEPT_LENGTH:
                keep(self._known, url, known, _MAX_KEPT)
        if known.emails:
            self._redacted("email")
            self._warn.warning(
                "content-url-email",
                "content URL: removed %d field(s) or path segment(s) holding an e-mail address",
                known.emails,
            )
        if known.userinfo:
            self._redacted("userinfo")
            self._warn.warning("content-url-userinfo", "content URL: removed its user:password@")
        return known.url


CLIENT_URLS = ("url", "referrer")
"""The members of a `client` property section that hold URLs."""


def with_clean_client(
    properties: dict[str, Any], clean: Callable[[str | None], str | None]
) -> dict[str, Any]:
    """`properties` with the URLs of its `client` section as `clean` makes them: an event's
    properties carry no e-mail address or credentials out either."""
    client = properties.get("client")
    if not isinstance(client, dict):
        return properties
    urls = {k: v for k in CLIENT_URLS if isinstance(v := client.get(k), str)}
    cleaned = {k: clean(v) for k, v in urls.items()}
    if cleaned == urls:
        return properties
    return {**properties, "client": {**client, **cleaned}}


def with_clean_url(ctx: Context, clean: Callable[[str | None], str | None]) -> Context:
    """`ctx` with its content URL (and its properties' `client` URLs) as `clean` makes them:
    the Contextual request, the play event and every cache and view key then use those."""
    url = ctx.content.url
    cleaned = clean(url)
    properties = with_clean_client(ctx.content.properties, clean)
    if cleaned == url and properties is ctx.content.properties:
        return ctx
    content = msgspec.structs.replace(ctx.content, url=cleaned, properties=properties)
    return msgspec.structs.replace(ctx, content=content)
