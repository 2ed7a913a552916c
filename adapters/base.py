"""The adapter contract: one ad platform's request format, nothing else.

An adapter reads an `AdRequest` once: a `Parsed` (the request's `Context` and what the adapter
decoded for it) when it is one of the platform's, else an `Unrecognised` saying why not. It
writes key-values into a `Parsed`, returning the new request and exactly what it wrote. It
depends only on the shared vocabulary (`plugin.request`, `plugin.context`, `plugin.identity`),
never on the enricher or the configuration loader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Annotated, Any, ClassVar, NamedTuple, Protocol

import msgspec

from adapters.params import split_url
from plugin.context import ContentIdRule, Context
from plugin.request import AdRequest, Applied, KeyValues

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


class Parsed(msgspec.Struct, frozen=True):
    """A request an adapter recognised, read once: what it says (`context`) and what the
    adapter decoded to say it (`data`: the split URL, the decoded body and its spans), which
    `apply` writes from without reading the request again."""

    adapter: Adapter
    request: AdRequest
    context: Context
    data: Any = None
    """The adapter's own: only the adapter that made it reads it."""


class Unrecognised(msgspec.Struct, frozen=True):
    """A request that is not the platform's: it goes out unchanged, counted and logged."""

    reason: str
    """Why not, a short metric label: `path`, `method`, `json`, `body`, ..., `error` (the
    adapter failed), `no_adapter` (no auto-detectable adapter recognised it)."""
    platform: str | None = None
    """The adapter that said so; None for `no_adapter`."""


class Adapter(Protocol):
    @property
    def name(self) -> str: ...

    activation_platforms: tuple[str, ...]
    play_event: str
    content_section: str
    client_type: str | None
    content_ids: tuple[ContentIdRule, ...]
    """What identifies content without a URL, in order of preference."""

    def read(self, request: AdRequest) -> Parsed | Unrecognised:
        """The request's `Context` and what was decoded for it when it is one of the
        platform's ad requests, else why not."""
        ...

    def apply(
        self, parsed: Parsed, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None = None
    ) -> Applied:
        """Writes `keyvalues` (the cohorts activated for `activation_platforms`) into the
        request `read` gave; an adapter that places cohorts per activation name asks
        `cohorts_for`, when given."""
        ...


class FailOpen:
    """The never-raise shell every adapter shares. `read` recognises a request once
    (`_recognise`: what the adapter decoded, or an `Unrecognised`) and reads its Context
    from that (`_context`); `apply` writes from the same (`_apply`). An exception becomes
    "not mine" (reason `error`), an empty Context, or the request unchanged, and is reported
    to `on_error` with its stage (`recognise`, `parse`, `apply`). An ad request is never lost
    to a parser bug, and never lost silently."""

    name: ClassVar[str]
    Settings: ClassVar[type[AdapterSettings]] = AdapterSettings
    label: ClassVar[str] = ""
    """The platform's name for people (`GAM`); its `name` when empty."""
    shape: ClassVar[str] = ""
    """What its ad requests look like, for people (`cohortkv enrich` on a request it cannot
    handle lists every platform's shape)."""
    auto_detect: ClassVar[bool] = True
    """Whether `detect` may pick this adapter by looking at a request."""
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

    def read(self, request: AdRequest) -> Parsed | Unrecognised:
        try:
            data = self._recognise(request)
        except Exception as e:
            self._failed("recognise", e)
            return Unrecognised("error", self.name)
        if isinstance(data, Unrecognised):
            return data
        try:
            context = self._context(request, data)
        except Exception as e:
            self._failed("parse", e)
            context = Context()
        return Parsed(self, request, context, data)

    def apply(
        self, parsed: Parsed, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None = None
    ) -> Applied:
        if not keyvalues:
            return Applied(parsed.request, {})
        try:
            return self._apply(parsed, keyvalues, cohorts_for)
        except Exception as e:
            self._failed("apply", e)
            return Applied(parsed.request, {})

    def _not_mine(self, reason: str) -> Unrecognised:
        return Unrecognised(reason, self.name)

    def _recognise(self, request: AdRequest) -> Any:
        """What the adapter decoded of one of its requests (kept in `Parsed.data`), or an
        `Unrecognised` (`_not_mine`) saying why it is not one."""
        raise NotImplementedError

    def _context(self, request: AdRequest, data: Any) -> Context:
        raise NotImplementedError

    def _apply(
        self, parsed: Parsed, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None
    ) -> Applied:
        """Writes from `parsed.data`; `cohorts_for` matters only to adapters that place
        cohorts per activation name."""
        raise NotImplementedError


