"""`cohortkv enrich`'s request flags: a GET of a URL, or a request with a body (a bid request).

`--method`, `--data @file.json` / `--data -` (stdin) / `--data TEXT` and `--header NAME:VALUE`
(repeatable), as curl takes them: a body without `--method` is a POST. A body is read up to
`serve.max_body_bytes` (1 MiB by default), the sidecar's own limit: `--data @/dev/zero` or an
endless pipe is a mistake named at once, not a process that fills its memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin.errors import CohortkvError
from plugin.request import AdRequest

METHODS = ("GET", "POST")


def add_request_flags(e: argparse.ArgumentParser) -> None:
    e.add_argument(
        "--method",
        type=str.upper,
        choices=METHODS,
        help="the ad request's method (default: POST with --data, else GET)",
    )
    e.add_argument(
        "--data",
        metavar="@FILE|-|TEXT",
        help="the request body: @FILE reads a file, - reads stdin (a bid request's JSON)",
    )
    e.add_argument(
        "--header",
        metavar="NAME:VALUE",
        action="append",
        default=[],
        help="a request header (repeat for several), e.g. Content-Type:application/json",
    )


def request_from_args(args: argparse.Namespace, max_body_bytes: int) -> AdRequest:
    """The ad request the flags describe; a `CohortkvError` naming the flag for a mistake."""
    body = b"" if args.data is None else _body(args.data, max_body_bytes)
    method = args.method or ("POST" if args.data is not None else "GET")
    if method == "GET" and body:
        raise CohortkvError("--method", "POST (or no --method) with --data", "GET")
    headers = tuple(_header(h) for h in args.header)
    return AdRequest(args.url, method=method, headers=headers, body=body)


def _body(spec: str, limit: int) -> bytes:
    if spec in ("-", "@-"):
        body = sys.stdin.buffer.read(limit + 1)
    elif spec.startswith("@"):
        path = Path(spec[1:])
        try:
            with path.open("rb") as f:
                body = f.read(limit + 1)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise CohortkvError(
                "--data", "a readable file after @", got_text=f"{path} ({reason})"
            ) from None
    else:
        body = spec.encode()
    if len(body) > limit:
        raise CohortkvError(
            "--data",
            f"a body of at most {limit} bytes (serve.max_body_bytes)",
            got_text="a longer one",
        )
    return body


def _header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\n" in value:
        raise CohortkvError("--header", "NAME:VALUE (e.g. Content-Type:application/json)", spec)
    return name.strip(), value.strip()
