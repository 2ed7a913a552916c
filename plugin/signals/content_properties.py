"""What the play event and the Contextual request say about the content: one builder for both.

Custom cohorts are built on event properties, typically `client.url` and `client.title`
(Custom Cohorts page), and the Direct API guide has the Contextual request "mirror the
properties object from your CCS API event, omitting any user-related fields". So both are made
here from the same values:

- the play event's properties: the content properties (typed, empty values left out) with the
  title, plus `client` = `{url, domain, title, type}` (what is known), unless `[events] client`
  is false for a workspace whose schema has no `client`;
- the Contextual request: `url`, and `page_properties` = `client` (only those four members: no
  user agent, referrer or anything else a host may have put there) plus the same content
  properties under the platform's content section (`video`, `audio`).

Nothing here is user data: the identity, IP and user agent never go into either.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from plugin.permutive.wire import ContextualRequest
from plugin.signals.events import prune_empty

CLIENT_MEMBERS = ("url", "domain", "title", "type")
"""The `client` members about the content, the only ones the Contextual request carries."""


def content_domain(url: str) -> str | None:
    """The host of an http(s) content URL; None for app-scheme URLs (`myapp://podcast/1`,
    `gam://2553/v1`), whose first part is not a domain."""
    if not url[:8].lower().startswith(("http://", "https://")):
        return None
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


class ContentDescription:
    """One piece of content as the Direct API is told about it; the event and request
    themselves are made only when a call is about to go out.

    Not changed once built: one description serves every ad request about the same content
    (`plugin.signals.describe`), so what it derives (`client`) is worked out once."""

    __slots__ = ("_client", "client_type", "properties", "section", "title", "url")

    def __init__(
        self,
        url: str,
        properties: dict[str, Any],
        *,
        title: str | None = None,
        client_type: str | None = None,
        section: str = "video",
    ) -> None:
        self.url = url
        """The content key: the content URL, or the deterministic one made from its id."""
        self.properties = properties
        """Typed content properties, empty values already left out."""
        self.title = title
        self.client_type = client_type
        self.section = section
        self._client: tuple[tuple[Any, str], ...] | None = None
        """`client()` once worked out, when it holds text only (a copy is then the same)."""

    def content(self) -> dict[str, Any]:
        """The content properties with the title, without `client`."""
        props = {k: v for k, v in self.properties.items() if k != "client"}
        if self.title and "title" not in props:
            props["title"] = self.title
        return props

    def client(self) -> dict[str, Any]:
        """`client`: what the host put there, with the known members about the content
        (url, domain, title, type) set from this content. A new dict on every call."""
        known = self._client
        if known is not None:
            return dict(known)
        pruned = self._make_client()
        if all(type(v) is str for v in pruned.values()):
            self._client = tuple(pruned.items())
        return pruned

    def _make_client(self) -> dict[str, Any]:
        given = self.properties.get("client")
        out: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
        title = self.title or self.properties.get("title")
        for name, value in (
            ("url", self.url),
            ("domain", content_domain(self.url)),
            ("title", title if isinstance(title, str) else None),
            ("type", self.client_type),
        ):
            if value:
                out[name] = value
        pruned: dict[str, Any] = prune_empty(out)
        return pruned

    def event_properties(self, *, client: bool = True) -> dict[str, Any]:
        """The play event's `properties`."""
        props = self.content()
        if client:
            section = self.client()
            if section:
                props["client"] = section
        return props

    def contextual_request(self) -> ContextualRequest:
        """The Contextual request: the play event's properties minus user data."""
        client = self.client()
        page: dict[str, Any] = {"client": {k: client[k] for k in CLIENT_MEMBERS if k in client}}
        content = self.content()
        if content:
            page[self.section] = content
        return ContextualRequest(url=self.url, page_properties=page)
