"""One configuration struct, loaded from TOML with `COHORTKV_*` environment overrides.

Nested fields are reached from the environment with double underscores:
`COHORTKV_CACHE__CONTEXTUAL_TTL_S=120`, `COHORTKV_KEYS__MODE=split`. Each value is read as the
type of the field it sets, and variables that name no setting are only warned about: see
`plugin.config_env`.
"""

from __future__ import annotations

import logging
import os
import tomllib
import warnings
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import msgspec

from adapters.base import AdapterSettings
from adapters.registry import KNOWN_ADAPTERS, settings_type
from plugin.config_check import ConfigError as ConfigError
from plugin.config_check import base_url_problem, check_arguments, check_fields, humanize
from plugin.config_env import EnvError, name_variable, overlay, read_env, warn_unknown

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_\-]+$")]


PropertyType = Literal["string", "number", "boolean", "list"]
"""How a play-event property's text value (from a URL) is typed (`[events.properties]`)."""


def _root() -> type[Config]:
    return Config


class _Checked(msgspec.StructMeta):
    """`Config(...)` and its sections built in Python: an unknown keyword argument is a
    ConfigError naming it, as an unknown key in a file is."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        check_arguments(cast(type[msgspec.Struct], cls), _root, args, kwargs)
        return super().__call__(*args, **kwargs)


class _Section(
    msgspec.Struct,
    metaclass=_Checked,
    forbid_unknown_fields=True,
    omit_defaults=True,
    frozen=True,
):
    def __post_init__(self) -> None:
        check_fields(self, _root)


class ConsentConfig(_Section, frozen=True):
    vendor_id: PositiveInt = 361
    """Permutive's id in the IAB Global Vendor List."""
    purposes: tuple[PositiveInt, ...] = (1,)
    """TCF purposes that must all be consented (Purpose 1: store/access information)."""
    default: Literal["denied", "granted"] = "denied"
    """Decision when no signal is present or it cannot be decoded."""
    tcf_basis: Literal["vendor", "publisher"] = "vendor"
    """Whose TCF consent counts: `vendor` (the purposes in the core segment and vendor
    `vendor_id`'s consent) or `publisher` (the purposes in the publisher TC segment, as
    Prebid.js's Permutive module checks them; no vendor consent needed)."""


class CacheConfig(_Section, frozen=True):
    behavioral_ttl_s: PositiveFloat = 30 * 86400.0
    behavioral_max_entries: PositiveInt = 200_000
    contextual_ttl_s: PositiveFloat = 600.0
    contextual_max_entries: PositiveInt = 20_000
    contextual_stale_s: PositiveFloat = 86400.0
    """How long an expired contextual answer may still serve as fallback when the API fails."""
    redis_url: str | None = None
    """Shared cache for many replicas (`redis://host:6379/0`); needs `cohortkv[redis]`."""
    redis_cluster: bool = False
    redis_timeout_ms: PositiveInt = 50
    """How long an ad request or event waits for a shared answer or a view lookup before it
    goes on without (the call itself goes on; a view claim waits what is left of the budget)."""
    redis_call_timeout_ms: PositiveInt = 2000
    """A Redis call not answered within this long has failed: counted, and the breaker counts
    it. Calls a request stopped waiting for still end within it."""
    redis_max_connections: PositiveInt = 64
    """Connections to Redis per replica (per node in a cluster); a call waits for a free one."""
    redis_prefix: Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    ] = "cohortkv"
    """First part of every key this deployment writes (`cohortkv:c:...`): deployments (or
    test runs) sharing one Redis keep apart by giving each its own."""


class HttpConfig(_Section, frozen=True):
    pool_limit: PositiveInt = 1024
    pool_limit_per_host: NonNegInt = 512
    """Per host, so that a hanging API cannot hold every connection the other one needs."""
    keepalive_timeout_s: PositiveFloat = 30.0
    request_timeout_s: PositiveFloat = 5.0
    """Hard limit for one API call; answers later than the budget still refresh the cache."""
    max_response_bytes: PositiveInt = 1_048_576
    """An API answer larger than this is a failure, not something to buffer."""
    max_inflight_per_api: PositiveInt = 512
    """Calls in flight per API beyond which new calls are shed (cache fallback at once)."""
    breaker_failures: PositiveInt = 5
    """Consecutive failures that open an upstream's circuit breaker."""
    breaker_open_s: PositiveFloat = 1.0
    """First pause of an open breaker; it doubles (jittered) up to `breaker_max_open_s`."""
    breaker_max_open_s: PositiveFloat = 30.0


