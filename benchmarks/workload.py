"""The ad requests every scenario sends: GAM VAST tags from CTV devices, Zipf over content.

Each request carries its own identity and consent in the tag, as a player or SSAI stitcher
sends them (`rdid` + `idtype=idfa`, `gdpr=0`), and its content in `description_url`. Content
URLs follow a Zipf law over `contents` URLs, as viewing does.

Two mixes:

- `ad_requests` (worst case): every request is a different user's first ad break, so the
  enriched path makes a live CCS call on every request, like the naive integration does.
- `realistic` : views of `breaks` ad breaks (a pre-roll and mid-rolls), many views at once so
  that other viewers' requests come between two breaks of one view; a share of the viewers
  consented, and a share returning, i.e. with an earlier view whose answer a long-running
  sidecar has cached. That earlier history comes back separately, to be sent first (unmeasured).
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
NEW = "N"
"""Label of every request of the worst-case mix: a new viewer's first break."""


def label(returning: bool, consented: bool, brk: int) -> str:
    """`R`/`N` (returning or new viewer), `C`/`D` (consented or denied), the break's index."""
    return f"{'R' if returning else 'N'}{'C' if consented else 'D'}{brk}"


@dataclass(frozen=True)
class Mix:
    """What the realistic mix is made of."""

    breaks: int = 4
    """Ad breaks per view: a pre-roll and `breaks - 1` mid-rolls."""
    consented: float = 0.7
    """Share of viewers whose requests pass the consent gate (`gdpr=0`; else `rdp=1`)."""
    returning: float = 0.5
    """Share of views by a viewer who had an earlier view (a cached answer, when consented)."""
    window: int = 1024
    """Views in progress at once: two breaks of one view are this many requests apart (a
    view's next break never overlaps its previous one, even at concurrency 256)."""


class _View:
    __slots__ = ("consented", "device", "next_break", "rank", "returning")

    def __init__(self, device: str, rank: int, consented: bool) -> None:
        self.device = device
        self.rank = rank
        self.consented = consented
        self.returning = False
        self.next_break = 0


@dataclass(frozen=True)
class Workload:
    contents: int = 100
    zipf_s: float = 1.0
    consented: float = 1.0
    """Share of requests with `gdpr=0` (consent gate passes); the others carry `rdp=1`."""
    seed: int = 1

    def content_url(self, rank: int) -> str:
        return f"https://video.example.com/watch/{rank:04d}"

    def _ranks(self) -> tuple[list[float], float]:
        weights = [1 / (k**self.zipf_s) for k in range(1, self.contents + 1)]
        cum = list(itertools.accumulate(weights))
        return cum, cum[-1]

    def _url(self, base: str, i: int, rank: int, device: str, consented: bool) -> str:
        consent = "gdpr=0" if consented else "rdp=1"
        return (
            f"{base}/gampad/ads?{GAM_QUERY}&correlator={i}"
            f"&description_url={quote(self.content_url(rank), safe='')}&vid=v{rank}"
            f"&rdid={device}&idtype=idfa&is_lat=0&{consent}"
        )

    def ad_requests(self, base: str, n: int, seed: int | None = None) -> list[str]:
        """`n` GAM ad request URLs against `base` (`http://host:port[/proxy/gam]`)."""
        rnd = random.Random(self.seed if seed is None else seed)
        cum, total = self._ranks()
        out = []
        for i in range(n):
            rank = bisect.bisect_left(cum, rnd.random() * total) + 1
            device = str(uuid.UUID(int=rnd.getrandbits(128), version=4)).upper()
            out.append(self._url(base, i, rank, device, rnd.random() < self.consented))
        return out

    def realistic(
        self, base: str, n: int, mix: Mix = Mix(), history_upto: int | None = None
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """`n` (URL, label) pairs of the realistic mix, and the history to send before them.

        `mix.window` views run at once, visited in one fixed order, one break each per round:
        two breaks of a view are `window` requests apart, with other viewers' requests between.
        A view that has had its last break is replaced by a new one, by a returning viewer
        with probability `mix.returning`. Views in progress at the start are staggered over
        every break index, so the mix is steady from the first request.

        The history holds, for the requests before position `history_upto` (all by default):
        one earlier view's first break (another content URL) of each consented returning
        viewer, and the earlier breaks of the views already in progress at the start, ordered
        by break index (a view's breaks never in flight together).
        """
        upto = n if history_upto is None else min(n, history_upto)
        views = _Views(self, base, mix, upto)
        out = views.requests(n)
        return out, views.history()


class _Views:
    """The views of the realistic mix in progress (one per slot), and the history they leave."""

    def __init__(self, workload: Workload, base: str, mix: Mix, upto: int) -> None:
        self.workload, self.base, self.mix, self.upto = workload, base, mix, upto
        self.rnd = random.Random(workload.seed)
        self.cum, self.total = workload._ranks()
        self.earlier: list[list[str]] = [[] for _ in range(mix.breaks)]
        self.returning_first: list[str] = []
        self.counter = itertools.count(1_000_000_000)
        self.slots = [self.new_view(s % mix.breaks, 0) for s in range(mix.window)]

    def rank(self) -> int:
        return bisect.bisect_left(self.cum, self.rnd.random() * self.total) + 1

    def device(self) -> str:
        return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4)).upper()

    def new_view(self, start: int, at: int) -> _View:
        """A view from break `start` on, replacing one whose last break was request `at`."""
        mix, url = self.mix, self.workload._url
        view = _View(self.device(), self.rank(), self.rnd.random() < mix.consented)
        view.returning = self.rnd.random() < mix.returning
        view.next_break = start
        if view.returning and view.consented and at < self.upto:
            other = self.rank()
            while other == view.rank and self.workload.contents > 1:
                other = self.rank()
            self.returning_first.append(
                url(self.base, next(self.counter), other, view.device, True)
            )
        if at < self.upto:  # in slot order, so that a view's earlier breaks are far apart
            for b in range(start):
                self.earlier[b].append(
                    url(self.base, next(self.counter), view.rank, view.device, view.consented)
                )
        return view

    def requests(self, n: int) -> list[tuple[str, str]]:
        """`n` (URL, label) pairs: the slots visited in one fixed shuffled order, round after
        round, a view that has had its last break replaced by a new one."""
        order = list(range(self.mix.window))
        self.rnd.shuffle(order)
        out: list[tuple[str, str]] = []
        i = 0
        while i < n:
            for s in order:
                if i >= n:
                    break
                view = self.slots[s]
                url = self.workload._url(self.base, i, view.rank, view.device, view.consented)
                out.append((url, label(view.returning, view.consented, view.next_break)))
                i += 1
                view.next_break += 1
                if view.next_break >= self.mix.breaks:
                    self.slots[s] = self.new_view(0, i)
        return out

    def history(self) -> list[str]:
        return self.returning_first + [url for by_break in self.earlier for url in by_break]
