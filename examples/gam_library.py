"""Enrich one Google Ad Manager ad request in your own code (the library).

COHORTKV_SANDBOX=true python examples/gam_library.py   # the built-in sandbox
COHORTKV_API_KEY=... python examples/gam_library.py    # Permutive's APIs
"""

import asyncio

from plugin import Alias, ConsentSignals, Content, Context, Enricher, Identity, load_config

VAST_TAG = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/external/single_ad_samples"
    "&sz=640x480&cust_params=sample_ct%3Dlinear&output=vast&env=vp&impl=s&correlator="
)

VIEWER = Identity(alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
"""The viewer's device id (tifa: a Roku; idfa, aaid, rida, ... as the device says)."""


async def main() -> None:
    config = load_config()  # COHORTKV_* variables; load_config("cohortkv.toml") for a file
    async with Enricher(config) as enricher:
        result = await enricher.enrich(
            VAST_TAG,
            Context(
                identity=Identity(
                    alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC")
                ),
                consent=ConsentSignals(override=True),  # what your CMP says for this viewer
                content=Content(
                    url="https://example.com/sport/football/match-1",
                    properties={"categories": ["sports"]},
                ),
            ),
        )
    print(result.url)
    print("key-values:", result.keyvalues)
    print("behavioral:", result.behavioral.source, result.behavioral.reason)
    print("contextual:", result.contextual.source, result.contextual.reason)


asyncio.run(main())
