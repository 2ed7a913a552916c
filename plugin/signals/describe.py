"""What an ad request says about its content, as the play event and the Contextual request
carry it: the content key (URL, or a platform's content id), typed properties, title, client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from adapters.base import Adapter
from plugin.config import PropertyType
from plugin.context import Context
from plugin.signals.content_key import content_key
from plugin.signals.content_properties import ContentDescription
from plugin.signals.events import typed_content_properties


class ContentDescriber:
    def __init__(self, types: Mapping[str, PropertyType], untyped: Callable[[str], None]) -> None:
        """`types` is `[events.properties]`; `untyped` hears of each value that does not
        parse as its type (left out)."""
        self._types = types
        self._untyped = untyped

    def __call__(self, ctx: Context, adapter: Adapter) -> ContentDescription | None:
        """None when the request names no content (no content URL, no content id)."""
        content = ctx.content
        props = self._properties(content.properties)
        key = content_key(content.url, props, adapter.name, adapter.content_ids)
        if key is None:
            return None
        return ContentDescription(
            key,
            props,
            title=content.title,
            client_type=content.client_type or adapter.client_type,
            section=adapter.content_section,
        )

    def _properties(self, raw: dict[str, Any]) -> dict[str, Any]:
        if not raw:
            return {}
        return typed_content_properties(raw, self._types, self._untyped)