class KeysConfig(_Section, frozen=True):
    mode: Literal["merge", "split"] = "merge"
    behavioral: KeyName = "permutive"
    contextual: KeyName = "prmtvctx"
    puid: KeyName | None = None
    """Key for the Permutive user id (e.g. `puid`); absent means it is not sent."""


DEFAULT_PROPERTY_TYPES: dict[str, PropertyType] = {
    "categories": "list",
    "duration_seconds": "number",
    "time_spent_seconds": "number",
    "percentage_watched": "number",
    "percentage_listened": "number",
}
"""The Direct API guide's example schema; `[events.properties]` adds to and overrides it."""


class EventsConfig(_Section, frozen=True):
    view_namespace: str = "6f1c2b8e-3d4a-4f5e-9a7b-2c1d0e9f8a7b"
    """uuid5 namespace for mapping host and SSAI session / view ids that are not UUIDs."""
    client: bool = True
    """Play events carry `client` ({url, domain, title, type}), the properties custom cohorts
    are typically built on; false for a workspace whose event schema has no `client`."""
    play_events: tuple[str, ...] | None = None
    """Names of the host's events (`track()`, `/v1/events`) that are play events: each opens
    its view, so that the view's ad requests send no play event of their own. None: every
    adapter's `play_event` (`Videoview`, `AudioPlay`)."""
    retry: Literal["safe", "always"] = "safe"
    """`/v1/events` deliveries: `safe` sends a batch again only when the CCS API provably did
    not process it (no connection, 429, 503); `always` also after a timeout or another 5xx,
    which may count the events twice."""
    properties: dict[str, PropertyType] = {}
    """Play-event property → type, for values that come from URLs as text (adapters'
    parameters, `cohortkv_p.*`): lists split on commas; names not listed stay strings."""
    queue: Literal["memory", "redis"] = "memory"
    """Where `/v1/events` keeps accepted events until delivered: `memory` (this process; a
    crash loses them) or `redis` (Redis Streams, needs `cache.redis_url`; 202 only once they
    are in Redis, and any replica delivers them)."""
    claim_idle_s: PositiveFloat = 30.0
    """Redis queue: events a replica read and left unsettled this long are taken over by the
    partition's next holder. Longer than `http.request_timeout_s`: a call still in flight is
    never taken over."""
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    """Redis queue: streams that users' events are spread over, each delivered by one replica
    at a time (so one user's events stay in order)."""

    def property_types(self) -> dict[str, PropertyType]:
        return {**DEFAULT_PROPERTY_TYPES, **self.properties}


class ContentConfig(_Section, frozen=True):
    drop_query: bool = False
    """Send content URLs without their query and fragment (to the Contextual API, and into
    cache and view keys). Off: only query fields holding an e-mail address are removed."""


class TracingConfig(_Section, frozen=True):
    enabled: bool = False
    """OpenTelemetry spans around enrich and the two API calls (needs `cohortkv[otel]`)."""
    service_name: str = "cohortkv"
    """`service.name` of the spans `cohortkv serve` exports (OTLP/HTTP, `OTEL_*` variables)."""


class SessionsConfig(_Section, frozen=True):
    idle_timeout_s: PositiveFloat = 1800.0
    """A generated session ends after this long with no ad request or event from its user."""
    max_entries: PositiveInt = 200_000


class ViewsConfig(_Section, frozen=True):
    idle_timeout_s: PositiveFloat = 1800.0
    """A view without a host view id ends after this long without an ad request for it; the
    next ad request for the same content starts a new view, with a new play event."""
    max_entries: PositiveInt = 200_000


class BehavioralConfig(_Section, frozen=True):
    wait: Literal["always", "if_uncached"] = "always"
    """`always` (the guide's fidelity): a view's first ad break waits, within the budget, for
    the play event's answer. `if_uncached`: when the user has a cached answer, that first break
    uses it at once, and the play event's answer serves the view's later breaks."""


