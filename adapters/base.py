"""The adapter contract: one ad platform's request format, nothing else.

An adapter says whether it recognises an `AdRequest` (and why not), reads a `Context` out of
it, and writes key-values into it, returning the new request and exactly what it wrote. It
depends only on the shared vocabulary (`plugin.request`, `plugin.context`, `plugin.identity`),
never on the enricher or the configuration loader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, ClassVar, Protocol

import msgspec

from plugin.context import ContentIdRule, Context
from plugin.request import AdRequest, Applied

KeyValuesIn = Mapping[str, Sequence[str]]
"""Key-values to write: key → values (a bare string counts as one value)."""

ErrorHook = Callable[[str, str, BaseException], None]
"""Called with (platform, stage, exception) when an adapter's own code raised: the stage is
`recognise`, `parse` or `apply`. The request still goes out; the hook counts and logs."""

SkipHook = Callable[[str, str], None]
"""Called with (platform, reason) when an adapter leaves out something the request carries or
something it was asked to write (a device id of unknown type, a bidder it cannot write for):
the hook counts and logs it, as machine input, at a bounded rate."""

CohortsFor = Callable[[Sequence[str]], dict[str, list[str]]]
"""The key-values (as `[keys]` merges or splits them, without the user id) of the cohorts the
API answers activated for these activation names: for adapters that place cohorts per bidder
or per kind of activation rather than as one set of key-values."""

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^\S+$")]
PropertyName = Annotated[str, msgspec.Meta(pattern=r"^(\*|[A-Za-z0-9_\-]{1,64})$")]
"""A play-event property, or `*` for "the rest of the parameter's name" (with a key that ends
in `*`: `"_fw_content_*" = "*"`)."""
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class AdapterSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """`[adapters.<platform>]`: what every platform's section takes; None means the adapter's
    own default (`Adapter.defaults`). Platforms with settings of their own subclass this."""

    activation_platforms: tuple[str, ...] | None = None
    """The API answers' activation names whose cohorts go into this platform's requests."""
    play_event: Name | None = None
    """The play event sent with the first ad request of a view (`Videoview`, `AudioPlay`)."""
    content_section: KeyName | None = None
    """The Contextual request's `page_properties` section that mirrors the play event."""
    client_type: Name | None = None
    """`client.type` for events and the Contextual request, when this platform's traffic is
    of one kind (the host can also say it per request)."""
    properties: dict[str, PropertyName] | None = None
    """Platform parameter → play-event property (a trailing `*` maps a whole prefix)."""


class ContentId(msgspec.Struct, frozen=True):
    """A platform parameter that identifies content when the request names no content URL.

    The content key is then `<platform>://<namespace>/<id>`: `namespace_param`'s value when
    the request has it (GAM's `cmsid`), else `namespace`. Both parameters are read as the
    play-event properties they are mapped to (`properties`), so a host's
    `cohortkv_p.<property>` names the content too, and a mapping without the parameter has no
    content id from it."""

    param: str
    namespace: str
    namespace_param: str | None = None


class Example(msgspec.Struct, frozen=True):
    """A viewer's ad request as a player or stitcher would make it: the demo and `verify`
    build each platform's request from its adapter's `example`, so both follow the registry."""

    device_tag: str
    device_id: str
    tc_string: str
    content_url: str
    section: str
    video_id: str
    duration_s: int
    slot: str
    """`preroll` or `midroll`."""
    position_s: int
    correlator: int


class Adapter(Protocol):
    @property
    def name(self) -> str: ...

    activation_platforms: tuple[str, ...]
    play_event: str
    content_section: str
    client_type: str | None
    content_ids: tuple[ContentIdRule, ...]
    """What identifies content without a URL, in order of preference."""

    def unrecognised(self, request: AdRequest) -> str | None:
        """None when this is one of the platform's ad requests, else why not (a short reason,
        used as a metric label: `path`, `method`, `body`, ...)."""
        ...

    def parse(self, request: AdRequest) -> Context: ...

    def apply(
        self, request: AdRequest, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None = None
    ) -> Applied:
        """Writes `keyvalues` (the cohorts activated for `activation_platforms`); an adapter
        that places cohorts per activation name asks `cohorts_for`, when given."""
        ...


