"""The errors a person can cause, with the field they got wrong and what was expected there.

Edges (the CLI, the sidecar's JSON API, the config loader) catch `CohortkvError` and only it:
its `field` / `expected` become exit-2 lines and 400 bodies. Anything else that escapes is a
bug of ours, and is reported as one (a traceback, a counted 500), never blamed on the caller.
"""

from __future__ import annotations

from typing import Any

_NOTHING: Any = object()


class CohortkvError(ValueError):
    """A person's mistake: `field` names where, `expected` says what would have been right."""

    def __init__(self, field: str, expected: str, got: Any = _NOTHING) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        shown = "" if got is _NOTHING else f", got {_shown(got)}"
        super().__init__(f"{field}: expected {expected}{shown}")


class RequestError(CohortkvError):
    """Something wrong in a request a person wrote: an HTTP body, a library argument."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
