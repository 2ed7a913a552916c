"""cohortkv: Permutive audience key-values for outgoing ad requests."""

from __future__ import annotations

from plugin.config import Config, ConfigError, load_config
from plugin.context import ConsentSignals, Content, Context
from plugin.enricher import Enricher
from plugin.errors import CohortkvError, RequestError
from plugin.identity import Alias, Identity, IdentityError, email_sha256, generate_permutive_id
from plugin.permutive.wire import Event
from plugin.request import AdRequest
from plugin.result import EnrichResult, SignalResult
from plugin.signals.tracker import EventIds
from plugin.tracking import Denied, Prepared
from plugin.version import __version__

__all__ = [
    "AdRequest",
    "Alias",
    "CohortkvError",
    "Config",
    "ConfigError",
    "ConsentSignals",
    "Content",
    "Context",
    "Denied",
    "EnrichResult",
    "Enricher",
    "Event",
    "EventIds",
    "Identity",
    "IdentityError",
    "Prepared",
    "RequestError",
    "SignalResult",
    "__version__",
    "email_sha256",
    "generate_permutive_id",
    "load_config",
]