class FailOpen:
    """The never-raise shell every adapter shares: an exception from the platform-specific
    `_unrecognised` / `_parse` / `_apply` becomes "not mine" (reason `error`), an empty
    Context, or the request unchanged, and is reported to `on_error`. An ad request is never
    lost to a parser bug, and never lost silently."""

    name: ClassVar[str]
    Settings: ClassVar[type[AdapterSettings]] = AdapterSettings
    label: ClassVar[str] = ""
    """The platform's name for people (`GAM`); its `name` when empty."""
    shape: ClassVar[str] = ""
    """What its ad requests look like, for people (`cohortkv enrich` on a request it cannot
    handle lists every platform's shape)."""
    auto_detect: ClassVar[bool] = True
    """Whether `find_adapter` may pick this adapter by looking at a request."""
    default_activation_platforms: ClassVar[tuple[str, ...]] = ()
    default_play_event: ClassVar[str] = "Videoview"
    default_content_section: ClassVar[str] = "video"
    default_properties: ClassVar[Mapping[str, str]] = {}
    default_content_ids: ClassVar[tuple[ContentId, ...]] = ()
    """The platform's content ids (`ContentId`), most specific first."""

    def __init__(
        self,
        settings: AdapterSettings | None = None,
        *,
        on_error: ErrorHook | None = None,
        on_skip: SkipHook | None = None,
    ) -> None:
        s = settings if settings is not None else self.Settings()
        self.settings = s
        self.activation_platforms: tuple[str, ...] = (
            self.default_activation_platforms
            if s.activation_platforms is None
            else tuple(s.activation_platforms)
        )
        self.play_event: str = s.play_event or self.default_play_event
        self.content_section: str = s.content_section or self.default_content_section
        self.client_type: str | None = s.client_type
        self.properties: Mapping[str, str] = (
            self.default_properties if s.properties is None else dict(s.properties)
        )
        self.content_ids: tuple[ContentIdRule, ...] = tuple(
            ContentIdRule(
                self.properties[c.param],
                c.namespace,
                self.properties.get(c.namespace_param) if c.namespace_param else None,
            )
            for c in self.default_content_ids
            if c.param in self.properties
        )
        self.on_error = on_error
        self.on_skip = on_skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"

    @classmethod
    def example(cls, e: Example) -> AdRequest | None:
        """A realistic ad request of this platform, carrying the device id, the consent string
        and the content; None when the platform has none to show."""
        return None

    def _failed(self, stage: str, e: BaseException) -> None:
        hook = self.on_error
        if hook is not None:
            # a broken hook must not break the ad request either
            with contextlib.suppress(Exception):
                hook(self.name, stage, e)

    def _skipped(self, reason: str) -> None:
        hook = self.on_skip
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(self.name, reason)

    def unrecognised(self, request: AdRequest) -> str | None:
        try:
            return self._unrecognised(request)
        except Exception as e:
            self._failed("recognise", e)
            return "error"

    def matches(self, request: AdRequest) -> bool:
        return self.unrecognised(request) is None

    def parse(self, request: AdRequest) -> Context:
        try:
            return self._parse(request)
        except Exception as e:
            self._failed("parse", e)
            return Context()

    def apply(
        self, request: AdRequest, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None = None
    ) -> Applied:
        if not keyvalues:
            return Applied(request, {})
        try:
            if cohorts_for is None:
                return self._apply(request, keyvalues)
            return self._apply_cohorts(request, keyvalues, cohorts_for)
        except Exception as e:
            self._failed("apply", e)
            return Applied(request, {})

    def _unrecognised(self, request: AdRequest) -> str | None:
        raise NotImplementedError

    def _parse(self, request: AdRequest) -> Context:
        raise NotImplementedError

    def _apply(self, request: AdRequest, keyvalues: KeyValuesIn) -> Applied:
        raise NotImplementedError

    def _apply_cohorts(
        self, request: AdRequest, keyvalues: KeyValuesIn, cohorts_for: CohortsFor
    ) -> Applied:
        """`_apply`, for an adapter that places cohorts per activation name: override."""
        return self._apply(request, keyvalues)


class UrlAdapter(FailOpen):
    """A platform whose ad requests carry everything in the URL: only the URL is read, and
    only the platform's own parameter or section of it is rewritten, byte for byte."""

    def _unrecognised(self, request: AdRequest) -> str | None:
        return self._url_unrecognised(request.url)

    def _parse(self, request: AdRequest) -> Context:
        return self._parse_url(request.url)

    def _apply(self, request: AdRequest, keyvalues: KeyValuesIn) -> Applied:
        url, written = self._apply_url(request.url, keyvalues)
        return Applied(request.with_url(url), written) if written else Applied(request, {})

    def parse_url(self, url: str) -> Context:
        """`parse` of a GET of `url`."""
        return self.parse(AdRequest(url))

    def apply_url(self, url: str, keyvalues: KeyValuesIn) -> str:
        """`apply` to a GET of `url`: the URL as it goes out."""
        return self.apply(AdRequest(url), keyvalues).request.url

    def strip_keys(self, request: AdRequest, keys: Collection[str]) -> tuple[AdRequest, int]:
        """`request` without the values already under our `keys` (any case), and how many
        went: a viewer's own values where cohortkv must not write (consent denied) or writes
        the only truth (the contextual key)."""
        try:
            url, dropped = self._strip_url(request.url, frozenset(k.lower() for k in keys))
        except Exception as e:
            self._failed("apply", e)
            return request, 0
        return (request.with_url(url), dropped) if dropped else (request, 0)

    def _strip_url(self, url: str, keys: frozenset[str]) -> tuple[str, int]:
        """`strip_keys` for a URL; `keys` in lowercase. A platform without an override keeps
        everything."""
        return url, 0

    def _url_unrecognised(self, url: str) -> str | None:
        raise NotImplementedError

    def _parse_url(self, url: str) -> Context:
        raise NotImplementedError

    def _apply_url(self, url: str, keyvalues: KeyValuesIn) -> tuple[str, dict[str, list[str]]]:
        raise NotImplementedError
