"""cohortkv: Permutive audience key-values for outgoing ad requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plugin.config import Config, ConfigError, load_config
from plugin.context import ConsentSignals, Content, Context
from plugin.identity import Alias, Identity, IdentityError, email_sha256, generate_permutive_id
from plugin.version import __version__

if TYPE_CHECKING:
    from plugin.enricher import Enricher, EnrichResult, SignalResult

__all__ = [
    "Alias",
    "Config",
    "ConfigError",
    "ConsentSignals",
    "Content",
    "Context",
    "EnrichResult",
    "Enricher",
    "Identity",
    "IdentityError",
    "SignalResult",
    "__version__",
    "email_sha256",
    "generate_permutive_id",
    "load_config",
]


def __getattr__(name: str) -> Any:
    # The enricher imports the adapters, which import plugin.context: load it lazily so that
    # `import adapters.gam` first does not form an import cycle.
    if name in ("Enricher", "EnrichResult", "SignalResult"):
        from plugin import enricher

        return getattr(enricher, name)
    raise AttributeError(name)
