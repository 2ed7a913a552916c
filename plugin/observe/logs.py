"""Logging set-up: plain or JSON lines, a request id carried through, secrets scrubbed.

The request id lives in a context variable, so every line logged while handling one request
(by the sidecar, the enricher or the sources) carries it without being passed around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cohortkv_request_id", default=None
)

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Replaces each secret with `***` wherever a record can carry it: the message and its
    arguments, exception text and traceback, stack info, and `extra` fields.

    The code never logs the API key on purpose; this is the belt to those braces. Exceptions
    are formatted here, once, so that the handler's formatter prints the scrubbed text.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # A very short "secret" would blank out ordinary words; real API keys are long.
        self._secrets = tuple(s for s in secrets if s and len(s) >= 6)
        self._formatter = logging.Formatter()

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        msg = record.getMessage()
        clean = self.scrub(msg)
        if clean is not msg and clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key in _RESERVED or key.startswith("_"):
                continue
            text = value if isinstance(value, str) else repr(value)
            if any(s in text for s in self._secrets):
                record.__dict__[key] = self.scrub(text)
        return True


LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""`[log] level` and `--log-level` values."""


def iso_utc(created: float) -> str:
    """A time stamp as ISO 8601 in UTC to the millisecond: `2026-11-24T01:34:56.789Z`."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """`2026-11-24T01:34:56.789Z WARNING cohortkv.serve: message [request_id=...]`: the same
    time stamp as the JSON lines (ISO 8601, UTC)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_utc(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id_var.get()
        return f"{line} [request_id={rid}]" if rid is not None else line


def configure_logging(
    *, json_lines: bool = False, level: int = logging.WARNING, secrets: Iterable[str] = ()
) -> None:
    """Root handler on stderr for the CLI and the sidecar; libraries leave logging alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
