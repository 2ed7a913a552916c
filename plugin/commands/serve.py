"""`cohortkv serve [--config FILE] [--host H] [--port N] [--workers N]`: flags and config.

The sidecar itself (`plugin.serve.runner`) is imported when the command runs, not when the
command line is parsed.
"""

from __future__ import annotations

import argparse

import msgspec

from plugin.commands.args import port_type, workers_flag
from plugin.commands.config_args import add_api_flags, config_from_args
from plugin.config import Config

HELP = "run the enriching sidecar (proxy, enrich and events API)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_api_flags(parser)
    defaults = Config().serve
    parser.add_argument(
        "--host",
        metavar="H",
        help=f"listen address (default: serve.host from the config, {defaults.host})",
    )
    parser.add_argument(
        "--port",
        type=port_type("--port"),
        metavar="N",
        help=f"listen port; 0: any free (default: serve.port from the config, {defaults.port})",
    )
    parser.add_argument(
        "--access-log", action="store_true", default=None, help="JSON access log on stdout"
    )
    parser.add_argument(
        "--workers",
        type=workers_flag,
        metavar="N",
        help="processes serving the port (needs cache.redis_url when not 1); 0: one per core"
        f" (default: serve.workers from the config, {defaults.workers})",
    )
    parser.set_defaults(run=run)


def config_for(args: argparse.Namespace) -> Config:
    cfg = config_from_args(args)
    changes = {
        k: v
        for k, v in (
            ("host", args.host),
            ("port", args.port),
            ("access_log", args.access_log),
            ("workers", args.workers),
        )
        if v is not None
    }
    if changes:
        cfg = cfg.with_overrides(serve=msgspec.structs.replace(cfg.serve, **changes))
    return cfg


async def run(args: argparse.Namespace) -> int:
    from plugin.serve.runner import serve  # the sidecar's imports, only when it runs

    return await serve(config_for(args))