class UpstreamConfig(_Section, frozen=True):
    """`[serve.upstreams.NAME]`: an ad server the proxy may reach, and its platform."""

    url: str
    platform: str | None = None
    """The adapter that reads this ad server's requests (`gam`, `query`, `openrtb`, ...);
    None: the one named like the upstream, else whichever recognises each request."""


class ServeConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    upstreams: dict[str, str | UpstreamConfig] = {}
    """Ad servers the proxy may reach, by name: `gam = "https://pubads.g.doubleclick.net"`, or
    `[serve.upstreams.vast]` with `url = "..."` and `platform = "query"`."""
    ad_timeout_ms: PositiveInt = 2000
    max_url_length: PositiveInt = 8192
    max_header_bytes: PositiveInt = 16384
    max_body_bytes: PositiveInt = 1_048_576
    max_inflight_enrichments: PositiveInt = 512
    grace_s: PositiveFloat = 10.0
    header_timeout_s: PositiveFloat = 10.0
    """A client connection whose request head (request line and headers) is not complete this
    long after its first byte (for a new connection: after it was accepted) is closed."""
    body_timeout_s: PositiveFloat = 10.0
    """A request body must arrive whole within this long after its head, else 408 and the
    connection is closed; a body the route does not read is discarded for at most this long."""
    keepalive_timeout_s: PositiveFloat = 75.0
    """An idle keep-alive connection is closed after this long without a new request."""
    max_connections: NonNegInt = 0
    """Client connections open at once; beyond it new ones are refused at accept (503 and
    closed). 0: half the process's open-file limit (`ulimit -n`), so that the other half
    stays free for connections to ad servers and the Permutive APIs."""
    access_log: bool = False
    workers: NonNegInt = 1
    """Processes serving the one port (`SO_REUSEPORT`), under one supervising parent that
    restarts a worker that dies; 0: one per available core. More than one needs
    `cache.redis_url` (views, sessions and caches are shared there) and is refused with
    `sandbox = true`. 1: one process, no parent."""
    events_queue_max: PositiveInt = 10_000
    events_workers: PositiveInt = 16
    """Event deliveries in flight at once (one user's batches always go one at a time)."""
    events_max_attempts: PositiveInt = 8
    """Tries per batch before its events are dropped. A batch is tried again only when the CCS
    API provably did not process it (no connection, 429, 503), or with `[events] retry =
    "always"` also after a timeout or another 5xx; never after a 4xx. A try the open circuit
    breaker refuses is not one: the batch waits for the breaker's probe."""
    events_backoff_ms: PositiveInt = 200
    """First retry pause; it doubles per attempt, jittered, up to `events_backoff_max_ms`."""
    events_backoff_max_ms: PositiveInt = 30_000
    ad_pool_limit: NonNegInt = 0
    """Connections to ad servers at once (0: bounded only by the requests being served)."""
    degraded_error_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Share of failed ad-server requests over `health_window_s` that marks it degraded."""
    health_window_s: PositiveFloat = 60.0
    gc_threshold: PositiveInt = 50_000
    """Allocations between young-generation collections in `cohortkv serve` (Python: 700)."""
    ad_tls_cert_file: str | None = None
    """Client certificate (PEM) for ad servers that require one (GAM server-side requests)."""
    ad_tls_key_file: str | None = None
    explain: bool = False
    """`GET /explain`: a page that explains what cohortkv would do with a pasted ad request,
    and this replica's last decisions (off: the routes do not exist, 404)."""
    explain_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Networks (CIDR) whose clients may use the explain page; the default is loopback only.
    Read from the connection's peer address, never from `X-Forwarded-For`."""
    explain_workspace: str | None = None
    """A workspace file (the sandbox's format) whose cohort names the explain page shows."""


LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(_Section, frozen=True):
    level: LogLevel = "info"
    """Lines below this level are not written (`--log-level`, `-v` for debug)."""
    json: bool = False
    """One JSON object per line (`ts`, `level`, `logger`, `msg`, `request_id`, extras)."""


