"""Cohorts on every ad request an aiohttp ClientSession sends (for hosts that call ad servers
themselves). AD_SERVER is the ad server's base URL.

    COHORTKV_SANDBOX=true python examples/aiohttp_middleware.py
"""

import asyncio
import os

import aiohttp

from plugin import Alias, ConsentSignals, Content, Context, Enricher, Identity, load_config
from plugin.middleware import ad_context, cohortkv_middleware

AD_SERVER = os.environ.get("AD_SERVER", "https://pubads.g.doubleclick.net")

VIEWER = Identity(alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
"""The viewer's device id (tifa: a Roku; idfa, aaid, rida, ... as the device says)."""


async def main() -> None:
    async with (
        Enricher(load_config()) as enricher,
        aiohttp.ClientSession(middlewares=(cohortkv_middleware(enricher),)) as session,
    ):
        viewer = Context(
            identity=VIEWER,
            consent=ConsentSignals(override=True),
            content=Content(url="https://example.com/sport/football/match-1"),
        )
        with ad_context(viewer):  # optional: without it the URL's own parameters are read
            async with session.get(f"{AD_SERVER}/gampad/ads?iu=/123/ctv&output=vast") as resp:
                vast = await resp.text()
        print("ad server answered", resp.status, f"({len(vast)} bytes of VAST)")


asyncio.run(main())
