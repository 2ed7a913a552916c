"""Reserved `cohortkv_*` query parameters: read, then removed before the ad server sees the URL.

An SSAI stitcher's URL template can only add query parameters (MediaTailor:
`&cohortkv_sid=[session.id]`), so the proxy takes these out of the query itself. Removal is
byte-precise: the query is split on `;` (FreeWheel sections) and each section on `&`; reserved
fields are dropped and everything else is joined back with the separators it had, so no other
byte moves. A section left empty stays (`a;cohortkv_sid=1;b` → `a;;b`): FreeWheel sections are
positional.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

PREFIX = "cohortkv_"
CONFLICT = "\x00conflict"
"""The value of a reserved name given twice with different values: the caller reads it as a
conflict (for consent, a denial), never as either value."""
_ENCODED_NAME = re.compile(r"(?:^|[&;])[^=&;]*%")
"""A field whose name is percent-encoded: it may spell `cohortkv_` without showing it."""

# Query parameter → what it carries. Request headers of the same meaning win over these, except
# that any consent denial wins (`plugin.serve.proxy`).
SESSION_ID = "cohortkv_sid"
USER_ID = "cohortkv_uid"
ALIAS = "cohortkv_alias"
CONSENT = "cohortkv_consent"
CONTENT_URL = "cohortkv_content_url"
VIEW_ID = "cohortkv_vid"
CLIENT_TYPE = "cohortkv_client_type"
PROPERTY_PREFIX = "cohortkv_p."
"""`cohortkv_p.<name>=<value>`: a play-event property (typed by `[events.properties]`)."""

PARAMS: tuple[str, ...] = (
    SESSION_ID,
    USER_ID,
    ALIAS,
    CONSENT,
    CONTENT_URL,
    VIEW_ID,
    CLIENT_TYPE,
)

HEADERS: dict[str, str] = {
    SESSION_ID: "X-Cohortkv-Session-Id",
    USER_ID: "X-Cohortkv-User-Id",
    ALIAS: "X-Cohortkv-Alias",
    CONSENT: "X-Cohortkv-Consent",
    CONTENT_URL: "X-Cohortkv-Content-Url",
    VIEW_ID: "X-Cohortkv-View-Id",
    CLIENT_TYPE: "X-Cohortkv-Client-Type",
}
PROPERTIES_HEADER = "X-Cohortkv-Properties"
"""A JSON object of play-event properties; the `cohortkv_p.*` parameters win over it."""


def split_reserved(query: str) -> tuple[str, dict[str, str]]:
    """The query without `cohortkv_*` fields, and those fields' percent-decoded values.

    Every field whose (percent-decoded) name starts with `cohortkv_` is removed, known or not:
    the prefix is ours. A name given twice with different values reads as `CONFLICT`. Never
    raises.
    """
    if PREFIX not in query and _ENCODED_NAME.search(query) is None:
        return query, {}
    found: dict[str, str] = {}
    sections = query.split(";")
    for i, section in enumerate(sections):
        if PREFIX not in section and "%" not in section:
            continue
        kept = []
        for field in section.split("&"):
            name, _, value = field.partition("=")
            if "%" in name:
                name = unquote(name, errors="replace")
            if name.startswith(PREFIX):
                decoded = unquote(value, errors="replace")
                if name not in found:
                    found[name] = decoded
                elif found[name] != decoded:
                    found[name] = CONFLICT
            else:
                kept.append(field)
        sections[i] = "&".join(kept)
    return ";".join(sections), found
