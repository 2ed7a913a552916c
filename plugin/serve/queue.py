"""Where `/v1/events` puts accepted player events: one Protocol, two queues.

- `memory` (`plugin.serve.events.MemoryQueue`, the default): bounded, in this process; what it
  cannot deliver by shutdown is counted and logged, and a crash loses what it holds.
- `redis` (`plugin.serve.stream_queue.RedisQueue`): an event is answered 202 only once it is in
  a Redis Stream; replicas deliver from a consumer group, so accepted events survive a crash.

Both deliver through `plugin.serve.delivery` (the product's one event-sending path, per-user
order, at most 10 events per call).
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from plugin.tracking import Prepared

Offered = Literal["accepted", "full", "unavailable"]
"""`full`: the bound is reached; `unavailable`: the queue could not take them (Redis down)."""


class EventQueue(Protocol):
    @property
    def max(self) -> int:
        """The bound (events) that `full` refers to."""
        ...

    @property
    def depth(self) -> int:
        """Events this replica holds and has not settled yet."""
        ...

    def start(self) -> None: ...

    async def offer(self, prepared: Prepared) -> Offered:
        """All of the batch's events, or none of them. Only what `Enricher.prepare_events`
        prepared can be offered: consent was decided there, and is not decided again."""
        ...

    async def close(self, timeout_s: float) -> int:
        """Stops taking events, settles what it can within `timeout_s`; returns how many
        accepted events are lost (counted and logged)."""
        ...


def user_key(prepared: Prepared) -> bytes:
    """The batch's identity exactly (its JSON): a queue's per-user key."""
    return msgspec.json.encode(prepared.identity)
