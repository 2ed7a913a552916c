"""Sessions and views as the Direct API guide defines them.

- A session groups one identity's events across content engagements. The host's session id
  (or one derived from an SSAI session) is used as given; otherwise one is generated (UUIDv4)
  and reused until `[sessions] idle_timeout_s` passes with no ad request or event from that
  identity.
- A view is one content engagement. The host's view id (or one derived from an SSAI session and
  the content) is used as given; otherwise a view of (identity, session, content) is generated
  and lasts until `[views] idle_timeout_s` passes without an ad request for it. A new session
  therefore always starts new views. The content is its key (`plugin.signals.content_key`:
  the content URL, else the platform's content id), and the view keys are made in one place
  (`_view_key`, `fleet_view_key`). The first ad request of a view, or the
  host's own play event, sends its play event.
- Completion events find their view: their own or the host's view id; else the SSAI-derived
  one; else the live view of (identity, content URL); else the identity's latest view.

With a shared store (Redis) the same state is shared by every replica, through one atomic
script per ad request, so the breaks of one view that land on different replicas send one play
event and share one session. The local state is always kept too, under the ids the fleet
gave: a store that fails means per-replica state that still knows every view this replica saw,
never a failed or late ad request. A claim that has not come back within the request's budget
is not abandoned: its answer, when it comes, decides the view's play event (`Claim.later`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from plugin.cache.local import AgedLru, Clock
from plugin.cache.shared import SharedViews
from plugin.identity import is_uuid
from plugin.permutive.answer import Answer
from plugin.result import Reason
from plugin.signals.pending import wait_all


class View:
    """One content engagement on this replica, and the play event's call or answer."""

    __slots__ = (
        "answer",
        "failures",
        "flight",
        "id",
        "known",
        "resend",
        "session_id",
        "settled",
    )

    def __init__(self, view_id: str, session_id: str) -> None:
        self.id = view_id
        self.session_id = session_id
        self.known = False
        """A claim decided it (its play event went out, or is going out, somewhere); until
        then it is only this replica's guess, made while the fleet is asked."""
        self.flight: asyncio.Task[Any] | None = None
        """The play event's call while it runs."""
        self.answer: Answer | None = None
        """Its answer once it has one: later ad breaks of the view reuse it."""
        self.failures = 0
        """Play-event calls of this view that failed without saying whether they landed."""
        self.resend = False
        """The next ad break sends the play event again (`plugin.signals.behavioral`)."""
        self.settled: Reason | None = None
        """Why the play event is never sent again (a signal reason), after it failed."""


class _Session:
    __slots__ = ("id", "last_view")

    def __init__(self, session_id: str, last_view: str | None = None) -> None:
        self.id = session_id
        self.last_view = last_view


class Claim:
    """What an ad request's identity and content resolve to: its session and view, and
    whether this request is the view's first (the one that sends the play event).

    `later` is set when the fleet's answer did not come within the request's budget: the
    request goes on with this replica's guess (`new` is then False: it sends nothing), and
    `later` resolves to the settled claim, which says whether the play event is still owed."""

    __slots__ = ("key", "later", "new", "session_id", "view")

    def __init__(
        self,
        session_id: str,
        view: View,
        new: bool,
        key: bytes,
        later: asyncio.Task[Claim] | None = None,
    ) -> None:
        self.session_id = session_id
        self.view = view
        self.new = new
        self.key = key
        self.later = later


_VARIANT = "89ab"
"""The RFC 4122 variant nibble (10xx) for the two random bits it keeps."""


