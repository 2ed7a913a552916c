"""A cache shared by replicas (Redis), behind each replica's in-process cache.

Answers one replica fetched serve as fallback on every other, and a contextual answer is
fetched once per fleet rather than once per replica. Redis is a helper, never a dependency of
the ad request: every operation has a short timeout, failures are counted, a breaker stops
paying the timeout while Redis is down, and redis-py reconnects by itself when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import msgspec

from plugin.config import ConfigError
from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.permutive.answer import Answer
from plugin.permutive.breaker import Breaker

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
        session_ttl_s: float,
        view_ttl_s: float,
    ) -> tuple[str, str, bool] | None:
        """(session id, view id, first request of the view) as the fleet has them; None when
        the store cannot answer (then the local state decides)."""
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
# session TTL ms, view TTL ms, fixed session ("1" when the host gave it), given view ("1").
_CLAIM = """
local sid = ARGV[1]
local stored = false
if ARGV[5] ~= '1' then
  stored = redis.call('GET', KEYS[1])
  if stored then sid = string.match(stored, '^[^|]*') end
end
local vid = ARGV[2]
local new = 1
local v = redis.call('GET', KEYS[2])
if v then
  local vs, vv = string.match(v, '^([^|]*)|(.*)$')
  if ARGV[6] == '1' then
    new = 0
  elseif vs == sid then
    vid = vv
    new = 0
  end
end
redis.call('SET', KEYS[2], sid .. '|' .. vid, 'PX', ARGV[4])
if ARGV[5] ~= '1' then
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


REDIS_MISSING = (
    "config: cache.redis_url: needs the Redis client, which is not installed:"
    " pip install 'cohortkv[redis]'"
)


class RedisStore:
    """`redis.asyncio` client (or cluster client) with a timeout and a breaker on every call.

    Keys are `cohortkv:{namespace}:{key}`; values are msgpack `[answer, stored_at]` with the
    cache TTL as Redis expiry. Writes are fire-and-forget so they never hold up a request.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout_s: float = 0.05,
        cluster: bool = False,
        prefix: str = "cohortkv",
    ) -> None:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ConfigError(REDIS_MISSING, field="cache.redis_url") from None

        common: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
        }
        self._client: Any = (
            redis.RedisCluster.from_url(url, **common)
            if cluster
            else redis.Redis.from_url(url, health_check_interval=5, **common)
        )
        self._timeout = timeout_s
        self._prefix = prefix
        self._errors = metrics.shared_cache_errors
        self._ops = metrics.shared_cache_ops
        self._breaker = Breaker(3, 0.5, 5.0, gauge=metrics.breaker_state.labels("redis"))
        self._warn = RateLimitedLog(log)
        self._writes: set[asyncio.Task[None]] = set()
        self._claim = self._client.register_script(_CLAIM)
        self._find = self._client.register_script(_FIND)

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
        session_ttl_s: float,
        view_ttl_s: float,
    ) -> tuple[str, str, bool] | None:
        args = [
            session_id,
            view_id,
            int(session_ttl_s * 1000),
            int(view_ttl_s * 1000),
            "1" if fixed_session else "0",
            "1" if given_view else "0",
        ]
        got = await self._script("claim", self._claim, self._keys(identity, view_key), args)
        if not isinstance(got, list) or len(got) != 3:
            return None
        sid, vid, new = got
        return _text(sid), _text(vid), new == 1

    def release_view(self, identity: str, view_key: str) -> None:
        key = self._keys(identity, view_key)[1]
        self._spawn(self._forget(key))

    async def _forget(self, key: str) -> None:
        try:
            await asyncio.wait_for(self._client.delete(key), self._timeout)
        except Exception as e:
            self._failed("release", e)

    async def find_view(
        self, identity: str, view_key: str | None, *, session_id: str, session_ttl_s: float
    ) -> tuple[str, str | None] | None:
        args = [session_id, int(session_ttl_s * 1000)]
        got = await self._script("find", self._find, self._keys(identity, view_key), args)
        if not isinstance(got, list) or len(got) != 2:
            return None
        view = _text(got[1])
        return _text(got[0]), view or None

    async def _script(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call under the timeout and the breaker; None on any failure."""
        if not self._breaker.allow():
            self._ops.labels(op, "skipped").inc()
            return None
        try:
            got = await asyncio.wait_for(script(keys=keys, args=args), self._timeout)
        except Exception as e:  # any Redis failure means "this replica decides alone"
            self._failed(op, e)
            return None
        self._breaker.success()
        self._ops.labels(op, "ok").inc()
        return got

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None:
        if not self._breaker.allow():
            self._ops.labels("get", "skipped").inc()
            return None
        try:
            raw = await asyncio.wait_for(
                self._client.get(f"{self._prefix}:{namespace}:{key}"), self._timeout
            )
        except Exception as e:  # any Redis failure means "not shared this time"
            self._failed("get", e)
            return None
        self._breaker.success()
        if raw is None:
            self._ops.labels("get", "miss").inc()
            return None
        try:
            stored = _decode(raw)
        except (msgspec.DecodeError, TypeError, ValueError):
            self._ops.labels("get", "corrupt").inc()
            return None
        if time.time() - stored.stored_at > max_age_s:
            self._ops.labels("get", "stale").inc()
            return None
        self._ops.labels("get", "hit").inc()
        return stored.answer

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        if not self._breaker.allow():
            self._ops.labels("put", "skipped").inc()
            return
        self._spawn(self._put(namespace, key, answer, ttl_s))

    async def _put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        value = _encode(_Stored(answer, time.time()))
        try:
            await asyncio.wait_for(
                self._client.set(f"{self._prefix}:{namespace}:{key}", value, ex=max(1, int(ttl_s))),
                self._timeout,
            )
        except Exception as e:
            self._failed("put", e)
            return
        self._breaker.success()
        self._ops.labels("put", "ok").inc()

    def _failed(self, op: str, e: Exception) -> None:
        self._breaker.failure()
        kind = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
        self._errors.labels(op, kind).inc()
        self._warn.warning(
            f"redis:{op}", "shared cache %s failed (%s); using local cache", op, kind
        )

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=self._timeout * 2)
        try:
            await self._client.aclose()
        except Exception as e:  # closing a broken connection must not fail shutdown
            log.debug("closing redis client: %s", type(e).__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
