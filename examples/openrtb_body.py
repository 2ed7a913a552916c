"""Enrich an OpenRTB bid request (a POST body, as Prebid Server's /openrtb2/auction takes it).

COHORTKV_SANDBOX=true python examples/openrtb_body.py
"""

import asyncio
import json

from plugin import AdRequest, ConsentSignals, Context, Enricher, load_config

BID_REQUEST = {
    "id": "auction-1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 1920, "h": 1080}}],
    "app": {
        "bundle": "com.example.ctv",
        "content": {"id": "match-1", "url": "https://example.com/sport/football/match-1"},
    },
    "device": {"ifa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "os": "tvOS"},
    "regs": {"coppa": 0},
}


async def main() -> None:
    # OpenRTB starts with no activation names: list the ones your Permutive dashboard
    # activates for Prebid (the sandbox's cohorts are activated for "dfp").
    config = load_config().with_overrides(adapters={"openrtb": {"activation_platforms": ["dfp"]}})
    request = AdRequest(
        "https://prebid-server.example.com/openrtb2/auction",
        method="POST",
        headers=(("Content-Type", "application/json"),),
        body=json.dumps(BID_REQUEST).encode(),
    )
    async with Enricher(config) as enricher:
        result = await enricher.enrich(
            request, Context(consent=ConsentSignals(override=True)), platform="openrtb"
        )
    assert result.request is not None
    sent = json.loads(result.request.body)  # what goes to Prebid Server
    print(json.dumps({"user": sent.get("user"), "app": sent.get("app")}, indent=2))
    print("key-values:", result.keyvalues)


asyncio.run(main())
