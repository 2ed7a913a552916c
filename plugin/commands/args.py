"""Command-line pieces shared by the commands: checked flag values, help with defaults, and a
one-line reason when a server cannot listen.

A flag value that cannot work is refused while the arguments are parsed, before anything
starts, with the flag's name and what was expected (argparse exits with status 2). Values that
can carry a secret (a URL with credentials or `?k=KEY`) are never echoed.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from collections.abc import Callable

from plugin.config_check import base_url_problem
from plugin.errors import UsageError as UsageError


def base_url(flag: str, example: str) -> Callable[[str], str]:
    """An argparse `type` for an API base URL: http(s), a host, no credentials, query or
    fragment, and not an endpoint's own path (the clients add `/ccs/v1/...`, `/ctx/v1/...`)."""

    def parse(value: str) -> str:
        problem = base_url_problem(value, example)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value.strip()

    parse.__name__ = flag
    return parse


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse `type` for a count or a duration in whole units: an integer above 0."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
        return n

    parse.__name__ = flag
    return parse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds `(default: X)` to an option's help when it has a default worth showing (not None
    or False, and not already said in the help text)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if (
            text is None
            or not action.option_strings
            or "(default" in text
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class EpilogHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the options' help, and the description and epilog (the exit statuses)
    laid out as written."""


def listen_error(host: str, port: int, error: OSError) -> str:
    """One line saying why a server could not listen, blaming the flag that can fix it."""
    if isinstance(error, socket.gaierror):
        return f"--host: cannot resolve {host!r}: {error.strerror or error}"
    code = error.errno
    reason = os.strerror(code).lower() if code is not None and code > 0 else str(error)
    if code == errno.EADDRNOTAVAIL:
        return f"--host: cannot listen on {host}: {reason} (not an address of this machine)"
    hint = {
        errno.EADDRINUSE: " (another process listens there; pick another --port)",
        errno.EACCES: " (ports below 1024 need privileges; pick another --port)",
    }.get(code or 0, "")
    return f"--port: cannot listen on {host}:{port}: {reason}{hint}"


def port_type(flag: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = -1
        if not 0 <= n <= 65535:
            raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
        return n

    parse.__name__ = flag
    return parse


def workers_flag(value: str) -> int:
    """`--workers N`: a whole number, 0 or more."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes, 0 or more (0: one per core), got {value!r}"
        )
    return n


workers_flag.__name__ = "--workers"
