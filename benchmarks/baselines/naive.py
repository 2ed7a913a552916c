"""The straightforward integration a publisher writes from the Direct API guide.

For each ad request: call the CCS API (consented users), then the Contextual API, one after the
other, with the guide's suggested per-call timeout and no cache, then merge the `dfp`
activations into `cust_params`. Standard library JSON and URL handling, one shared aiohttp
session (a fresh session per request would be slower still). It is the baseline, not a strawman:
it does nothing wrong, it only does everything in line and every time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import aiohttp


class NaiveIntegration:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        ccs_url: str,
        ctx_url: str,
        api_key: str,
        timeout_s: float = 0.3,
    ) -> None:
        self.session = session
        self.ccs = ccs_url.rstrip("/") + "/ccs/v1/segmentation?activations=true"
        self.ctx = ctx_url.rstrip("/") + "/ctx/v1/segment?k=" + quote(api_key)
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        try:
            async with self.session.post(
                url, json=body, headers=headers, timeout=self.timeout
            ) as resp:
                if resp.status != 200:
                    return {}
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}

    async def enrich(self, ad_url: str) -> str:
        parts = urlsplit(ad_url)
        params = parse_qs(parts.query, keep_blank_values=True)

        def first(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        content_url = first("description_url")
        video = {"video_id": first("vid")} if first("vid") else {}
        cohorts: list[str] = []

        device, idtype = first("rdid"), first("idtype")
        if first("gdpr") == "0" and first("rdp") != "1" and device and idtype:
            answer = await self._post(
                self.ccs,
                {
                    "alias": {"tag": idtype, "id": device},
                    "events": [
                        {
                            "name": "Videoview",
                            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                            "properties": video,
                        }
                    ],
                },
                {"X-Api-Key": self.api_key},
            )
            cohorts += answer.get("activations", {}).get("dfp", [])

        if content_url:
            answer = await self._post(
                self.ctx,
                {
                    "url": content_url,
                    "page_properties": {"client": {"url": content_url}, "video": video},
                },
                {},
            )
            cohorts += answer.get("activations", {}).get("dfp", [])

        if not cohorts:
            return ad_url
        merged = list(dict.fromkeys(cohorts))
        existing = first("cust_params")
        kv = urlencode({"permutive": ",".join(merged)})
        params["cust_params"] = [f"{existing}&{kv}" if existing else kv]
        query = urlencode(params, doseq=True)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
