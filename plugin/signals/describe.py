"""What an ad request says about its content, as the play event and the Contextual request
carry it: the content key (URL, or a platform's content id), typed properties, title, client.

The same content comes back with every viewer and every ad break, so descriptions are kept,
bounded, by everything they are made from (`_signature`); a kept one is shared, and its
values that did not parse are reported again on every use, as a new one would report them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import Adapter
from plugin.config import PropertyType
from plugin.context import Context
from plugin.signals.content_key import content_key
from plugin.signals.content_properties import ContentDescription
from plugin.signals.events import typed_content_properties

Described = tuple[ContentDescription | None, tuple[str, ...]]
"""A description (None: no content) and the names of the values that did not parse."""


class ContentDescriber:
    MAX_KEPT = 4096

    def __init__(self, types: Mapping[str, PropertyType], untyped: Callable[[str], None]) -> None:
        """`types` is `[events.properties]`; `untyped` hears of each value that does not
        parse as its type (left out)."""
        self._types = types
        self._untyped = untyped
        self._kept: dict[tuple[object, ...], Described] = {}

    def __call__(self, ctx: Context, adapter: Adapter) -> ContentDescription | None:
        """None when the request names no content (no content URL, no content id)."""
        key = _signature(ctx, adapter)
        try:
            known = self._kept.get(key) if key is not None else None
        except TypeError:  # an adapter's content id rules of an unhashable type
            key = known = None
        if known is None:
            known = self.describe(ctx, adapter)
            if key is not None:
                if len(self._kept) >= self.MAX_KEPT:
                    self._kept.clear()  # full: start over (keeping is an optimisation only)
                self._kept[key] = known
        for name in known[1]:
            self._untyped(name)
        return known[0]

    def describe(self, ctx: Context, adapter: Adapter) -> Described:
        """A new description, and the names of the values that did not parse (not reported)."""
        content = ctx.content
        bad: list[str] = []
        props = self._properties(content.properties, bad.append)
        key = content_key(content.url, props, adapter.name, adapter.content_ids)
        if key is None:
            return None, tuple(bad)
        described = ContentDescription(
            key,
            props,
            title=content.title,
            client_type=content.client_type or adapter.client_type,
            section=adapter.content_section,
        )
        return described, tuple(bad)

    def _properties(self, raw: dict[str, Any], bad: Callable[[str], None]) -> dict[str, Any]:
        if not raw:
            return {}
        return typed_content_properties(raw, self._types, bad)


def _signature(ctx: Context, adapter: Adapter) -> tuple[object, ...] | None:
    """Everything a description is made from, when all of it is text (equal keys then mean
    equal inputs: no `1 == True` between a title and a flag); else None, not kept."""
    content = ctx.content
    url, title = content.url, content.title
    client_type = content.client_type or adapter.client_type
    for text in (url, title, client_type):
        if text is not None and type(text) is not str:
            return None
    raw = content.properties
    for name, value in raw.items():
        if type(name) is not str or type(value) is not str:
            return None
    if url:
        return (url, title, client_type, adapter.content_section, *raw.items())
    # No URL: the content id rules of the platform make the key.
    ids = (adapter.name, adapter.content_ids)
    return (url, title, client_type, adapter.content_section, ids, *raw.items())