class Config(_Section, frozen=True):
    api_key: str | None = None
    """The Permutive API key (or `COHORTKV_API_KEY`); never logged. Required unless `sandbox`."""
    sandbox: bool = False
    """Serve the built-in sandbox of the Permutive APIs instead (no key, no network): an
    explicit opt-in, because sandbox cohorts must never reach real ad servers by accident."""
    ccs_url: str = "https://api.permutive.app"
    ctx_url: str = "https://api.permutive.com"
    budget_ms: PositiveInt = 300
    consent: ConsentConfig = ConsentConfig()
    cache: CacheConfig = CacheConfig()
    http: HttpConfig = HttpConfig()
    keys: KeysConfig = KeysConfig()
    events: EventsConfig = EventsConfig()
    content: ContentConfig = ContentConfig()
    tracing: TracingConfig = TracingConfig()
    sessions: SessionsConfig = SessionsConfig()
    views: ViewsConfig = ViewsConfig()
    behavioral: BehavioralConfig = BehavioralConfig()
    adapters: dict[str, dict[str, Any]] = {}
    """`[adapters.<platform>]` tables; each is checked against its platform's settings
    (`adapters.registry`): see `adapter_settings`."""
    serve: ServeConfig = ServeConfig()
    log: LogConfig = LogConfig()
    log_json: bool | None = None
    """Deprecated: `[log] json`. Still read (with a warning) and moved there."""

    def __post_init__(self) -> None:
        check_fields(self, _root)
        check_rules(self)
        if self.log_json is not None:
            warnings.warn(LOG_JSON_MOVED, DeprecationWarning, stacklevel=2)
            moved = msgspec.structs.replace(self.log, json=self.log.json or self.log_json)
            msgspec.structs.force_setattr(self, "log", moved)
            msgspec.structs.force_setattr(self, "log_json", None)

    def __repr__(self) -> str:
        shown = "None" if self.api_key is None else "'***'"
        return f"Config(api_key={shown}, ccs_url={self.ccs_url!r}, ctx_url={self.ctx_url!r}, ...)"

    def with_overrides(self, **changes: Any) -> Config:
        check_arguments(Config, _root, (), changes)
        return msgspec.structs.replace(self, **changes)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    warn_unknown_env: bool = True,
) -> Config:
    """Read `path` (TOML, optional), apply `COHORTKV_*` overrides from `env`, validate.

    `COHORTKV_*` variables that name no setting are logged in one warning (unless
    `warn_unknown_env` is false); an error about a value a variable set names the variable.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r}: not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r}: invalid TOML: {e}") from None
    try:
        found = read_env(
            os.environ if env is None else env,
            Config,
            tables={("adapters",): _adapter_settings_type},
            moved=MOVED,
        )
    except EnvError as e:
        raise ConfigError(str(e)) from None
    if warn_unknown_env:
        warn_unknown(found.unknown)
    try:
        return config_from_dict(overlay(data, found.data), warn=warn_unknown_env)
    except ConfigError as e:
        raise ConfigError(name_variable(str(e), found.origins, data), field=e.field) from None


def _adapter_settings_type(name: str) -> type[AdapterSettings]:
    tp = settings_type(name)
    if tp is None:
        raise ValueError(f"expected a platform, one of {', '.join(KNOWN_ADAPTERS)}")
    return tp


MOVED: dict[tuple[str, ...], str] = {
    ("cache", "views_ttl_s"): "[views] idle_timeout_s (a view now ends after that long idle)",
    ("cache", "views_max_entries"): "[views] max_entries",
    ("events", "play_event"): "[adapters.<platform>] play_event (one per platform)",
    ("events", "content_section"): "[adapters.<platform>] content_section (one per platform)",
}
"""Settings that moved: using the old place is an error that says where they went."""


LOG_JSON_MOVED = "config: log_json is deprecated: use [log] json (COHORTKV_LOG__JSON) instead"
log = logging.getLogger("cohortkv.config")


def config_from_dict(data: Mapping[str, Any], *, warn: bool = True) -> Config:
    """A whole config from tables of plain values (TOML, environment), checked."""
    for (section, key), where in MOVED.items():
        table = data.get(section)
        if isinstance(table, Mapping) and key in table:
            raise ConfigError(f"config: {section}.{key}: moved to {where}")
    if "log_json" in data:
        data = _without_log_json(data, warn)
    try:
        return msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as e:
        if isinstance(e.__cause__, ConfigError):  # a rule across fields (`check_rules`)
            raise e.__cause__ from None
        path, text = humanize(e, Config)
        raise ConfigError(
            f"config: {path}: {text}" if path else f"config: {text}", field=path or "config"
        ) from None


def _without_log_json(data: Mapping[str, Any], warn: bool) -> dict[str, Any]:
    out = dict(data)
    value = out.pop("log_json")
    if warn:
        log.warning(LOG_JSON_MOVED)
    table = out.get("log")
    if isinstance(table, Mapping) and "json" in table:
        return out
    out["log"] = {**(table if isinstance(table, Mapping) else {}), "json": value}
    return out


NO_KEY_MESSAGE = (
    "config: api_key: expected a Permutive API key (set api_key in the config file or "
    "COHORTKV_API_KEY); to run against the built-in sandbox on purpose, set sandbox = true "
    "(COHORTKV_SANDBOX=true) or pass --sandbox"
)


def check_rules(cfg: Config) -> None:
    """Rules across fields, or about a value's form, that the types cannot say."""
    adapter_settings(cfg)
    explain_networks(cfg.serve)
    if cfg.api_key is not None and not cfg.api_key.strip():
        raise ConfigError(
            "config: api_key: expected a non-empty API key (in the config file or"
            " COHORTKV_API_KEY), got a blank one",
            field="api_key",
        )
    if cfg.events.queue == "redis":
        if not cfg.cache.redis_url:
            raise ConfigError(
                'config: events.queue: "redis" needs cache.redis_url (the Redis that keeps the'
                ' events); set it, or queue = "memory"',
                field="events.queue",
            )
        if cfg.events.claim_idle_s <= cfg.http.request_timeout_s:
            raise ConfigError(
                "config: events.claim_idle_s: expected more than http.request_timeout_s"
                f" ({cfg.http.request_timeout_s:g} s), got {cfg.events.claim_idle_s:g}: a"
                " delivery still in flight must never be taken over",
                field="events.claim_idle_s",
            )
    if cfg.sandbox and cfg.api_key is not None:
        raise ConfigError(
            "config: sandbox: true cannot be combined with an api_key; remove one of them",
            field="sandbox",
        )
    for name, example in (
        ("ccs_url", "https://api.permutive.app"),
        ("ctx_url", "https://api.permutive.com"),
    ):
        problem = base_url_problem(getattr(cfg, name), example)
        if problem is not None:
            raise ConfigError(f"config: {name}: {problem}", field=name)


