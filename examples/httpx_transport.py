"""Cohorts on every ad request an httpx.AsyncClient sends (pip install 'cohortkv[httpx]').
AD_SERVER is the ad server's base URL.

    COHORTKV_SANDBOX=true python examples/httpx_transport.py
"""

import asyncio
import os

import httpx

from plugin import Alias, ConsentSignals, Content, Context, Enricher, Identity, load_config
from plugin.httpx import CohortkvTransport, ad_context

AD_SERVER = os.environ.get("AD_SERVER", "https://pubads.g.doubleclick.net")

VIEWER = Identity(alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
"""The viewer's device id (tifa: a Roku; idfa, aaid, rida, ... as the device says)."""


async def main() -> None:
    async with Enricher(load_config()) as enricher:
        transport = CohortkvTransport(enricher, wrapped=httpx.AsyncHTTPTransport(retries=1))
        async with httpx.AsyncClient(transport=transport) as client:
            viewer = Context(
                identity=Identity(
                    alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC")
                ),
                consent=ConsentSignals(override=True),
                content=Content(url="https://example.com/sport/football/match-1"),
            )
            with ad_context(viewer):  # optional: without it the URL's own parameters are read
                resp = await client.get(f"{AD_SERVER}/gampad/ads?iu=/123/ctv&output=vast")
    print("ad server answered", resp.status_code, f"({len(resp.content)} bytes of VAST)")


asyncio.run(main())
