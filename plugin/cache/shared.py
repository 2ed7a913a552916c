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
import math
import time
import uuid
from typing import Protocol

import msgspec

from plugin.cache import viewer_answers
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


# One hash per viewer (identity): field `s` its session, one field per view (the view key's
# 16 bytes), field `a` its behavioral answer (`VIEWER_ANSWERS`). A session or view value is
# [4-byte expiry, Redis clock seconds][1-byte length of the session id][session id][view id]
# (the latest view's id for `s`; ids as `pack_id` makes them): an expired value is as good as
# absent, so each keeps its own idle timeout inside a key that lives as long as the longest.
# The key's expiry only ever grows (`_GROW`); expired view fields are pruned once the hash has
# more than `_PRUNE_ABOVE` fields.
_COMMON = """
local now = tonumber(redis.call('TIME')[1])
local function parse(v)
  if not v or #v < 5 or struct.unpack('>I4', v) < now then return nil end
  local n = string.byte(v, 5)
  return string.sub(v, 6, 5 + n), string.sub(v, 6 + n)
end
local function pack(ttl_s, a, b)
  return struct.pack('>I4', now + tonumber(ttl_s)) .. string.char(#a) .. a .. b
end
local function grow(ttl_ms)
  if redis.call('PTTL', KEYS[1]) < tonumber(ttl_ms) then
    redis.call('PEXPIRE', KEYS[1], ttl_ms)
  end
end
"""

# A claim. KEYS: the viewer's hash. ARGV: candidate session id, candidate view id, session
# TTL s, view TTL s, fixed session ("1" when the host gave it), given view ("1"), known ("1":
# the replica knows this view, so a Redis that lost it takes it back as not new), the view's
# field, the key's TTL ms.
_CLAIM = (
    _COMMON
    + """
local sid = ARGV[1]
local stored, last = false, ''
if ARGV[5] ~= '1' then
  local ss, sl = parse(redis.call('HGET', KEYS[1], 's'))
  if ss then sid, last, stored = ss, sl, true end
end
local vid = ARGV[2]
local new = 1
local own = false
local vs, vv = parse(redis.call('HGET', KEYS[1], ARGV[8]))
if vs then
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
local fields = redis.call('HSET', KEYS[1], ARGV[8], pack(ARGV[4], sid, vid))
if ARGV[5] ~= '1' and not own then
  if new == 1 or not stored then last = vid end
  redis.call('HSET', KEYS[1], 's', pack(ARGV[3], sid, last))
end
if fields == 1 and redis.call('HLEN', KEYS[1]) > tonumber(ARGV[10]) then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i] ~= 'a' and not parse(all[i + 1]) then redis.call('HDEL', KEYS[1], all[i]) end
  end
end
grow(ARGV[9])
return {sid, vid, new}
"""
)

# An event's session and view. KEYS: the viewer's hash. ARGV: candidate session id, session
# TTL s, the view's field ("": none given, the session's latest view), the key's TTL ms.
_FIND = (
    _COMMON
    + """
local sid, last = ARGV[1], ''
local ss, sl = parse(redis.call('HGET', KEYS[1], 's'))
if ss then sid, last = ss, sl end
redis.call('HSET', KEYS[1], 's', pack(ARGV[2], sid, last))
grow(ARGV[4])
if ARGV[3] == '' then
  return {sid, last}
end
local vs, vv = parse(redis.call('HGET', KEYS[1], ARGV[3]))
if vs and vs == sid then
  return {sid, vv}
end
return {sid, ''}
"""
)

# A behavioral answer into its viewer's hash. KEYS: the hash. ARGV: value, the key's TTL ms.
_PUT_ANSWER = """
redis.call('HSET', KEYS[1], 'a', ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""

VIEWER_ANSWERS = "b"
"""The namespace whose answers are per viewer (the behavioral cache, keyed like sessions):
they live in the viewer's hash, one Redis key per viewer."""
_PRUNE_ABOVE = 8
_SESSION = b"s"
_ANSWER = b"a"


