"""This replica's last decisions, for the explain page: a small ring fed by the ad path.

Each enrichment (and each request no platform recognised) leaves one small record: where it
came from, the platform, the consent decision and each signal's source and reason, how many
cohorts were written. Nothing in a record can identify a viewer: the identity is its kind
and alias tags plus a short hash salted per process (the same viewer gets the same hash on
this replica until it restarts, and no other), and consent strings, URLs and ids are never
kept. Adding a record is one struct and one append: it runs on the hot path, and only when
the explain page is on.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter, deque
from typing import Any

import msgspec

from plugin.identity import Identity
from plugin.result import EnrichResult

SIZE = 50
_TAG_CHARS = 32


class Decision(msgspec.Struct, frozen=True, gc=False):
    at: float
    """Unix time, seconds."""
    origin: str
    """Where the request came from: an upstream's name, `api`, `library`, `middleware`."""
    platform: str
    recognised: bool
    unrecognised: str | None
    identity: str
    """`none`, `user_id#<hash>`, `alias:<tag>#<hash>`, `aliases:<tag>,<tag>#<hash>`."""
    consent: bool
    consent_reason: str
    behavioral: tuple[str, str, int]
    """(source, reason, cohorts activated for the platform)."""
    contextual: tuple[str, str, int]
    written: int
    """Values written into the request (cohorts, and the user id when sent)."""
    elapsed_ms: float


class DecisionLog:
    """The last `size` decisions of this replica; never raises into the ad path."""

    def __init__(self, size: int = SIZE) -> None:
        self._ring: deque[Decision] = deque(maxlen=size)
        self._salt = os.urandom(16)
        self.seen = 0
        """Decisions recorded since start (most have left the ring)."""

    def add(
        self,
        result: EnrichResult,
        identity: Identity | None,
        origin: str,
        platform: str | None = None,
    ) -> None:
        """`platform`: the one asked for, when no adapter recognised the request."""
        b, c = result.behavioral, result.contextual
        self.seen += 1
        self._ring.append(
            Decision(
                at=time.time(),
                origin=origin,
                platform=result.platform or platform or "auto",
                recognised=result.unrecognised is None,
                unrecognised=result.unrecognised,
                identity=self.redact(identity),
                consent=result.consent.allowed,
                consent_reason=result.consent.reason,
                behavioral=(b.source, b.reason, len(b.cohorts)),
                contextual=(c.source, c.reason, len(c.cohorts)),
                written=sum(len(v) for v in result.keyvalues.values()),
                elapsed_ms=result.elapsed_ms,
            )
        )

    def redact(self, identity: Identity | None) -> str:
        """The identity's kind and tags, and a short salted hash of the whole of it."""
        if identity is None:
            return "none"
        if identity.user_id is not None:
            kind = "user_id"
        elif identity.alias is not None:
            kind = "alias:" + identity.alias.tag[:_TAG_CHARS]
        else:
            kind = "aliases:" + ",".join(a.tag[:_TAG_CHARS] for a in identity.aliases or ())
        h = hashlib.blake2b(identity.cache_key().encode(), key=self._salt, digest_size=4)
        return f"{kind}#{h.hexdigest()}"

    def snapshot(self) -> list[Decision]:
        """Newest first."""
        return list(reversed(self._ring))

    def document(self) -> dict[str, Any]:
        """The ring as the explain page reads it: records, and counts over them."""
        records = self.snapshot()
        return {
            "size": self._ring.maxlen,
            "seen": self.seen,
            "decisions": [{**msgspec.to_builtins(d), "why": why(d)} for d in records],
            "counts": counts(records),
        }


def why(d: Decision) -> str:
    """One line: what was written, or the first reason nothing was."""
    if not d.recognised:
        return f"not recognised ({d.unrecognised}): sent on unchanged"
    if d.written:
        return f"{d.written} written"
    parts = []
    if not d.consent:
        parts.append(f"consent denied ({d.consent_reason})")
    for name, (source, reason, n) in (("behavioral", d.behavioral), ("contextual", d.contextual)):
        if source == "skipped" or (not d.consent and name == "behavioral"):
            continue
        parts.append(f"{name} {source} ({reason})" if n == 0 else f"{name}: {n} not written")
    return "nothing written: " + "; ".join(parts)


def counts(records: list[Decision]) -> dict[str, list[tuple[str, int]]]:
    """Per platform, consent reason and each signal's reason, most frequent first."""
    tallies: dict[str, Counter[str]] = {
        "platform": Counter(),
        "consent": Counter(),
        "behavioral": Counter(),
        "contextual": Counter(),
    }
    for d in records:
        tallies["platform"][d.platform] += 1
        tallies["consent"][("allowed: " if d.consent else "denied: ") + d.consent_reason] += 1
        tallies["behavioral"][f"{d.behavioral[0]}: {d.behavioral[1]}"] += 1
        tallies["contextual"][f"{d.contextual[0]}: {d.contextual[1]}"] += 1
    return {k: v.most_common() for k, v in tallies.items()}