def _uuid_text(h: str, version: str) -> str:
    """32 hex digits as a UUID of `version` (`uuid.UUID(..., version=)` without the object)."""
    variant = _VARIANT[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-{version}{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


class _RandomIds:
    """UUIDv4 strings, as `str(uuid.uuid4())` makes them (the same `os.urandom` source), from
    random bytes drawn 4 KiB at a time instead of one system call per id."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return _uuid_text(self._pool[at : at + 16].hex(), "4")

    def reset(self) -> None:
        """A forked child must not hand out its parent's ids."""
        self._pool, self._at = b"", 0


new_uuid4 = _RandomIds()
os.register_at_fork(after_in_child=new_uuid4.reset)


Fleet = tuple[str, str, bool] | None
"""The shared store's answer to a claim: (session id, view id, new), None when it had none."""


def _then(task: asyncio.Future[Any], settle: Callable[[], Claim]) -> asyncio.Task[Claim]:
    """`settle()` once `task` has ended, whichever way."""

    async def settled() -> Claim:
        with contextlib.suppress(Exception):
            await task
        return settle()

    return asyncio.ensure_future(settled())


def digest(*parts: str) -> bytes:
    """A 16-byte key for identities, content URLs and view keys: nothing in the clear."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()


def fleet_view_key(content_key: str) -> str:
    """The shared store's key of the generated view of a content (the store puts the
    identity and the session around it)."""
    return digest(content_key).hex()


def _view_key(identity: bytes, sid: str, given: str | None, content_url: str) -> bytes:
    """A view's key on this replica: the host's (or SSAI-derived) view id, else the
    identity's session and content key (`plugin.signals.content_key`: the content URL, else
    the platform's content id)."""
    if given is not None:
        return digest(identity.hex(), "given", given)
    return digest(identity.hex(), sid, content_url)


class Preview(NamedTuple):
    """An ad request's session and view as this replica knows them now (`preview`)."""

    session_id: str | None
    """None: the identity has no session here, so a new one would be generated."""
    session_origin: str
    """`host`, `ssai`, `generated` (the identity's current one) or `new`."""
    given_view: str | None
    """The host's or SSAI-derived view id, else None (a view id is generated)."""
    view: View | None
    """The live view this request belongs to; None: it would start a view (play event)."""


class SessionTracker:
    """Local sessions and views, with an optional fleet-wide store behind them."""

    def __init__(
        self,
        *,
        namespace: uuid.UUID,
        session_idle_s: float,
        view_idle_s: float,
        max_sessions: int,
        max_views: int,
        clock: Clock,
    ) -> None:
        self._ns = namespace
        self._ns_bytes = namespace.bytes
        self.session_idle_s = session_idle_s
        self.view_idle_s = view_idle_s
        self._sessions: AgedLru[_Session] = AgedLru(max_sessions, session_idle_s, clock)
        self._views: AgedLru[View] = AgedLru(max_views, view_idle_s, clock)
        self.shared: SharedViews | None = None

    @property
    def view_count(self) -> int:
        return len(self._views)

    # -- ids the host gave ---------------------------------------------------------------

    def given_session(self, session_id: str | None, ssai_session_id: str | None) -> str | None:
        """The host's session id (a UUID of any version as it is, anything else mapped by
        uuid5), or one derived from the SSAI session; None when the host gave neither."""
        if session_id:
            return session_id if is_uuid(session_id) else self._uuid5("session:" + session_id)
        if ssai_session_id:
            return self._uuid5("ssai-session:" + ssai_session_id)
        return None

    def given_view(
        self, view_id: str | None, ssai_session_id: str | None, content_url: str | None
    ) -> str | None:
        """The host's view id (mapped like session ids), or one derived from the SSAI session
        and the content; None when the host gave neither."""
        if view_id:
            return view_id if is_uuid(view_id) else self._uuid5("view:" + view_id)
        if ssai_session_id:
            return self._uuid5(f"ssai-view:{ssai_session_id}|{content_url or ''}")
        return None

    def _uuid5(self, name: str) -> str:
        """`str(uuid.uuid5(namespace, name))`, without the UUID object."""
        return _uuid_text(hashlib.sha1(self._ns_bytes + name.encode()).hexdigest(), "5")

    # -- ad requests ---------------------------------------------------------------------

    def session(self, identity: bytes, given: str | None) -> str:
        """The identity's session id, kept alive by this request."""
        return given if given is not None else self._touch(identity).id

    def _touch(self, identity: bytes) -> _Session:
        found = self._sessions.touch(identity)
        if found is None:
            found = _Session(new_uuid4())
            self._sessions.put(identity, found)
        return found

    def claim_local(
        self,
        identity: bytes,
        *,
        session: str | None,
        ssai_session_id: str | None,
        view_id: str | None,
        content_url: str,
    ) -> Claim:
        """This replica's answer: the session and view of an ad request, the view kept alive."""
        hosts = session or ssai_session_id  # else no call: neither gave an id (most requests)
        fixed = self.given_session(session, ssai_session_id) if hosts else None
        record: _Session | None = None
        if fixed is None:
            record = self._touch(identity)
            sid = record.id
        else:
            sid = fixed
        given = self.given_view(view_id, ssai_session_id, content_url) if view_id or hosts else None
        key = _view_key(identity, sid, given, content_url)
        view = self._views.touch(key)
        new = view is None or view.session_id != sid
        if view is None or new:
            view = View(given if given is not None else new_uuid4(), sid)
            if record is not None:
                record.last_view = view.id
            self._views.put(key, view)
        return Claim(sid, view, new, key)

    def preview(
        self,
        identity: bytes,
        *,
        session: str | None,
        ssai_session_id: str | None,
        view_id: str | None,
        content_url: str,
    ) -> Preview:
        """What `claim_local` would answer, claiming nothing and keeping nothing alive: the
        explain page shows it without changing what the next real ad request sees."""
        origin = "host" if session else "ssai"
        sid = self.given_session(session, ssai_session_id)
        if sid is None:
            record = self._sessions.peek(identity)
            sid = record.id if record is not None else None
            origin = "generated" if record is not None else "new"
        given = self.given_view(view_id, ssai_session_id, content_url)
        view = None
        if sid is not None:
            view = self._views.peek(_view_key(identity, sid, given, content_url))
            if view is not None and view.session_id != sid:
                view = None
        return Preview(sid, origin, given, view)

    async def claim(
        self,
        identity: bytes,
        *,
        session: str | None,
        ssai_session_id: str | None,
        view_id: str | None,
        content_url: str,
        wait_s: float = 0.05,
    ) -> Claim:
        """`claim_local`, then the fleet's word on it when a shared store is configured,
        waited for at most `wait_s` (see `Claim.later`)."""
        local = self.claim_local(
            identity,
            session=session,
            ssai_session_id=ssai_session_id,
            view_id=view_id,
            content_url=content_url,
        )
        shared = self.shared
        if shared is None:
            return local
        fixed = self.given_session(session, ssai_session_id) is not None
        given = self.given_view(view_id, ssai_session_id, content_url) is not None
        asked = asyncio.ensure_future(
            shared.claim_view(
                identity.hex(),
                local.key.hex() if given else fleet_view_key(content_url),
                session_id=local.session_id,
                view_id=local.view.id,
                fixed_session=fixed,
                given_view=given,
                known=local.view.known and not local.new,
                session_ttl_s=self.session_idle_s,
                view_ttl_s=self.view_idle_s,
                wait_s=wait_s,
            )
        )
        if not asked.done():
            loop = asyncio.get_running_loop()
            await wait_all(loop, [asked], loop.time() + wait_s)
        settle = partial(self._settle, asked, identity, local, fixed, given, content_url)
        if asked.done():
            return settle()
        return Claim(local.session_id, local.view, False, local.key, _then(asked, settle))

    def _settle(
        self,
        asked: asyncio.Future[Fleet],
        identity: bytes,
        local: Claim,
        fixed: bool,
        given: bool,
        content_url: str,
    ) -> Claim:
        """The claim as decided: by the fleet, stored locally under the ids it gave (the key
        later lookups use); by this replica alone when the fleet could not answer."""
        fleet = None if asked.cancelled() or asked.exception() else asked.result()
        view = local.view
        if fleet is None:
            new = local.new and not view.known
            view.known = True
            return Claim(local.session_id, view, new, local.key)
        sid, vid, new = fleet
        if not fixed:
            record = self._sessions.get(identity)
            if record is None or record.id != sid:
                self._sessions.put(identity, _Session(sid, vid))
            elif record.last_view == view.id:
                record.last_view = vid
        key = local.key
        if not given and sid != local.session_id:
            key = _view_key(identity, sid, None, content_url)
            if local.new:
                self._views.discard(local.key)  # a guess under a session that was not the fleet's
            view = self._views.get(key) or view
        if vid != view.id or sid != view.session_id:
            view = View(vid, sid)
        view.known = True
        self._views.put(key, view)
        return Claim(sid, view, new, key)

    def release(self, claim: Claim, identity: bytes, content_url: str, given: bool) -> None:
        """The play event failed: the view's next ad break tries again."""
        self._views.discard(claim.key)
        if self.shared is not None:
            self.shared.release_view(
                identity.hex(), claim.key.hex() if given else fleet_view_key(content_url)
            )

    # -- events --------------------------------------------------------------------------

    async def for_event(
        self,
        identity: bytes,
        *,
        session: str | None,
        view_id: str | None,
        ssai_session_id: str | None,
        content_url: str | None,
    ) -> tuple[str, str | None]:
        """(session id, view id) for an event the host sent without ids of its own."""
        fixed = self.given_session(session, ssai_session_id)
        given = self.given_view(view_id, ssai_session_id, content_url)
        if given is not None and (view_id or content_url):
            return (fixed or self.session(identity, None)), given
        sid = self.session(identity, fixed)
        found: str | None = None
        if content_url:
            view = self._views.get(_view_key(identity, sid, None, content_url))
            if view is not None and view.session_id == sid:
                found = view.id
        else:
            record = self._sessions.get(identity)
            if record is not None and record.id == sid:
                found = record.last_view
        shared = self.shared
        if shared is None or fixed is not None:
            return sid, found
        fleet = await shared.find_view(
            identity.hex(),
            fleet_view_key(content_url) if content_url else None,
            session_id=sid,
            session_ttl_s=self.session_idle_s,
        )
        if fleet is None:
            return sid, found
        fleet_sid, fleet_view = fleet
        if fleet_sid != sid:
            self._sessions.put(identity, _Session(fleet_sid, fleet_view))
        return fleet_sid, fleet_view if fleet_view else found
