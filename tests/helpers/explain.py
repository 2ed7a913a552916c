"""Ad requests a person pastes into the explain page, shared by its HTTP and browser tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.helpers.fake_adserver import Running

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IFA = "a3b1c2d4-0000-4000-8000-123456789abc"
CONTENT = "https://example.com/sport/football/highlights"

GAM_QUERY = (
    "iu=/21775744923/external/ssai&sz=640x480&output=vast&env=vp&impl=s&correlator=1"
    "&description_url=https%3A%2F%2Fexample.com%2Fsport%2Ffootball%2Fhighlights"
    f"&rdid={IDFA}&idtype=idfa&is_lat=0&us_privacy=1YNN"
    "&cust_params=section%3Dsport%26categories%3Dsports%2Cfootball"
)
GAM_URL = f"https://pubads.g.doubleclick.net/gampad/ads?{GAM_QUERY}"
GAM_PROXY_PATH = f"/proxy/gam/gampad/ads?{GAM_QUERY}&cohortkv_sid=ssai-42"

BID_REQUEST: dict[str, Any] = {
    "id": "req-1",
    "imp": [{"id": "1", "video": {"mimes": ["video/mp4"], "w": 1920, "h": 1080}}],
    "site": {"page": CONTENT, "content": {"id": "vid-42", "cat": ["sports", "football"]}},
    "device": {"ifa": IFA, "lmt": 0, "ext": {"ifa_type": "aaid"}},
    "user": {"ext": {"data": {"tier": "gold"}}},
    "regs": {"gdpr": 0, "coppa": 0, "us_privacy": "1YNN"},
}
OPENRTB_URL = "https://prebid-server.example.com/openrtb2/auction"
BID_BODY = json.dumps(BID_REQUEST, indent=2)


async def explain(r: Running, **doc: Any) -> tuple[int, Any]:
    """POST /explain/api as the page does: (status, JSON answer)."""
    resp = await r.client.post(
        "/explain/api", data=json.dumps(doc), headers={"Content-Type": "application/json"}
    )
    return resp.status, await resp.json()


async def get_json(r: Running, path: str, **kw: Any) -> tuple[int, Any]:
    resp: aiohttp.ClientResponse = await r.client.get(path, **kw)
    return resp.status, await resp.json()
