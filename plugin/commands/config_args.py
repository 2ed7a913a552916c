"""The flags of the commands that talk to the Permutive APIs, and the config they make: the
config file and `COHORTKV_*` environment first, the flags given on top."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from plugin.commands.args import base_url
from plugin.config import Config, load_config


def add_api_flags(p: argparse.ArgumentParser) -> None:
    """`--config`, `--ccs-url`, `--ctx-url`, `--api-key`, `--sandbox`: see `config_from_args`."""
    p.add_argument("--config", metavar="FILE", help="TOML config file (plus COHORTKV_* env)")
    defaults = Config()
    p.add_argument(
        "--ccs-url",
        metavar="URL",
        type=base_url("--ccs-url", defaults.ccs_url),
        help=f"CCS API base URL (default: ccs_url from the config, {defaults.ccs_url})",
    )
    p.add_argument(
        "--ctx-url",
        metavar="URL",
        type=base_url("--ctx-url", defaults.ctx_url),
        help=f"Contextual API base URL (default: ctx_url from the config, {defaults.ctx_url})",
    )
    p.add_argument("--api-key", metavar="KEY", help="Permutive API key (or COHORTKV_API_KEY)")
    p.add_argument(
        "--sandbox",
        action="store_true",
        default=None,
        help="use the built-in sandbox of the Permutive APIs on purpose (no key, no network)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file and environment, then the flags given on the command line on top."""
    cfg = load_config(getattr(args, "config", None))
    changes: dict[str, Any] = {}
    for flag, field in (("ccs_url", "ccs_url"), ("ctx_url", "ctx_url"), ("api_key", "api_key")):
        value = getattr(args, flag, None)
        if value is not None:
            changes[field] = value
    if getattr(args, "sandbox", None):
        changes["sandbox"] = True
    if getattr(args, "budget_ms", None) is not None:
        changes["budget_ms"] = args.budget_ms
    if getattr(args, "mode", None) is not None:
        changes["keys"] = msgspec.structs.replace(cfg.keys, mode=args.mode)
    return cfg.with_overrides(**changes) if changes else cfg
