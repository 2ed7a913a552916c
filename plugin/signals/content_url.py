"""Content URLs as they may leave: no e-mail address in them, or no query at all.

A content URL goes to the Contextual API (`url`, `client.url`) and into every cache and view
key. Players and templates put whatever they have into it, and a page URL can carry a viewer's
address (`/watch?v=1&child_email=amy%40example.com`). So before anything uses it, query (and
fragment) fields that hold an e-mail address are removed, however often they were
percent-encoded; with `[content] drop_query = true` the query and the fragment go entirely.
The path is kept as it is: it names the content.

Content URLs recur (one page, many ad requests), so the result is kept per URL, bounded: the
hot path pays one dictionary lookup.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
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


def clean_content_url(url: str, drop_query: bool = False) -> tuple[str, int]:
    """The URL as it may leave, and how many fields holding an e-mail address it lost."""
    hash_at = url.find("#")
    rest, fragment = (url, None) if hash_at < 0 else (url[:hash_at], url[hash_at + 1 :])
    q = rest.find("?")
    base, query = (rest, None) if q < 0 else (rest[:q], rest[q + 1 :])
    if drop_query:
        return base, 0
    removed = 0
    out = base
    if query is not None:
        query, n = _without_emails(query)
        removed += n
        out += f"?{query}" if query else ""
    if fragment is not None:
        fragment, n = _without_emails(fragment)
        removed += n
        out += f"#{fragment}" if fragment else ""
    return (out, removed) if removed else (url, 0)


class ContentUrls:
    """`clean_content_url` for every content URL, kept per URL; each URL that lost a field is
    counted (`redacted`, once per use) and logged at a bounded rate, without the URL."""

    def __init__(self, drop_query: bool, redacted: Callable[[], None]) -> None:
        self.drop_query = drop_query
        self._redacted = redacted
        self._known: dict[str, tuple[str, int]] = {}
        self._warn = RateLimitedLog(log)

    def peek(self, url: str | None) -> str | None:
        """The URL as it would leave, with nothing counted, logged or kept (the dry run)."""
        if not url or (not self.drop_query and "?" not in url and "#" not in url):
            return url
        known = self._known.get(url)
        return (known or clean_content_url(url, self.drop_query))[0]

    def __call__(self, url: str | None) -> str | None:
        if not url or (not self.drop_query and "?" not in url and "#" not in url):
            return url
        known = self._known.get(url)
        if known is None:
            known = clean_content_url(url, self.drop_query)
            if len(url) <= _MAX_KEPT_LENGTH:
                keep(self._known, url, known, _MAX_KEPT)
        cleaned, removed = known
        if removed:
            self._redacted()
            self._warn.warning(
                "content-url-email",
                "content URL: removed %d query field(s) holding an e-mail address",
                removed,
            )
        return cleaned


def with_clean_url(ctx: Context, clean: Callable[[str | None], str | None]) -> Context:
    """`ctx` with its content URL as `clean` makes it: the Contextual request, the play event
    and every cache and view key then use that one."""
    url = ctx.content.url
    cleaned = clean(url)
    if cleaned == url:
        return ctx
    content = msgspec.structs.replace(ctx.content, url=cleaned)
    return msgspec.structs.replace(ctx, content=content)
