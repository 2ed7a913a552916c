"""`cohortkv` command line: enrich one URL, run the sandbox, the sidecar, the demo, verify.

A person's mistake on the command line (a bad flag value, a bad config file) ends with one
line naming the flag or field and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from adapters.registry import KNOWN_ADAPTERS, supported_shapes
from plugin.commands import demo, serve, verify
from plugin.commands.args import (
    DefaultsHelpFormatter,
    EpilogHelpFormatter,
    UsageError,
    listen_error,
    port_type,
    positive_int,
)
from plugin.commands.config_args import add_api_flags, config_from_args
from plugin.commands.failures import EXIT_API_FAILED, failure_lines
from plugin.commands.request_args import add_request_flags, request_from_args
from plugin.config import Config, KeysConfig, load_config
from plugin.context import Context
from plugin.errors import CohortkvError
from plugin.observe.logs import LEVELS, configure_logging
from plugin.overrides import Mistake, from_flags
from plugin.result import EnrichResult, result_doc
from plugin.version import __version__

if TYPE_CHECKING:
    from plugin.enricher import Enricher

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohortkv",
        description="Permutive audience key-values for outgoing ad requests.",
        epilog=EXIT_CODES,
        formatter_class=EpilogHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_enrich(sub)
    _add_sandbox(sub)
    for name, module in (("serve", serve), ("demo", demo), ("verify", verify)):
        p = sub.add_parser(name, help=module.HELP, formatter_class=DefaultsHelpFormatter)
        module.configure(p)
    for p in sub.choices.values():
        add_log_flags(p, default=argparse.SUPPRESS)
    return parser


EXIT_CODES = """exit status:
  0  done
  1  cohortkv verify: a verification step failed
  2  a usage or configuration mistake (one line says which flag or field)
  3  cohortkv enrich: not an ad request any platform (or --platform) recognises
  4  cohortkv enrich: a Permutive API failed (auth, unreachable, 5xx, timeout); the
     enriched URL is still printed, with the cohorts that could be had"""


def add_log_flags(p: argparse.ArgumentParser, default: object) -> None:
    """`--log-level` and `-v`, before the sub-command or after it (a sub-command's own `-v`,
    as `demo`'s, keeps its meaning there). `default` SUPPRESS: an absent flag after the
    sub-command leaves what was given before it."""
    p.add_argument(
        "--log-level",
        type=str.lower,
        choices=tuple(LEVELS),
        default=default,
        help="lowest level of the log lines on stderr (default: [log] level, info)",
    )
    with contextlib.suppress(argparse.ArgumentError):  # the sub-command has its own -v
        p.add_argument(
            "-v", "--verbose", action="store_true", default=default, help="debug logging"
        )


def _add_enrich(sub: Any) -> None:
    """`cohortkv enrich URL`: the ad request, who the user is, their consent, the content, how
    the cohorts are written and the budget; the API flags."""
    defaults = Config()
    e = sub.add_parser(
        "enrich",
        help="enrich one ad request (a URL, or a bid request body) and print it",
        epilog=EXIT_CODES,
        formatter_class=EpilogHelpFormatter,
    )
    e.add_argument(
        "url",
        metavar="URL",
        help=f"the ad request URL, in the format of one of: {', '.join(KNOWN_ADAPTERS)}",
    )
    add_request_flags(e)
    e.add_argument(
        "--platform",
        default="auto",
        choices=("auto", *KNOWN_ADAPTERS),
        help="the adapter that reads the ad request; auto: the one that recognises it",
    )
    who = e.add_mutually_exclusive_group()
    who.add_argument("--user-id", metavar="UUID", help="Permutive user id (UUIDv4)")
    who.add_argument(
        "--alias",
        metavar="TAG:ID[:PRIORITY]",
        action="append",
        help="alias identity; repeat with priorities for several",
    )
    e.add_argument(
        "--consent",
        default="auto",
        choices=("auto", "granted", "denied"),
        help="auto: decide from the URL's own consent parameters",
    )
    e.add_argument("--content-url", metavar="URL", help="the content's deterministic URL")
    _add_mode_flags(e, defaults.keys)
    e.add_argument(
        "--budget-ms",
        type=positive_int("--budget-ms"),
        metavar="N",
        help="deadline for the cohorts, in milliseconds; the ad request never waits longer"
        f" (default: budget_ms from the config, {defaults.budget_ms})",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    add_api_flags(e)
    e.set_defaults(run=_enrich)


def _add_mode_flags(e: argparse.ArgumentParser, keys: KeysConfig) -> None:
    """`--split` or `--merge`: the behavioral and contextual cohorts under their own keys or one."""
    mode = e.add_mutually_exclusive_group()
    mode.add_argument(
        "--split",
        dest="mode",
        action="store_const",
        const="split",
        help=f"behavioral cohorts under {keys.behavioral!r}, contextual under {keys.contextual!r}"
        " (keys.behavioral, keys.contextual)",
    )
    mode.add_argument(
        "--merge",
        dest="mode",
        action="store_const",
        const="merge",
        help=f"behavioral then contextual cohorts under one key, {keys.behavioral!r}"
        f" (default: keys.mode from the config, {keys.mode})",
    )


def _add_sandbox(sub: Any) -> None:
    """`cohortkv sandbox`: where it listens and the workspace it serves."""
    s = sub.add_parser(
        "sandbox",
        help="run the local sandbox of the Permutive APIs",
        formatter_class=DefaultsHelpFormatter,
    )
    s.add_argument("--host", default="127.0.0.1", help="listen address")
    s.add_argument("--port", type=port_type("--port"), default=8787, help="listen port")
    s.add_argument("--workspace", metavar="FILE", help="workspace TOML (default: shipped)")
    s.set_defaults(run=_sandbox)


def context_from_args(args: argparse.Namespace) -> Context | None:
    """`--user-id`, `--alias`, `--consent`, `--content-url` as a context (`plugin.overrides`);
    a mistake ends the command naming the flag."""
    return from_flags(args.user_id, args.alias or (), args.consent, args.content_url, _usage)


def _usage(m: Mistake) -> NoReturn:
    raise UsageError(m.field, m.expected)


async def _enrich(args: argparse.Namespace) -> int:
    from plugin.enricher import Enricher

    cfg = config_from_args(args)
    context = context_from_args(args)
    request = request_from_args(args, cfg.serve.max_body_bytes)
    async with Enricher(cfg) as enricher:
        result = await enricher.enrich(request, context, platform=args.platform, origin="cli")
        failed = api_failures(enricher, result)
    if not result.recognised:
        print(
            f"cohortkv enrich: not an ad request {args.platform or 'any platform'} recognises"
            f" ({result.unrecognised}); it was not enriched. Supported ad requests:\n"
            f"{supported_shapes(enricher.adapters)}",
            file=sys.stderr,
        )
        return 3
    if args.json:
        doc = result_doc(result)
        sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")
    else:
        out = result.request
        if out is not None and out.body:
            sys.stdout.buffer.write(out.body + b"\n")
            sys.stdout.flush()
        else:
            print(result.url)
        b, c = result.behavioral, result.contextual
        print(
            f"# platform={result.platform or '-'} consent="
            f"{'allowed' if result.consent.allowed else 'denied'} ({result.consent.reason}) "
            f"behavioral={b.source}/{b.reason}{b.cohorts} "
            f"contextual={c.source}/{c.reason}{c.cohorts} "
            f"elapsed={result.elapsed_ms:.1f}ms",
            file=sys.stderr,
        )
    for line in failed:
        print(f"cohortkv enrich: {line}", file=sys.stderr)
    return EXIT_API_FAILED if failed else 0


def api_failures(enricher: Enricher, result: EnrichResult) -> list[str]:
    """A line per Permutive API that failed this enrichment (which, why, the fix)."""
    up, cfg = enricher.backends, enricher.config
    errors = up.last_errors()
    urls = {"ccs": cfg.ccs_url, "contextual": cfg.ctx_url}
    if enricher.sandbox is not None:
        urls = {"ccs": enricher.sandbox.base_url, "contextual": enricher.sandbox.base_url}
    return failure_lines(result, errors, urls, cfg.budget_ms)


async def _sandbox(args: argparse.Namespace) -> int:
    from plugin.sandbox import serve_forever

    try:
        await serve_forever(args.host, args.port, args.workspace)
    except OSError as e:
        raise UsageError(listen_error(args.host, args.port, e)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    json_lines = False
    try:
        # Unknown COHORTKV_* variables are warned about by the command's own load, once logging
        # is set up (plain or JSON lines).
        cfg = load_config(getattr(args, "config", None), warn_unknown_env=False)
        json_lines = cfg.log.json
        configure_logging(
            json_lines=json_lines,
            level=log_level(args, cfg),
            secrets=[s for s in (cfg.api_key, getattr(args, "api_key", None)) if s],
        )
        return _run(run(args))
    except CohortkvError as e:
        line = f"cohortkv {args.command}: {e}"
        if json_lines:  # every line JSON, the last one too (before logging is set up: plain)
            logging.getLogger("cohortkv").error(line)
        else:
            print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def log_level(args: argparse.Namespace, cfg: Config) -> int:
    """`--log-level`, else `-v` (debug), else `[log] level`."""
    if getattr(args, "log_level", None):
        return LEVELS[args.log_level]
    return logging.DEBUG if getattr(args, "verbose", None) else LEVELS[cfg.log.level]


def _reader_went_away() -> int:
    """The reader of our output closed it (`cohortkv demo | head -1`): stop quietly, as a
    program that SIGPIPE ends does, and let nothing flush into the closed pipe at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + signal.SIGPIPE


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        pass  # not installed: asyncio's loop, run outside this handler, so that a traceback
        # of a bug of ours does not begin with uvloop's absence
    else:
        result: int = uvloop.run(coro)
        return result
    return asyncio.run(coro)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