def pack_id(value: str) -> bytes:
    """A session or view id as stored: a lower-case UUID as its 16 bytes, any other id (a
    host's, as it gave it) as its text; `unpack_id` gives back the same text."""
    if len(value) == 36:
        try:
            packed = uuid.UUID(value)
        except ValueError:
            return value.encode()
        if str(packed) == value:
            return packed.bytes
    return value.encode()


def unpack_id(value: object) -> object:
    """`pack_id` undone; anything that is not bytes is left for the checks to refuse."""
    if isinstance(value, bytes) and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    return value


class RedisStore:
    """`redis.asyncio` client (or cluster client) behind `RedisCalls`: connection slots, a
    bound and a breaker on every call.

    Answers are `cohortkv:{namespace}:{key}`, msgpack `[answer, stored_at]` with the cache TTL
    as Redis expiry, except a viewer's behavioral answer: a reference to its cohort set
    (`plugin.cache.viewer_answers`) with its session and views in one hash, `cohortkv:u:` and
    the identity's 16 bytes (see `_COMMON`). Writes are fire-and-forget so they never
    hold up a request.
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
        self._prefix_bytes = f"{prefix}:u:".encode()
        self._checks = StoreChecks(metrics)
        self._claim = client.register_script(_CLAIM)
        self._find = client.register_script(_FIND)
        self._put_answer = client.register_script(_PUT_ANSWER)

    def viewer_key(self, identity: str) -> bytes:
        """The viewer's hash: the prefix, `:u:`, the identity digest's 16 bytes (one key per
        viewer, so no hash tag is needed to keep a viewer on one cluster node)."""
        try:
            raw = bytes.fromhex(identity)
        except ValueError:
            raw = identity.encode()
        return self._prefix_bytes + raw

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
        field = _field(view_key)
        args = [
            pack_id(session_id),
            pack_id(view_id),
            _seconds(session_ttl_s),
            _seconds(view_ttl_s),
            "1" if fixed_session else "0",
            "1" if given_view else "0",
            "1" if known else "0",
            field,
            _key_ms(session_ttl_s, view_ttl_s),
            _PRUNE_ABOVE,
        ]
        keys = [self.viewer_key(identity)]
        try:
            got = await self._calls.run(
                "claim", lambda: self._claim(keys=keys, args=args), pool_after_s=wait_s
            )
        except Unavailable:
            return None
        self._ops.labels("claim", "ok").inc()
        if not isinstance(got, list) or len(got) != 3:
            return None
        ids = self._checks.ids([unpack_id(v) for v in got[:2]], view_may_be_empty=False)
        if ids is None:
            self._forget(keys[0], _SESSION, field)
            return None
        return ids[0], ids[1], got[2] == 1

    def release_view(self, identity: str, view_key: str) -> None:
        self._forget(self.viewer_key(identity), _field(view_key))

    def _forget(self, key: bytes, *fields: bytes) -> None:
        """Deletes fields (a released view; invalid values, so that the fleet starts them
        afresh)."""
        self._calls.spawn(self._calls.run("release", lambda: self._calls.client.hdel(key, *fields)))

    async def find_view(
        self, identity: str, view_key: str | None, *, session_id: str, session_ttl_s: float
    ) -> tuple[str, str | None] | None:
        field = b"" if view_key is None else _field(view_key)
        args = [pack_id(session_id), _seconds(session_ttl_s), field, _key_ms(session_ttl_s)]
        keys = [self.viewer_key(identity)]
        try:
            got = await self._calls.answer(
                "find", lambda: self._find(keys=keys, args=args), self._timeout
            )
        except Unavailable:
            return None
        if not isinstance(got, list) or len(got) != 2:
            return None
        self._ops.labels("find", "ok").inc()
        ids = self._checks.ids([unpack_id(v) for v in got], view_may_be_empty=True)
        if ids is None:
            self._forget(keys[0], *((_SESSION, field) if field else (_SESSION,)))
            return None
        return ids[0], ids[1] or None

    async def get(self, namespace: str, key: str, max_age_s: float) -> Answer | None:
        if namespace == VIEWER_ANSWERS:
            stored = await self._viewer_answer(key)
        else:
            stored = await self._answer(f"{self._prefix}:{namespace}:{key}")
        if not isinstance(stored, _Stored):
            if stored:
                self._ops.labels("get", stored).inc()
            return None
        if time.time() - stored.stored_at > max_age_s:
            self._ops.labels("get", "stale").inc()
            return None
        self._ops.labels("get", "hit").inc()
        return stored.answer

    async def _answer(self, name: str) -> _Stored | str:
        """An answer of its own key, else what to count: `miss`, `corrupt`, or nothing ("",
        Redis unavailable: counted already)."""
        try:
            raw = await self._calls.answer(
                "get", lambda: self._calls.client.get(name), self._timeout
            )
        except Unavailable:
            return ""
        if raw is None:
            return "miss"
        return self._checks.stored(raw, _decode) or "corrupt"

    async def _viewer_answer(self, identity: str) -> _Stored | str:
        """A viewer's answer (else what to count, as `_answer`): its reference, then the
        profile it names (two reads: the profile may live on another node of a cluster)."""
        name = self.viewer_key(identity)
        try:
            raw = await self._calls.answer(
                "get", lambda: self._calls.client.hget(name, _ANSWER), self._timeout
            )
        except Unavailable:
            return ""
        if raw is None:
            return "miss"
        ref = viewer_answers.parse_reference(raw)
        if ref is None:
            self._checks.rejected("answer", "undecodable")
            return "corrupt"
        digest, stored_at, user = ref
        got = await self._answer(self._profile_key(digest))
        if not isinstance(got, _Stored):
            return got
        problem = viewer_answers.user_problem(user)
        if problem is not None:
            self._checks.rejected("answer", problem)
            return "corrupt"
        uid = str(unpack_id(user)) if len(user) == 16 else user.decode() if user else None
        return _Stored(Answer(got.answer.cohorts, got.answer.activations, uid), stored_at)

    def put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        if not self._calls.breaker.allow():
            self._ops.labels("put", "skipped").inc()
            return
        self._calls.spawn(self._put(namespace, key, answer, ttl_s))

    async def _put(self, namespace: str, key: str, answer: Answer, ttl_s: float) -> None:
        ex = max(1, int(ttl_s))
        now = time.time()
        if namespace != VIEWER_ANSWERS:
            value = _encode(_Stored(answer, now))
            name = f"{self._prefix}:{namespace}:{key}"
            await self._calls.run("put", lambda: self._calls.client.set(name, value, ex=ex))
        else:
            profile = Answer(answer.cohorts, answer.activations)
            stored = _encode(_Stored(profile, now))
            digest = viewer_answers.digest(_encode(profile))
            pname = self._profile_key(digest)
            await self._calls.run("put", lambda: self._calls.client.set(pname, stored, ex=ex))
            user = pack_id(answer.user_id) if answer.user_id else b""
            ref = viewer_answers.reference(digest, now, user)
            keys, args = [self.viewer_key(key)], [ref, _key_ms(ttl_s)]
            await self._calls.run("put", lambda: self._put_answer(keys=keys, args=args))
        self._ops.labels("put", "ok").inc()

    def _profile_key(self, digest: bytes) -> str:
        return f"{self._prefix}:p:{digest.hex()}"

    async def close(self) -> None:
        await self._calls.close(self._timeout * 2)


def _field(view_key: str) -> bytes:
    """A view's field in its viewer's hash: the view key's 16 bytes (it is a digest's hex)."""
    try:
        return bytes.fromhex(view_key)
    except ValueError:
        return view_key.encode()


def _seconds(ttl_s: float) -> int:
    """An idle timeout in the whole seconds of a stored expiry (never shorter)."""
    return max(1, math.ceil(ttl_s))


def _key_ms(*ttl_s: float) -> int:
    """A viewer's key's expiry: past the latest expiry stored in it (whole seconds, from a
    clock that counts whole seconds)."""
    return (_seconds(max(ttl_s)) + 1) * 1000
