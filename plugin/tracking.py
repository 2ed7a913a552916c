"""The host's player events (`Enricher.track()`, `/v1/events`): one gate, then the CCS API.

`Tracking.prepare` is the only way events get past consent: it checks them (a person's
mistake raises, naming the field, whatever the consent), decides consent once, and returns a
`Prepared` batch (ids filled in, chronological, host play events opened or left out as
duplicates) or a `Denied` with its reason. `send_batch` takes nothing but a `Prepared`: a
caller cannot send events that were not decided on, and nothing decides twice. An event queue
keeps a `Prepared` batch as one-event parts and joins them back into batches of at most 10;
the Redis queue stores them and reads them back as `Prepared` (`Prepared.restored`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from plugin.cache.local import compact_key
from plugin.context import ConsentSignals
from plugin.identity import Identity
from plugin.permutive.answer import Answer
from plugin.permutive.clients import UpstreamError
from plugin.permutive.wire import MAX_EVENTS_PER_REQUEST, CcsRequest, Event
from plugin.result import ConsentDecision
from plugin.signals.events import as_event
from plugin.signals.tracker import EventIds, EventViews, Opened

Call = Callable[[bytes, CcsRequest], Awaitable[Answer]]
"""One CCS call for an identity key (`BehavioralSignal.call`: the answer refreshes the cache)."""

_GATE = object()


class Prepared:
    """Events of one identity that passed the gate: consented, checked, ready to send.

    Made by `Tracking.prepare` only (and read back from the queue that stored one); built any
    other way it raises `TypeError`."""

    __slots__ = ("_opened", "duplicates", "events", "identity", "reason")

    def __init__(
        self,
        identity: Identity,
        events: Sequence[Event],
        *,
        gate: object,
        reason: str = "",
        duplicates: int = 0,
        opened: Sequence[Opened] = (),
    ) -> None:
        if gate is not _GATE:
            raise TypeError("a Prepared batch comes from Enricher.prepare_events() only")
        self.identity = identity
        self.events: tuple[Event, ...] = tuple(events)
        self.reason = reason
        """The consent decision's reason."""
        self.duplicates = duplicates
        """Host play events left out: their view's play event went out already."""
        self._opened = list(opened)

    def parts(self) -> list[Prepared]:
        """One batch per event, for a queue that regroups a user's events in time order."""
        return [Prepared(self.identity, (e,), gate=_GATE, reason=self.reason) for e in self.events]

    def batches(self) -> list[Prepared]:
        """Batches of at most 10 events, as the CCS API takes them."""
        n = MAX_EVENTS_PER_REQUEST
        return [
            Prepared(self.identity, self.events[i : i + n], gate=_GATE, reason=self.reason)
            for i in range(0, len(self.events), n)
        ]

    @staticmethod
    def joined(parts: Sequence[Prepared]) -> Prepared:
        """Prepared batches of one identity as one (a queue's batch of parts)."""
        if not parts:
            raise ValueError("nothing to join")
        identity = parts[0].identity
        if any(p.identity != identity for p in parts):
            raise ValueError("Prepared batches of different identities cannot be joined")
        events = [e for p in parts for e in p.events]
        return Prepared(identity, events, gate=_GATE, reason=parts[0].reason)

    @staticmethod
    def restored(identity: Identity, event: Event) -> Prepared:
        """A part the Redis event queue stored (`parts`) read back: prepared when it was
        queued, so it is not decided on again."""
        return Prepared(identity, (event,), gate=_GATE)


class Denied(msgspec.Struct, frozen=True):
    """Events the consent gate refused: none of them leaves."""

    reason: str
    count: int


class Tracking:
    def __init__(
        self,
        views: EventViews,
        call: Call,
        decide: Callable[[ConsentSignals], ConsentDecision],
        start: Callable[[], Awaitable[None]],
    ) -> None:
        """`call` makes one CCS call, `decide` is the enricher's consent gate (counted) and
        `start` starts the enricher's backends (events may open views in the shared store)."""
        self._views = views
        self._call = call
        self._decide = decide
        self._start = start

    async def prepare(
        self,
        events: Iterable[Event | Mapping[str, Any]],
        *,
        identity: Identity,
        consent: ConsentSignals | ConsentDecision | bool,
        ids: EventIds | None = None,
    ) -> Prepared | Denied:
        """The one gate: a person's mistake raises (`IdentityError`, `RequestError` naming
        the field) whatever the consent; then consent is decided once."""
        identity.validate()
        checked = [as_event(ev, f"events[{i}]") for i, ev in enumerate(events)]
        if isinstance(consent, bool):
            decision = ConsentDecision(
                consent, "override_granted" if consent else "override_denied"
            )
        elif isinstance(consent, ConsentDecision):
            decision = consent
        else:
            decision = self._decide(consent)
        if not decision.allowed:
            return Denied(decision.reason, len(checked))
        await self._start()
        got = await self._views.resolve(identity, checked, ids or EventIds())
        return Prepared(
            identity,
            got.events,
            gate=_GATE,
            reason=decision.reason,
            duplicates=got.duplicates,
            opened=got.opened,
        )

    def withdraw(self, prepared: Prepared) -> None:
        """The prepared events were not taken (a full or unavailable queue): the views their
        play events opened are let go (`EventViews.withdraw`)."""
        opened, prepared._opened = prepared._opened, []
        self._views.withdraw_opened(opened)

    async def send(self, prepared: Prepared) -> int:
        """Prepared events in batches of at most 10; how many were delivered. Nothing is sent
        twice: a failed batch and the ones after it are not delivered."""
        sent = 0
        for batch in prepared.batches():
            try:
                await self.send_batch(batch)
            except UpstreamError:
                break
            sent += len(batch.events)
        return sent

    async def send_batch(self, prepared: Prepared) -> Answer:
        """One CCS call with 1 to 10 prepared events. Raises `UpstreamError` (with a `kind`)
        so that a queue can tell what to retry; the answer refreshes the behavioral cache."""
        if not isinstance(prepared, Prepared):
            raise TypeError(f"send_batch takes a Prepared batch, not {type(prepared).__name__}")
        await self._start()
        identity = prepared.identity
        request = CcsRequest(
            events=list(prepared.events),
            user_id=identity.user_id,
            alias=identity.alias,
            aliases=identity.aliases,
        )
        return await self._call(compact_key(identity.cache_key()), request)
