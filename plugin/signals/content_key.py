"""The content key: what one piece of content is called, for views and the Contextual API.

A view is one content engagement, so views are keyed by the content, and the Contextual API
needs a URL that "uniquely and deterministically identifies the active content" (Direct API
guide). The key is:

1. the content URL, when the request (or the host) names one;
2. else the platform's content id, as the deterministic URL `<platform>://<namespace>/<id>`
   (`adapters.base.ContentId`: GAM `gam://{cmsid}/{vid}`, AdsWizz
   `adswizz://episode/{episode_id}`, ...), read from the play-event properties the id
   parameters map to, so that `cohortkv_p.<property>` names content too;
3. else nothing: there is no content, so no play event and no Contextual call (`no_content`).

A zone, ad unit or placement is never content: all the episodes of a show may share one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from plugin.context import ContentIdRule


def content_key(
    url: str | None,
    properties: Mapping[str, Any],
    platform: str,
    ids: Sequence[ContentIdRule],
) -> str | None:
    """The content's key (see the module), or None when the request names no content."""
    if url:
        return url
    for rule in ids:
        ident = _id_text(properties.get(rule.property))
        if ident is None:
            continue
        namespace = None
        if rule.namespace_property is not None:
            namespace = _id_text(properties.get(rule.namespace_property))
        return f"{platform}://{quote(namespace or rule.namespace, safe='')}/{quote(ident, safe='')}"
    return None


def _id_text(value: Any) -> str | None:
    """An id as text: a non-blank string, or an integer (a typed property); else None."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
