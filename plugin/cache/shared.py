"""A cache shared by replicas (Redis), behind each replica's in-process cache.

Answers one replica fetched serve as fallback on every other, and a contextual answer is
fetched once per fleet rather than once per replica. Redis is a helper, never a dependency of
the ad request: a request waits for it only as long as it can spare (`cache.redis_timeout_ms`
for a shared answer, what is left of its budget for a view claim), failures are counted, a
breaker stops paying the wait while Redis is down, and redis-py reconnects by itself.

A call a request stopped waiting for is not abandoned: it runs to its end, bounded by
`cache.redis_call_timeout_ms`, so a busy replica (a slow event loop) never mistakes itself for
a failing Redis, and a view claim Redis has already made still decides that view's play event.
Connections come from a pool of `cache.redis_max_connections` that waits (never raises) when
every connection is in use.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import msgspec

from plugin.cache.checked import StoreChecks
from plugin.cache.redis_calls import RedisCalls, Unavailable, make_client
from plugin.observe.metrics import Metrics
from plugin.permutive.answer import Answer

log = logging.getLogger("cohortkv.shared")


class _Stored(msgspec.Struct, array_like=True, gc=False):
    answer: Answer
    stored_at: float
    """Wall-clock seconds: ages must agree across processes."""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Stored).decode


class SharedViews(Protocol):
    """Fleet-wide session and view state (see `plugin.cache.shared.RedisStore`)."""

    async def claim_view(
        self,
        identity: str,
        view_key: str,
        *,
        session_id: str,
        view_id: str,
        fixed_session: bool,
        given_view: bool,
        known: bool,
        session_ttl_s: float,
        view_ttl_s: float,
        wait_s: float,
    ) -> tuple[str, str, bool] | None:
        """(session id, view id, first request of the view) as the fleet has them; None when
        the store cannot answer (then the local state decides). `known`: this replica knows the
        view (its play event went out), so a store that lost it takes it back rather than
        calling it new. `wait_s`: what the ad request can wait; a connection not free by then
        is counted (`kind="pool"`), and the call goes on (the caller decides whether to wait)."""
        ...

    def release_view(self, identity: str, view_key: str) -> None:
        """Forget a view whose play event failed, so that its next ad break sends it again."""
        ...

    async def find_view(
        self, identity: str, view_key: str | None, *, session_id: str, session_ttl_s: float
    ) -> tuple[str, str | None] | None:
        """(session id, view id) for an event: the live view of `view_key`, or the latest
        view of the session when `view_key` is None; touches the session. None on failure."""
        ...


class SharedStore(SharedViews, Protocol):
    """What the enricher needs from a shared cache: answers, plus sessions and views
    (`SharedViews`, used by `plugin.signals.sessions`). Every read returns None on any failure."""

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None: ...

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None: ...

    async def close(self) -> None: ...


# Sessions and views, atomically. Keys share the identity's hash tag so that Redis Cluster keeps
# them in one slot. A session value is "session_id|latest_view_id"; a view value is
# "session_id|view_id". KEYS: session, view. ARGV: candidate session id, candidate view id,
# session TTL ms, view TTL ms, fixed session ("1" when the host gave it), given view ("1"),
# known ("1": the replica knows this view, so a Redis that lost it takes it back as not new).
_CLAIM = """
local sid = ARGV[1]
local stored = false
if ARGV[5] ~= '1' then
  stored = redis.call('GET', KEYS[1])
  if stored then sid = string.match(stored, '^[^|]*') end
end
local vid = ARGV[2]
local new = 1
local own = false
local v = redis.call('GET', KEYS[2])
if v then
  local vs, vv = string.match(v, '^([^|]*)|(.*)$')
  if ARGV[6] == '1' then
    new = 0
  elseif vs == sid then
    vid = vv
    new = 0
  end
elseif ARGV[7] == '1' then
  new = 0
  own = stored and sid ~= ARGV[1]
  sid = ARGV[1]
end
redis.call('SET', KEYS[2], sid .. '|' .. vid, 'PX', ARGV[4])
if ARGV[5] ~= '1' and not own then
  if new == 1 or not stored then
    redis.call('SET', KEYS[1], sid .. '|' .. vid, 'PX', ARGV[3])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
end
return {sid, vid, new}
"""

# An event's session and view. KEYS: session, view (the session key again: none given).
# ARGV: candidate session id, session TTL ms.
_FIND = """
local stored = redis.call('GET', KEYS[1])
local sid = ARGV[1]
local last = ''
if stored then
  sid, last = string.match(stored, '^([^|]*)|?(.*)$')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], sid .. '|', 'PX', ARGV[2])
end
if KEYS[2] == KEYS[1] then
  return {sid, last}
