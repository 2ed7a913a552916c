"""Waiting for an eventual state in a test: a condition, never a duration."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], object | Awaitable[object]], timeout_s: float = 10.0, what: str = ""
) -> None:
    """Polls `check` (sync or async) every 10 ms until it is truthy; fails after `timeout_s`,
    a generous bound that only a hang reaches."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout_s} s: {what or check}")
        await asyncio.sleep(0.01)
