"""Player events (completion with engagement metrics, ...) to the CCS API.

Each event is checked (RFC 3339 time in a sane window), stripped of empty properties, and
given the session and view its play event went out with when the host sent none of its own
(`plugin.signals.sessions`); then events go out in chronological order, at most 10 per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import msgspec

from plugin.cache.local import compact_key
from plugin.identity import Identity
from plugin.permutive.answer import Answer
from plugin.permutive.clients import CcsClient, UpstreamError
from plugin.permutive.wire import MAX_EVENTS_PER_REQUEST, CcsRequest, Event
from plugin.signals.events import parse_event_time, prune_empty
from plugin.signals.sessions import SessionTracker


class EventIds(msgspec.Struct, frozen=True):
    """Where the host's events belong when they carry no ids of their own: the same fields a
    play event's view is found by."""

    session_id: str | None = None
    view_id: str | None = None
    ssai_session_id: str | None = None
    content_url: str | None = None


class EventSender:
    def __init__(
        self,
        sessions: SessionTracker,
        client: Callable[[], CcsClient],
        remember: Callable[[bytes, Answer], None],
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._remember = remember
        self.content_url: Callable[[str | None], str | None] = _as_given
        """Cleans `EventIds.content_url` as the ad request's was cleaned, so both find one
        view (`plugin.signals.content_url`)."""

    async def prepare(
        self, identity: Identity, events: Iterable[Event], ids: EventIds | None = None
    ) -> list[Event]:
        """The events as they go out: checked (a `RequestError` names the bad field), empty
        properties dropped, ids filled in, in chronological order."""
        ids = ids if ids is not None else EventIds()
        key = compact_key(identity.cache_key())
        timed = []
        for i, ev in enumerate(events):
            at = parse_event_time(ev.time, f"events[{i}].time")
            timed.append((at, i, ev))
        timed.sort(key=lambda t: (t[0], t[1]))
        resolved: dict[tuple[str | None, str | None], tuple[str, str | None]] = {}
        out: list[Event] = []
        for _, _, ev in timed:
            session = ev.session_id or ids.session_id
            view = ev.view_id or ids.view_id
            wanted = (session, view)
            found = resolved.get(wanted)
            if found is None:
                found = resolved[wanted] = await self._sessions.for_event(
                    key,
                    session=session,
                    view_id=view,
                    ssai_session_id=ids.ssai_session_id,
                    content_url=self.content_url(ids.content_url),
                )
            session_id, view_id = found
            out.append(
                Event(
                    name=ev.name,
                    time=ev.time,
                    properties=prune_empty(ev.properties),
                    view_id=view_id,
                    session_id=session_id,
                )
            )
        return out

    async def send(self, identity: Identity, events: Sequence[Event]) -> int:
        """Prepared events in batches of at most 10; how many were delivered."""
        sent = 0
        for i in range(0, len(events), MAX_EVENTS_PER_REQUEST):
            batch = events[i : i + MAX_EVENTS_PER_REQUEST]
            try:
                await self.send_batch(identity, batch)
            except UpstreamError:
                break
            sent += len(batch)
        return sent

    async def send_batch(self, identity: Identity, events: Sequence[Event]) -> Answer:
        """One CCS call with 1 to 10 prepared events. Raises `UpstreamError` (with a `kind`)
        so that a queue can tell what to retry; the answer refreshes the behavioral cache."""
        request = CcsRequest(
            events=list(events),
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        answer = await self._client().segment(request)
        self._remember(compact_key(identity.cache_key()), answer)
        return answer


def _as_given(url: str | None) -> str | None:
    return url
