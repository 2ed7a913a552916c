"""Identity resolution and per-user event history, bounded so a benchmark cannot exhaust memory.

Resolution follows the Direct API guide: a `user_id` is its own user; of several aliases the
highest-priority (lowest number) one that is already known decides the user, and every alias of
the request then points to that user for future activity. Nothing is merged: events stored under
another user id stay there. No alias known: a new user (UUIDv4) that all the aliases point to.

Bounds: at most `max_users` users (least recently used forgotten first), `max_events` events
per user (oldest dropped first) and `max_aliases` aliases (least recently used forgotten first).
An alias whose user was forgotten still resolves to the same user id, with an empty history.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from plugin.sandbox.engine import EvalContext, StoredEvent

MAX_USERS = 200_000
MAX_EVENTS_PER_USER = 1_000
MAX_ALIASES = 400_000


class User:
    """One user's kept events, by name in arrival order."""

    __slots__ = ("by_name", "seq", "size", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.by_name: dict[str, list[StoredEvent]] = {}
        self.size = 0
        self.seq = 0

    def events(self) -> list[StoredEvent]:
        """All kept events in arrival order."""
        out = [e for evs in self.by_name.values() for e in evs]
        out.sort(key=lambda e: e.seq)
        return out

    def context(
        self, now: float, session_id: str | None = None, view_id: str | None = None
    ) -> EvalContext:
        """What rules see; "this session" / "this view" are the current request's, never a
        remembered one: a request that names no session is in none."""
        return EvalContext(self.by_name, now, session_id, view_id)


class UserStore:
    def __init__(
        self,
        max_users: int = MAX_USERS,
        max_events: int = MAX_EVENTS_PER_USER,
        max_aliases: int = MAX_ALIASES,
    ) -> None:
        self.max_users = max_users
        self.max_events = max_events
        self.max_aliases = max_aliases
        self.users: OrderedDict[str, User] = OrderedDict()
        self.aliases: OrderedDict[tuple[str, str], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self.users)

    def get(self, user_id: str) -> User | None:
        """The user's state without touching recency (for tests and inspection)."""
        return self.users.get(user_id)

    def lookup_alias(self, tag: str, ident: str) -> str | None:
        return self.aliases.get((tag, ident))

    def resolve_aliases(self, aliases: Sequence[tuple[str, str, int]]) -> str:
        """The user id for (tag, id, priority) aliases; every alias then points to it."""
        ordered = sorted(aliases, key=lambda a: a[2])
        user_id: str | None = None
        for tag, ident, _ in ordered:
            user_id = self.aliases.get((tag, ident))
            if user_id is not None:
                break
        if user_id is None:
            user_id = str(uuid.uuid4())
        for tag, ident, _ in ordered:
            key = (tag, ident)
            self.aliases[key] = user_id
            self.aliases.move_to_end(key)
        while len(self.aliases) > self.max_aliases:
            self.aliases.popitem(last=False)
        return user_id

    def user(self, user_id: str) -> User:
        """The user's state, created if new, marked as most recently used."""
        u = self.users.get(user_id)
        if u is None:
            u = self.users[user_id] = User(user_id)
            while len(self.users) > self.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user_id)
        return u

    def add_event(
        self,
        u: User,
        name: str,
        ts: float,
        properties: dict[str, Any],
        session_id: str | None = None,
        view_id: str | None = None,
    ) -> None:
        u.seq += 1
        ev = StoredEvent(name, ts, properties, session_id, view_id, u.seq)
        u.by_name.setdefault(name, []).append(ev)
        u.size += 1
        if u.size > self.max_events:
            self._drop_oldest(u)

    @staticmethod
    def _drop_oldest(u: User) -> None:
        oldest = min(u.by_name, key=lambda n: u.by_name[n][0].seq)
        evs = u.by_name[oldest]
        del evs[0]
        if not evs:
            del u.by_name[oldest]
        u.size -= 1