end
local v = redis.call('GET', KEYS[2])
if v then
  local vs, vv = string.match(v, '^([^|]*)|(.*)$')
  if vs == sid then
    return {sid, vv}
  end
end
return {sid, ''}
"""


class RedisStore:
    """`redis.asyncio` client (or cluster client) behind `RedisCalls`: connection slots, a
    bound and a breaker on every call.

    Keys are `cohortkv:{namespace}:{key}`; values are msgpack `[answer, stored_at]` with the
    cache TTL as Redis expiry. Writes are fire-and-forget so they never hold up a request.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 0.05,
        call_timeout_s: float = 2.0,
        max_connections: int = 64,
        cluster: bool = False,
        prefix: str = "cohortkv",
    ) -> None:
        client = make_client(
            url, cluster=cluster, max_connections=max_connections, timeout_s=call_timeout_s
        )
        self._calls = RedisCalls(
            client,
            metrics,
            name="redis",
            max_connections=max_connections,
            timeout_s=call_timeout_s,
            log=log,
        )
        self._ops = self._calls.ops
        self._timeout = timeout_s
        self._prefix = prefix
        self._checks = StoreChecks(metrics)
        self._claim = client.register_script(_CLAIM)
        self._find = client.register_script(_FIND)

    def _keys(self, identity: str, view_key: str | None) -> list[str]:
        session = f"{self._prefix}:s:{{{identity}}}"
        view = session if view_key is None else f"{self._prefix}:v:{{{identity}}}:{view_key}"
        return [session, view]

    async def claim_view(
        self,
        identity: str,
        view_key: str,
        *,
        session_id: str,
        view_id: str,
        fixed_session: bool,
        given_view: bool,
        known: bool,
        session_ttl_s: float,
        view_ttl_s: float,
        wait_s: float,
    ) -> tuple[str, str, bool] | None:
        args = [
            session_id,
            view_id,
            int(session_ttl_s * 1000),
            int(view_ttl_s * 1000),
            "1" if fixed_session else "0",
            "1" if given_view else "0",
            "1" if known else "0",
        ]
        keys = self._keys(identity, view_key)
        try:
            got = await self._calls.run(
                "claim", lambda: self._claim(keys=keys, args=args), pool_after_s=wait_s
            )
        except Unavailable:
            return None
        self._ops.labels("claim", "ok").inc()
        if not isinstance(got, list) or len(got) != 3:
            return None
        ids = self._checks.ids(got, view_may_be_empty=False)
        if ids is None:
            self._drop(keys)
            return None
        return ids[0], ids[1], got[2] == 1

    def release_view(self, identity: str, view_key: str) -> None:
        key = self._keys(identity, view_key)[1]
        self._forget(key)

    def _drop(self, keys: list[str]) -> None:
        """Deletes keys that hold invalid values, so that the fleet starts them afresh."""
        for key in dict.fromkeys(keys):
            self._forget(key)

    def _forget(self, key: str) -> None:
        self._calls.spawn(self._calls.run("release", lambda: self._calls.client.delete(key)))

    async def find_view(
        self, identity: str, view_key: str | None, *, session_id: str, session_ttl_s: float
    ) -> tuple[str, str | None] | None:
        args = [session_id, int(session_ttl_s * 1000)]
        keys = self._keys(identity, view_key)
        try:
            got = await self._calls.answer(
                "find", lambda: self._find(keys=keys, args=args), self._timeout
            )
        except Unavailable:
            return None
        if not isinstance(got, list) or len(got) != 2:
            return None
        self._ops.labels("find", "ok").inc()
        ids = self._checks.ids(got, view_may_be_empty=True)
        if ids is None:
            self._drop(keys)
            return None
        return ids[0], ids[1] or None

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None:
        name = f"{self._prefix}:{namespace}:{key}"
        try:
            raw = await self._calls.answer(
                "get", lambda: self._calls.client.get(name), self._timeout
            )
        except Unavailable:
            return None
        if raw is None:
            self._ops.labels("get", "miss").inc()
            return None
        stored = self._checks.stored(raw, _decode)
        if stored is None:
            self._ops.labels("get", "corrupt").inc()
            return None
        if time.time() - stored.stored_at > max_age_s:
            self._ops.labels("get", "stale").inc()
            return None
        self._ops.labels("get", "hit").inc()
        return stored.answer

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        if not self._calls.breaker.allow():
            self._ops.labels("put", "skipped").inc()
            return
        self._calls.spawn(self._put(namespace, key, answer, ttl_s))

    async def _put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        value = _encode(_Stored(answer, time.time()))
        name = f"{self._prefix}:{namespace}:{key}"
        await self._calls.run(
            "put", lambda: self._calls.client.set(name, value, ex=max(1, int(ttl_s)))
        )
        self._ops.labels("put", "ok").inc()

    async def close(self) -> None:
        await self._calls.close(self._timeout * 2)
