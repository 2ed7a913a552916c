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
