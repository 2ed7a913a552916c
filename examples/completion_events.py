"""The play event goes out with the view's first ad request; send the completion (time spent,
share watched) when the viewer stops. Plain dicts or plugin.Event both work.

    COHORTKV_SANDBOX=true python examples/completion_events.py
"""

import asyncio
from datetime import UTC, datetime

from plugin import (
    Alias,
    ConsentSignals,
    Content,
    Context,
    Enricher,
    EventIds,
    Identity,
    load_config,
)

VIEWER = Identity(alias=Alias(tag="tifa", id="6D92078A-8246-4BA4-AE5B-76104861E7DC"))
CONTENT_URL = "https://example.com/sport/football/match-1"
SSAI_SESSION = "mediatailor-session-1"  # the stitcher's session id, if there is one


async def main() -> None:
    async with Enricher(load_config()) as enricher:
        consent = ConsentSignals(override=True)  # what your CMP says for this viewer
        await enricher.enrich(  # the first ad break: the play event goes out with it
            "https://pubads.g.doubleclick.net/gampad/ads?iu=/123/ctv&output=vast",
            Context(
                identity=VIEWER,
                consent=consent,
                content=Content(url=CONTENT_URL),
                ssai_session_id=SSAI_SESSION,
            ),
        )
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sent = await enricher.track(
            [
                {
                    "name": "VideoCompletion",
                    "time": now,
                    "properties": {"percentage_watched": 0.92, "time_spent_seconds": 1290},
                }
            ],
            identity=VIEWER,
            consent=consent,
            ids=EventIds(ssai_session_id=SSAI_SESSION, content_url=CONTENT_URL),  # same view
        )
    print(f"completion events sent: {sent}")


asyncio.run(main())
