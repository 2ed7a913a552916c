"""The one list of ad platforms. Everything that names platforms (the CLI's `--platform`, the
`[adapters.*]` config sections, the sidecar's per-upstream `platform`, the demo, `verify`)
reads it from here.

A new platform is one new module plus one line in `ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adapters.adswizz import AdsWizzAdapter
from adapters.base import Adapter, AdapterSettings, ErrorHook, FailOpen, SkipHook
from adapters.freewheel import FreeWheelAdapter
from adapters.gam import GamAdapter
from adapters.openrtb import OpenRtbAdapter
from adapters.query import QueryAdapter
from plugin.errors import CohortkvError
from plugin.request import AdRequest

ADAPTERS: tuple[type[FailOpen], ...] = (
    GamAdapter,
    FreeWheelAdapter,
    AdsWizzAdapter,
    QueryAdapter,
    OpenRtbAdapter,
)
"""Every platform, in the order `find_adapter` tries the auto-detectable ones."""

KNOWN_ADAPTERS: tuple[str, ...] = tuple(a.name for a in ADAPTERS)

_BY_NAME: dict[str, type[FailOpen]] = {a.name: a for a in ADAPTERS}


def _has_example(adapter: type[FailOpen]) -> bool:
    own: object = getattr(adapter.example, "__func__", None)
    return own is not getattr(FailOpen.example, "__func__", None)


EXAMPLE_PLATFORMS: tuple[str, ...] = tuple(a.name for a in ADAPTERS if _has_example(a))
"""The platforms with an example ad request (`FailOpen.example`), for the demo and `verify`."""


def adapter_class(name: str) -> type[FailOpen]:
    """The adapter class called `name`; a `CohortkvError` naming the valid ones otherwise."""
    found = _BY_NAME.get(name)
    if found is None:
        raise CohortkvError("platform", f"one of: {', '.join(KNOWN_ADAPTERS)}", name)
    return found


def settings_type(name: str) -> type[AdapterSettings] | None:
    """The `[adapters.<name>]` settings struct of platform `name`; None for no such platform."""
    adapter = _BY_NAME.get(name)
    return None if adapter is None else adapter.Settings


def build_adapters(
    settings: Mapping[str, AdapterSettings] | None = None,
    *,
    on_error: ErrorHook | None = None,
    on_skip: SkipHook | None = None,
) -> tuple[Adapter, ...]:
    """One adapter per platform, each with its settings (defaults where none are given)."""
    given = settings or {}
    built = tuple(a(given.get(a.name), on_error=on_error) for a in ADAPTERS)
    for adapter in built:
        adapter.on_skip = on_skip
    return built


def default_adapters() -> tuple[Adapter, ...]:
    return build_adapters()


def supported_shapes(adapters: Iterable[Adapter | type[FailOpen]] = ADAPTERS) -> str:
    """One line per platform: its name and what its ad requests look like."""
    return "\n".join(
        f"  {a.name}: {getattr(a, 'shape', '') or 'see adapters/README.md'}" for a in adapters
    )


def find_adapter(adapters: Iterable[Adapter], request: AdRequest) -> Adapter | None:
    """The first auto-detectable adapter that recognises the request; None when none does."""
    for adapter in adapters:
        if getattr(adapter, "auto_detect", True) and adapter.unrecognised(request) is None:
            return adapter
    return None


def adapter_by_name(adapters: Iterable[Adapter], name: str) -> Adapter:
    """The adapter called `name`; a `CohortkvError` naming the valid ones otherwise (a
    person's mistake: configuration, CLI flag or HTTP request)."""
    available = tuple(adapters)
    for adapter in available:
        if adapter.name == name:
            return adapter
    valid = ", ".join(a.name for a in available) or "none configured"
    raise CohortkvError("platform", f"one of: {valid}", name)
