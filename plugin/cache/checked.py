"""Values read back from the shared store (Redis), checked before anything uses them.

Redis is shared with whoever else can reach it, so what comes back is a machine's input like
any other: a session id stored as `not-a-uuid\r\nINJECT…`, a 100 KB value or a cohort list
that is not one must never reach a CCS event or an ad request. Every value is checked for
size, shape and type; anything else is ignored (the replica's own state decides), counted in
`cohortkv_shared_store_invalid_total{value,reason}` and logged at a bounded rate, without the
value.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from plugin.observe.metrics import Metrics, RateLimitedLog
from plugin.permutive.answer import Answer

log = logging.getLogger("cohortkv.shared")

MAX_VALUE_BYTES = 1_048_576
"""A stored answer comes from an API answer of at most `http.max_response_bytes` (1 MiB by
default) and is smaller than it."""
MAX_CODES = 10_000
"""Cohort codes in one answer, and activated codes per platform."""
MAX_CODE_LENGTH = 256
MAX_CLOCK_SKEW_S = 300.0
"""How far in the future a stored time may lie (clocks of replicas differ a little)."""

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_LENGTH = 36


class StoredAnswer(Protocol):
    @property
    def answer(self) -> Answer: ...

    @property
    def stored_at(self) -> float: ...


S = TypeVar("S", bound=StoredAnswer)


def is_uuid_text(value: str) -> bool:
    """A UUID in its 36-character text form: every session and view id cohortkv stores."""
    return len(value) == _UUID_LENGTH and _UUID.fullmatch(value) is not None


def _codes_ok(codes: Sequence[str]) -> bool:
    return len(codes) <= MAX_CODES and all(
        0 < len(c) <= MAX_CODE_LENGTH and c.isprintable() for c in codes
    )


def answer_problem(answer: Answer) -> str | None:
    """Why a decoded answer cannot be used (a `reason` label), or None when it can."""
    if not _codes_ok(answer.cohorts):
        return "bad_cohorts"
    for platform, codes in answer.activations or ():
        if not (0 < len(platform) <= MAX_CODE_LENGTH and platform.isprintable()):
            return "bad_activations"
        if not _codes_ok(codes):
            return "bad_activations"
    user = answer.user_id
    if user is not None and not (
        0 < len(user) <= MAX_CODE_LENGTH and user.isprintable() and " " not in user
    ):
        return "bad_user_id"
    return None


class StoreChecks:
    """Checks shared-store reads; each rejection counted and logged (rate-limited)."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._invalid = metrics.shared_store_invalid
        self._clock = clock
        self._warn = RateLimitedLog(log)

    def rejected(self, value: str, reason: str) -> None:
        self._invalid.labels(value, reason).inc()
        self._warn.warning(
            f"invalid:{value}:{reason}",
            "shared store: ignored an invalid %s value (%s); using local state",
            value,
            reason,
        )

    def stored(self, raw: object, decode: Callable[[bytes], S]) -> S | None:
        """A stored answer, decoded and checked; None (counted) when it is not one."""
        if not isinstance(raw, bytes):
            self.rejected("answer", "bad_type")
            return None
        if len(raw) > MAX_VALUE_BYTES:
            self.rejected("answer", "too_large")
            return None
        try:
            stored = decode(raw)
        except (msgspec.DecodeError, TypeError, ValueError):
            self.rejected("answer", "undecodable")
            return None
        at = stored.stored_at
        if not (math.isfinite(at) and 0 < at <= self._clock() + MAX_CLOCK_SKEW_S):
            self.rejected("answer", "bad_time")
            return None
        problem = answer_problem(stored.answer)
        if problem is not None:
            self.rejected("answer", problem)
            return None
        return stored

    def ids(self, got: Sequence[object], *, view_may_be_empty: bool) -> tuple[str, str] | None:
        """(session id, view id) from a script's reply: both UUIDs (the view id may be ""
        where `view_may_be_empty`); None (counted) otherwise."""
        sid = _text(got[0]) if got else None
        vid = _text(got[1]) if len(got) > 1 else None
        if sid is None or not is_uuid_text(sid):
            self.rejected("session", "not_uuid" if sid is not None else "bad_type")
            return None
        if vid is None or not (is_uuid_text(vid) or (view_may_be_empty and not vid)):
            self.rejected("view", "not_uuid" if vid is not None else "bad_type")
            return None
        return sid, vid


def _text(value: object) -> str | None:
    """A reply element as text, cut just past the length of an id (a 100 KB value is not
    decoded whole, and still fails the check); None when it is neither text nor bytes."""
    if isinstance(value, bytes):
        return value[: _UUID_LENGTH + 1].decode("utf-8", "replace")
    if isinstance(value, str):
        return value[: _UUID_LENGTH + 1]
    return None
