"""Session and view ids for CCS events: the given ones, or derived deterministically.

The play event (sent by the enricher with the first ad request of a view) and the completion
event (sent later through `track` or the sidecar's events API) must carry the same view id, so
both derive it here.
"""

from __future__ import annotations

import uuid

from plugin.identity import is_uuid4


def session_view(
    ns: uuid.UUID,
    identity_key: str,
    session_id: str | None,
    view_id: str | None,
    ssai_session_id: str | None,
    content_url: str | None,
) -> tuple[str | None, str | None]:
    """Given ids are kept when they are UUIDv4s, else mapped with uuid5; from an SSAI session
    id (with the content URL) both are derived; with a content URL alone a view is one user
    watching one content URL, so that the ad breaks of one playback send one play event."""
    if session_id is not None and not is_uuid4(session_id):
        session_id = str(uuid.uuid5(ns, "session:" + session_id))
    if view_id is not None and not is_uuid4(view_id):
        view_id = str(uuid.uuid5(ns, "view:" + view_id))
    content = content_url or ""
    if ssai_session_id:
        session_id = session_id or str(uuid.uuid5(ns, "ssai-session:" + ssai_session_id))
        view_id = view_id or str(uuid.uuid5(ns, f"ssai-view:{ssai_session_id}|{content}"))
    if view_id is None and content:
        view_id = str(uuid.uuid5(ns, f"content-view:{identity_key}|{content}"))
    return session_id, view_id
