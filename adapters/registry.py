"""The one list of ad platforms. Everything that names platforms (the CLI's `--platform`, the
`[adapters.*]` config sections, the sidecar's per-upstream `platform`, the demo, `verify`)
reads it from here.

A new platform is one new module plus one line in `ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from adapters.adswizz import AdsWizzAdapter
from adapters.base import (
    Adapter,
    AdapterSettings,
    ErrorHook,
    FailOpen,
    Parsed,
    SkipHook,
    Unrecognised,
)
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
"""Every platform, in the order `detect` tries the auto-detectable ones."""

NO_ADAPTER = Unrecognised("no_adapter")
"""`detect`'s answer when no auto-detectable adapter recognises a request."""

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


def detect(adapters: Iterable[Adapter], request: AdRequest) -> Parsed | Unrecognised:
    """The request as the first auto-detectable adapter that recognises it read it;
    `Unrecognised("no_adapter")` when none does. Each adapter reads it once, and the first
    that recognises it is the only one to read it in full."""
    for adapter in adapters:
        if getattr(adapter, "auto_detect", True):
            found = adapter.read(request)
            if isinstance(found, Parsed):
                return found
    return NO_ADAPTER


def read_as(
    adapters: Iterable[Adapter], request: AdRequest, platform: str | None
) -> Parsed | Unrecognised:
    """The request read by the adapter called `platform` (a `CohortkvError` for no such
    adapter: a person's mistake), or by the one that recognises it (`platform` None or
    `auto`)."""
    if platform is None or platform == "auto":
        return detect(adapters, request)
    return adapter_by_name(adapters, platform).read(request)


def adapter_by_name(adapters: Iterable[Adapter], name: str) -> Adapter:
    """The adapter called `name`; a `CohortkvError` naming the valid ones otherwise (a
    person's mistake: configuration, CLI flag or HTTP request)."""
    available = tuple(adapters)
    for adapter in available:
        if adapter.name == name:
            return adapter
    valid = ", ".join(a.name for a in available) or "none configured"
    raise CohortkvError("platform", f"one of: {valid}", name)