class SplitUrl(NamedTuple):
    """A URL and its parts as `params.split_url` splits it: what a URL adapter decoded of its
    request."""

    url: str
    base: str
    query: str | None
    fragment: str


class UrlAdapter(FailOpen):
    """A platform whose ad requests carry everything in the URL: only the URL is read (split
    once), and only the platform's own parameter or section of it is rewritten, byte for
    byte."""

    def _recognise(self, request: AdRequest) -> SplitUrl | Unrecognised:
        url = request.url
        split = SplitUrl(url, *split_url(url))
        why = self._url_unrecognised(split)
        return split if why is None else self._not_mine(why)

    def _context(self, request: AdRequest, data: Any) -> Context:
        return self._parse_url(data)

    def _apply(
        self, parsed: Parsed, keyvalues: KeyValuesIn, cohorts_for: CohortsFor | None
    ) -> Applied:
        url, written = self._apply_url(parsed.data, keyvalues)
        request = parsed.request
        return Applied(request.with_url(url), written) if written else Applied(request, {})

    def parse_url(self, url: str) -> Context:
        """The Context of a GET of `url` (an empty one when it is not the platform's)."""
        got = self.read(AdRequest(url))
        return got.context if isinstance(got, Parsed) else Context()

    def apply_url(self, url: str, keyvalues: KeyValuesIn) -> str:
        """`apply` to a GET of `url`: the URL as it goes out (unchanged when it is not the
        platform's)."""
        got = self.read(AdRequest(url))
        return self.apply(got, keyvalues).request.url if isinstance(got, Parsed) else url

    def strip_keys(self, parsed: Parsed, keys: Collection[str]) -> tuple[Parsed, int]:
        """`parsed` without the values already under our `keys` (any case), and how many
        went: a viewer's own values where cohortkv must not write (consent denied) or writes
        the only truth (the contextual key). It works on the URL `read` split, so the request
        is not read again, and `apply` writes into what is left."""
        split = parsed.data
        if not keys or not isinstance(split, SplitUrl) or split.query is None:
            return parsed, 0
        try:
            query, dropped = self._strip_query(split.query, frozenset(k.lower() for k in keys))
        except Exception as e:
            self._failed("apply", e)
            return parsed, 0
        if not dropped:
            return parsed, 0
        url = f"{split.base}?{query}{split.fragment}"
        stripped = SplitUrl(url, split.base, query, split.fragment)
        request = parsed.request.with_url(url)
        return msgspec.structs.replace(parsed, request=request, data=stripped), dropped

    def _strip_query(self, query: str, keys: frozenset[str]) -> tuple[str, int]:
        """`strip_keys` for the query of one of the platform's URLs (`keys` in lowercase):
        the query without them, and how many fields went. Without an override, nothing."""
        return query, 0

    def _url_unrecognised(self, split: SplitUrl) -> str | None:
        """None when the URL is the platform's, else why not."""
        raise NotImplementedError

    def _parse_url(self, split: SplitUrl) -> Context:
        raise NotImplementedError

    def _apply_url(self, split: SplitUrl, keyvalues: KeyValuesIn) -> tuple[str, KeyValues]:
        """The URL with `keyvalues` written, and what was written (nothing: unchanged)."""
        raise NotImplementedError
