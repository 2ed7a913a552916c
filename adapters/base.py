"""The adapter interface: one ad platform's URL format, nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from plugin.context import Context

KeyValues = Mapping[str, Sequence[str]]


class Adapter(Protocol):
    """Reads a Context out of an ad request URL and writes key-values back into it.

    `parse` and `apply` never raise: a URL they cannot understand yields an empty Context, or
    comes back unchanged. Only the platform's own parameter or section is ever rewritten.
    """

    name: str
    activation_platforms: tuple[str, ...]

    def matches(self, url: str) -> bool: ...

    def parse(self, url: str) -> Context: ...

    def apply(self, url: str, keyvalues: KeyValues) -> str: ...


class FailOpen:
    """The never-raise shell every adapter shares: its public methods turn any exception from
    the platform-specific `_matches` / `_parse` / `_apply` into "not mine", an empty Context,
    or the URL unchanged. An ad request is never lost to a parser bug."""

    name: str
    default_activation_platforms: tuple[str, ...] = ()
    activation_platforms: tuple[str, ...]

    def __init__(self, activation_platforms: Sequence[str] | None = None) -> None:
        """`activation_platforms`: the API answers' platform names to read; None: defaults."""
        self.activation_platforms = (
            self.default_activation_platforms
            if activation_platforms is None
            else tuple(activation_platforms)
        )

    def matches(self, url: str) -> bool:
        try:
            return self._matches(url)
        except Exception:
            return False

    def parse(self, url: str) -> Context:
        try:
            return self._parse(url)
        except Exception:
            return Context()

    def apply(self, url: str, keyvalues: KeyValues) -> str:
        try:
            return self._apply(url, keyvalues)
        except Exception:
            return url

    def _matches(self, url: str) -> bool:
        raise NotImplementedError

    def _parse(self, url: str) -> Context:
        raise NotImplementedError

    def _apply(self, url: str, keyvalues: KeyValues) -> str:
        raise NotImplementedError
