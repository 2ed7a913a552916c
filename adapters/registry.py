"""The adapters a deployment knows, built from configuration.

A new platform is one new module plus one line in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from plugin.config import AdaptersConfig

_FACTORIES: dict[str, Callable[[AdaptersConfig], Adapter]] = {
    "gam": lambda c: GamAdapter(c.gam.activation_platforms, c.gam.max_url_length),
    "freewheel": lambda c: FreeWheelAdapter(c.freewheel.activation_platforms),
    "adswizz": lambda c: AdsWizzAdapter(c.adswizz.activation_platforms),
}

KNOWN_ADAPTERS: tuple[str, ...] = tuple(_FACTORIES)
"""Adapter names in the order `find_adapter` tries them."""


def default_adapters(cfg: AdaptersConfig | None = None) -> tuple[Adapter, ...]:
    """One adapter per known platform, configured from `cfg` (defaults when None)."""
    cfg = AdaptersConfig() if cfg is None else cfg
    return tuple(factory(cfg) for factory in _FACTORIES.values())


def find_adapter(adapters: Iterable[Adapter], url: str) -> Adapter | None:
    """The first adapter that recognises the URL; None when none does. Never raises."""
    for adapter in adapters:
        try:
            if adapter.matches(url):
                return adapter
        except Exception:
            continue
    return None


def adapter_by_name(adapters: Iterable[Adapter], name: str) -> Adapter:
    """The adapter called `name`; a ValueError naming the valid ones otherwise (a person's
    mistake: configuration, CLI flag or HTTP request)."""
    available = tuple(adapters)
    for adapter in available:
        if adapter.name == name:
            return adapter
    valid = ", ".join(a.name for a in available) or "none configured"
    raise ValueError(f"adapter: unknown name {name!r}; expected one of: {valid}")
