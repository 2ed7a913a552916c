"""The errors a person can cause, with the field they got wrong and what was expected there:
every one of them is here (the modules that raise them re-export theirs).

Edges (the CLI, the sidecar's JSON API, the config loader) catch `CohortkvError` and only it:
its `field` / `expected` become exit-2 lines and 400 bodies. Anything else that escapes is a
bug of ours, and is reported as one (a traceback, a counted 500), never blamed on the caller.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from plugin.body_types import FieldError

_NOTHING: Any = object()


class CohortkvError(ValueError):
    """A person's mistake: `field` names where, `expected` says what would have been right.

    Without `expected`, `field` is a whole message (a mistake that is not one field's).
    `where` says whose input it was (`config`, `environment COHORTKV_X`, `--flag`); `got`, when
    given, is shown (a short repr; `got_text` is shown as is, for a description)."""

    def __init__(
        self,
        field: str,
        expected: str = "",
        got: Any = _NOTHING,
        *,
        where: str = "",
        got_text: str | None = None,
    ) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        self.where = where
        shown = f", got {got_text}" if got_text is not None else ""
        if got is not _NOTHING:
            shown = f", got {_shown(got)}"
        head = f"{where}: {field}" if where else field
        super().__init__(f"{head}: expected {expected}{shown}" if expected else head)


class RequestError(CohortkvError):
    """Something wrong in a request a person wrote: an HTTP body, a library argument."""


class ConfigError(CohortkvError):
    """A person's configuration mistake (file, environment, flag or `Config(...)`). The
    message is whole, as it was written where the mistake was found; `field` names the
    setting (`cache.contextual_ttl_s`) when known."""

    def __init__(self, message: str, *, field: str = "config") -> None:
        ValueError.__init__(self, message)
        self.field = field
        self.expected = message
        self.got = None
        self.where = "config"


class EnvError(CohortkvError):
    """A `COHORTKV_*` variable that cannot be used; the message names it and its field."""

    def __init__(
        self, variable: str, path: tuple[str, ...], expected: str, inner: str = ""
    ) -> None:
        self.variable = variable
        self.path = path
        self.expected = expected
        where = ".".join(path) + inner
        ValueError.__init__(self, f"environment {variable}: {where}: {expected}")
        self.field = where
        self.got = None
        self.where = f"environment {variable}"


class IdentityError(CohortkvError):
    """A person supplied an identity the CCS API would reject."""


class WorkspaceError(CohortkvError):
    """A person's mistake in a workspace file; the message names the field and what was
    expected. A `CohortkvError`, so that the command line says it in one line (exit 2)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.field = "--workspace"
        self.expected = message
        self.got = None
        self.where = "workspace"


class UsageError(CohortkvError):
    """A command-line value a person typed that cannot be used: `field` is the flag."""


class BodyError(CohortkvError):
    """Every bad field of a request body at once (`field` / `expected` are the first's)."""

    def __init__(self, fields: list[FieldError]) -> None:
        first = fields[0] if fields else FieldError("body", "a valid request")
        super().__init__(first.field, first.expected)
        ValueError.__init__(self, "; ".join(f"{f.field}: expected {f.expected}" for f in fields))
        self.fields = fields


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_AT = re.compile(r" - at `\$(.*)`$")


def msgspec_problem(e: msgspec.ValidationError) -> tuple[str, str]:
    """(path, problem) out of msgspec's message: the one place its text is read, and put in
    the project's words ("expected ...").

    `Expected `int` >= 1, got `str` - at `$.cache.ttl`` → (`.cache.ttl`, `expected `int` >= 1,
    got `str``); `Expected `str` of length <= 64` → `expected `str` of at most 64 characters`;
    a missing or unknown field is named in the path (`.cache.typo`: `unknown field`). The path
    keeps msgspec's form (`.a.b`, `[2]`) and is "" at the root."""
    message = str(e)
    m = _AT.search(message)
    path, text = ("", message) if m is None else (m.group(1), message[: m.start()])
    if f := _FIELD.fullmatch(text):
        problem = "unknown field" if f[1] == "contains unknown" else _REQUIRED
        return f"{path}.{f[2]}", problem
    if f := _ENUM.fullmatch(text):
        return path, f"{ENUM_PROBLEM}{f[1]}"
    text = _LENGTH.sub(_length, text)
    return path, f"{text[:1].lower()}{text[1:]}"


ENUM_PROBLEM = "expected one of the allowed values, got "
"""How a value outside a closed set begins; callers that know the set name its values."""
_REQUIRED = "expected a value (the field is required)"
_FIELD = re.compile(r"Object (contains unknown|missing required) field `(.*)`", re.S)
_ENUM = re.compile(r"Invalid enum value (.*)", re.S)
_LENGTH = re.compile(r"`(str|bytes|array|object)` of length (<=|>=) (\d+)")
_UNITS = {"str": "characters", "bytes": "bytes", "array": "items", "object": "entries"}


def _length(m: re.Match[str]) -> str:
    bound = "at most" if m[2] == "<=" else "at least"
    return f"`{m[1]}` of {bound} {m[3]} {_UNITS[m[1]]}"
