"""`cohortkv serve`: the SSAI sidecar — enriching ad-server proxy, enrich and events API.

`make_app(config)` gives the aiohttp application (the enricher, the ad-server session and the
event queue start and stop with it); `cohortkv serve` runs it with graceful shutdown.
"""

from __future__ import annotations

from plugin.serve.app import SIDECAR, Sidecar, make_app

__all__ = ["SIDECAR", "Sidecar", "make_app"]
