"""What a failed CCS call says about its events: sent again, they must never count twice.

The CCS API processes every event it receives, and frequency cohorts ("3+ videos") count each
one, so an event is sent again only when the API provably did not process it:

- `unsent`: no call was made (breaker open, shed), the connection could not be opened or
  failed while the request was being written, or the API answered 429 or 503 (with or without
  `Retry-After`): not processed, safe to send again;
- `refused`: any other 4xx (400, 401, 403, ...): read and refused, sending again cannot help;
- `delivered`: a 2xx answer we could not read: processed;
- `uncertain`: a timeout after the request was sent, the connection lost while waiting for the
  answer, any other 5xx, a redirect, an oversized answer: may have been processed.
"""

from __future__ import annotations

from typing import Literal

from plugin.permutive.clients import UpstreamError

Delivery = Literal["unsent", "refused", "delivered", "uncertain"]

_UNSENT_KINDS = frozenset({"breaker_open", "shed", "http_429"})
_UNSENT_STATUS = frozenset({429, 503})
_REFUSED_KINDS = frozenset({"http_4xx", "auth"})


def delivery(e: UpstreamError) -> Delivery:
    """Whether the request behind `e` was processed (see the module's table)."""
    if e.unsent or e.kind in _UNSENT_KINDS or e.status in _UNSENT_STATUS:
        return "unsent"
    if e.kind in _REFUSED_KINDS:
        return "refused"
    if e.kind == "decode":
        return "delivered"
    return "uncertain"