def require_api(cfg: Config) -> Config:
    """`cfg` when it names a way to reach an API (a key, or the sandbox on purpose)."""
    if cfg.api_key is None and not cfg.sandbox:
        raise ConfigError(NO_KEY_MESSAGE, field="api_key")
    return cfg


def explain_networks(serve: ServeConfig) -> tuple[IPv4Network | IPv6Network, ...]:
    """`serve.explain_from` as networks; a ConfigError names the entry that is not one."""
    out: list[IPv4Network | IPv6Network] = []
    for i, text in enumerate(serve.explain_from):
        try:
            out.append(ip_network(text.strip(), strict=True))
        except ValueError:
            raise ConfigError(
                "config: serve.explain_from: expected networks in CIDR form such as"
                f" '10.0.0.0/8' or 'fd00::/8' (no host bits set), got {text!r} at [{i}]",
                field="serve.explain_from",
            ) from None
    return tuple(out)


def adapter_settings(cfg: Config) -> dict[str, AdapterSettings]:
    """Each `[adapters.<platform>]` table as its platform's settings struct."""
    out: dict[str, AdapterSettings] = {}
    for name, table in cfg.adapters.items():
        tp = settings_type(name)
        if tp is None:
            raise ConfigError(
                f"config: adapters.{name}: expected a platform, one of {', '.join(KNOWN_ADAPTERS)}",
                field=f"adapters.{name}",
            )
        try:
            out[name] = msgspec.convert(table, tp, strict=True)
        except msgspec.ValidationError as e:
            path, text = humanize(e, Config, f"adapters.{name}")
            raise ConfigError(f"config: {path}: {text}", field=path) from None
    return out
