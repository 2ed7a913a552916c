"""The passthrough proxy with the naive integration in front of every forward.

python -m benchmarks.baselines.naive_proxy --upstream gam=URL --ccs-url URL --ctx-url URL
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import aiohttp

from benchmarks.baselines.naive import NaiveIntegration
from benchmarks.baselines.passthrough import Transform, cli


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ccs-url", required=True)
    p.add_argument("--ctx-url", required=True)
    p.add_argument("--api-key", default="bench-key")
    p.add_argument("--budget-ms", type=float, default=300.0, help="timeout of each API call")


def _naive(a: argparse.Namespace) -> Callable[[aiohttp.ClientSession], Transform]:
    def make(session: aiohttp.ClientSession) -> Transform:
        return NaiveIntegration(
            session, a.ccs_url, a.ctx_url, a.api_key, timeout_s=a.budget_ms / 1000
        ).enrich

    return make


if __name__ == "__main__":
    sys.exit(cli("python -m benchmarks.baselines.naive_proxy", None, _naive, _flags))
