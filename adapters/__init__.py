"""Ad platform adapters: read a Context out of an ad request, write key-values into it."""

from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter, AdapterSettings, FailOpen, KeyValuesIn, UrlAdapter
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter, GamSettings
from adapters.openrtb import OpenRtbAdapter, OpenRtbSettings
from adapters.query import QueryAdapter, QuerySettings
from adapters.registry import (
    ADAPTERS,
    KNOWN_ADAPTERS,
    adapter_by_name,
    build_adapters,
    default_adapters,
    find_adapter,
    settings_type,
    supported_shapes,
)

__all__ = [
    "ADAPTERS",
    "KNOWN_ADAPTERS",
    "Adapter",
    "AdapterSettings",
    "AdsWizzAdapter",
    "FailOpen",
    "FreeWheelAdapter",
    "GamAdapter",
    "GamSettings",
    "KeyValuesIn",
    "OpenRtbAdapter",
    "OpenRtbSettings",
    "QueryAdapter",
    "QuerySettings",
    "UrlAdapter",
    "adapter_by_name",
    "build_adapters",
    "default_adapters",
    "find_adapter",
    "settings_type",
    "supported_shapes",
]
