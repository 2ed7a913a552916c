"""The ad requests every scenario sends: GAM VAST tags from CTV devices, Zipf over content.

Each request carries its own identity and consent in the tag, as a player or SSAI stitcher
sends them (`rdid` + `idtype=idfa`, `gdpr=0`), and its content in `description_url`. By default
every request is a different user's first ad break, so the enriched path makes a live CCS call
on every request, like the naive integration does: the worst case for cohortkv, no view reuse.
Content URLs follow a Zipf law over `contents` URLs, as viewing does.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from dataclasses import dataclass
from urllib.parse import quote

GAM_QUERY = (
    "iu=/21775744923/external/ctv&sz=640x480&gdfp_req=1&output=vast&env=vp"
    "&unviewed_position_start=1&impl=s&vpmute=0&plcmt=1&cust_params=sect%3Dsport%26ctv%3D1"
)


@dataclass(frozen=True)
class Workload:
    contents: int = 100
    zipf_s: float = 1.0
    consented: float = 1.0
    """Share of requests with `gdpr=0` (consent gate passes); the others carry `rdp=1`."""
    seed: int = 1

    def content_url(self, rank: int) -> str:
        return f"https://video.example.com/watch/{rank:04d}"

    def ad_requests(self, base: str, n: int, seed: int | None = None) -> list[str]:
        """`n` GAM ad request URLs against `base` (`http://host:port[/proxy/gam]`)."""
        rnd = random.Random(self.seed if seed is None else seed)
        weights = [1 / (k**self.zipf_s) for k in range(1, self.contents + 1)]
        cum = list(itertools.accumulate(weights))
        total = cum[-1]
        out = []
        for i in range(n):
            rank = bisect.bisect_left(cum, rnd.random() * total) + 1
            device = str(uuid.UUID(int=rnd.getrandbits(128), version=4)).upper()
            consent = "gdpr=0" if rnd.random() < self.consented else "rdp=1"
            out.append(
                f"{base}/gampad/ads?{GAM_QUERY}&correlator={i}"
                f"&description_url={quote(self.content_url(rank), safe='')}&vid=v{rank}"
                f"&rdid={device}&idtype=idfa&is_lat=0&{consent}"
            )
        return out
