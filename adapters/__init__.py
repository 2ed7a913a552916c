"""Ad platform adapters: read a Context out of an ad request URL, write key-values into it."""

from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter, KeyValues
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from adapters.registry import KNOWN_ADAPTERS, adapter_by_name, default_adapters, find_adapter

__all__ = [
    "KNOWN_ADAPTERS",
    "Adapter",
    "AdsWizzAdapter",
    "FreeWheelAdapter",
    "GamAdapter",
    "KeyValues",
    "adapter_by_name",
    "default_adapters",
    "find_adapter",
]
