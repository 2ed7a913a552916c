"""An outgoing ad request as the adapters see it: method, URL, headers and body.

URL-shaped platforms (GAM, FreeWheel, AdsWizz, plain query tags) only read and rewrite `url`;
bid requests (OpenRTB) live in `body`. The host's other headers pass through untouched.
"""

from __future__ import annotations

import msgspec

Headers = tuple[tuple[str, str], ...]


class AdRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    url: str
    method: str = "GET"
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def with_url(self, url: str) -> AdRequest:
        return self if url is self.url else msgspec.structs.replace(self, url=url)

    def with_body(self, body: bytes) -> AdRequest:
        return self if body is self.body else msgspec.structs.replace(self, body=body)


KeyValues = dict[str, list[str]]
"""Key-values as written: key → values, in the order they went into the request."""


class Applied(msgspec.Struct, frozen=True):
    """An adapter's answer to "write these key-values": the request as it goes out, and exactly
    the key-values that went into it (a length budget or a value the platform cannot carry
    means fewer than asked; a request left unchanged means none)."""

    request: AdRequest
    written: KeyValues


def as_request(request: AdRequest | str) -> AdRequest:
    """A plain URL is a GET of that URL."""
    return AdRequest(request) if isinstance(request, str) else request
