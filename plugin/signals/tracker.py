"""Player events (play, completion with engagement metrics, ...) to the CCS API.

Each event is checked (RFC 3339 time in a sane window), stripped of empty properties, and
given the session and view its play event went out with when the host sent none of its own
(`plugin.signals.sessions`); then events go out in chronological order, at most 10 per request.

The guide sends the play event "when the video starts playing", which only the player knows,
so the host may send it itself. A host play event (`[events] play_events`) opens its view, with
the same view key the view's ad requests use (claimed fleet-wide with a shared store): the
view's ad requests then send no play event of their own (`view_reuse`), and its answer, the
user's freshest, serves them. When the view's play event already went out (an ad request came
first), the host's is not sent again: one play event per view.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

import msgspec

from plugin.cache.local import compact_key
from plugin.identity import Identity
from plugin.observe.metrics import HOST_PLAY_OUTCOMES, Metrics
from plugin.permutive.wire import Event
from plugin.result import Reason
from plugin.signals.content_url import with_clean_client
from plugin.signals.events import parse_event_time, prune_empty
from plugin.signals.sessions import Claim, SessionTracker


class EventIds(msgspec.Struct, frozen=True):
    """Where the host's events belong when they carry no ids of their own: the same fields a
    play event's view is found by. `content_url` is the content key the ad requests had: the
    content URL, or the deterministic URL of a content id (`gam://2553/v1`)."""

    session_id: str | None = None
    view_id: str | None = None
    ssai_session_id: str | None = None
    content_url: str | None = None


class Opened(NamedTuple):
    """A view a host play event opened, and how to undo that."""

    claim: Claim
    key: bytes
    content: str
    given: bool
    before: tuple[bool, Reason | None] | None
    """The view's (`resend`, `settled`) when the host's play event took over a view whose own
    play event had failed; None when the view is new (undone by releasing it)."""


class Resolved(msgspec.Struct):
    """The events as they go out, the host play events left out as duplicates, and the views
    the others opened (`plugin.tracking.Prepared` carries them past the consent gate)."""

    events: list[Event]
    duplicates: int = 0
    opened: list[Opened] = msgspec.field(default_factory=list)


def _as_given(url: str | None) -> str | None:
    return url


class EventViews:
    """Finds the session and view of the host's events, and opens views for its play events."""

    def __init__(
        self,
        sessions: SessionTracker,
        metrics: Metrics,
        play_events: Collection[str] = (),
        content_url: Callable[[str | None], str | None] = _as_given,
    ) -> None:
        """`content_url` cleans `EventIds.content_url` as the ad request's was cleaned, so
        both find one view (`plugin.signals.content_url`)."""
        self._sessions = sessions
        self.play_events = frozenset(play_events)
        self._play = {o: metrics.host_play_events.labels(o) for o in HOST_PLAY_OUTCOMES}
        self.content_url = content_url

    async def resolve(
        self, identity: Identity, events: Iterable[Event], ids: EventIds | None = None
    ) -> Resolved:
        """The events as they go out: checked (a `RequestError` names the bad field), empty
        properties dropped, ids filled in, in chronological order; host play events open
        their views, or are left out when their view's play event went out already."""
        ids = ids if ids is not None else EventIds()
        key = compact_key(identity.cache_key())
        timed = []
        for i, ev in enumerate(events):
            at = parse_event_time(ev.time, f"events[{i}].time")
            timed.append((at, i, ev))
        timed.sort(key=lambda t: (t[0], t[1]))
        resolved: dict[tuple[str | None, str | None], tuple[str, str | None]] = {}
        out = Resolved([])
        for _, _, ev in timed:
            session = ev.session_id or ids.session_id
            view = ev.view_id or ids.view_id
            props = with_clean_client(prune_empty(ev.properties), self.content_url)
            if ev.name in self.play_events:
                found = await self._open_view(key, session, view, ids, props, out.opened)
                if found is None:
                    out.duplicates += 1
                    continue
            else:
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
            out.events.append(
                Event(
                    name=ev.name,
                    time=ev.time,
                    properties=props,
                    view_id=view_id,
                    session_id=session_id,
                )
            )
        return out

    async def _open_view(
        self,
        key: bytes,
        session: str | None,
        view: str | None,
        ids: EventIds,
        properties: dict[str, Any],
        opened: list[Opened],
    ) -> tuple[str, str | None] | None:
        """(session id, view id) of the view a host play event opens (added to `opened`);
        None when that view's play event went out already (it may have landed). Without a
        view id or content to key a view by, the event goes out with its session only: it
        cannot belong to an earlier view."""
        content = self.content_url(ids.content_url or _client_url(properties))
        if not view and not content:
            self._play["no_view"].inc()
            fixed = self._sessions.given_session(session, ids.ssai_session_id)
            return self._sessions.session(key, fixed), None
        claim = await self._sessions.claim(
            key,
            session=session,
            ssai_session_id=ids.ssai_session_id,
            view_id=view,
            content_url=content or "",
        )
        if claim.later is not None:
            # The fleet is slow to answer: an event waits for its word, an ad request would not.
            claim = await claim.later
        v = claim.view
        if not claim.new and not v.resend and v.settled != "play_rejected":
            self._play["duplicate"].inc()
            return None
        # A new view, or one whose own play event did not land (refused, or failed and due to
        # be sent again): the host's is the view's play event.
        before = None if claim.new else (v.resend, v.settled)
        v.resend, v.settled = False, None
        self._play["opened"].inc()
        given = self._sessions.given_view(view, ids.ssai_session_id, content) is not None
        opened.append(Opened(claim, key, content or "", given, before))
        return claim.session_id, v.id

    def withdraw_opened(self, opened: Iterable[Opened]) -> None:
        """The events were not taken (a full or unavailable queue answered 503): the views
        their play events opened are released, so that the host's retry, or the view's next
        ad break on any replica, sends the play event rather than count it a duplicate."""
        for o in opened:
            if o.before is None:
                self._sessions.release(o.claim, o.key, o.content, o.given)
            else:
                o.claim.view.resend, o.claim.view.settled = o.before


def _client_url(properties: dict[str, Any]) -> str | None:
    """`client.url` of a host's play event: the content it is about, when the call names none."""
    client = properties.get("client")
    url = client.get("url") if isinstance(client, dict) else None
    return url if isinstance(url, str) and url.strip() else None
