"""Ad platform adapters: read a Context out of an ad request, write key-values into it.

The adapters use `plugin`'s shared vocabulary (AdRequest, Context, Identity); `plugin` is
initialised first so that importing an adapter before `plugin` finds that vocabulary ready.
"""

import plugin as _plugin  # noqa: F401  (initialisation order, see above)

# isort: split

from adapters.adswizz import AdsWizzAdapter
from adapters.base import (
    Adapter,
    AdapterSettings,
    FailOpen,
    KeyValuesIn,
    Parsed,
    Unrecognised,
    UrlAdapter,
)
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
    detect,
    read_as,
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
    "Parsed",
    "QueryAdapter",
    "QuerySettings",
    "Unrecognised",
    "UrlAdapter",
    "adapter_by_name",
    "build_adapters",
    "default_adapters",
    "detect",
    "read_as",
    "settings_type",
    "supported_shapes",
]
