"""`GET /explain`: why an ad request gets the cohorts it gets, and this replica's last decisions.

On only with `[serve] explain = true`, and only for clients whose peer address is in
`serve.explain_from` (loopback by default; `X-Forwarded-For` is never read: a viewer writes
it). Everything else gets a JSON 403, and with explain off the routes do not exist (404).

- `GET /explain`: one self-contained HTML page (inline CSS and script, no other asset) sent
  with a strict Content-Security-Policy: only its own script and style run, it connects only
  to this origin, and Trusted Types forbid every HTML-parsing DOM sink, so data can only ever
  become text.
- `POST /explain/api`: explains one pasted ad request (`plugin.dryrun`); nothing is sent to an
  ad server, ever. It wants `Content-Type: application/json` and refuses requests another
  site's page makes (a mismatched `Origin`, `Sec-Fetch-Site: cross-site`).
- `GET /explain/decisions`: the last decisions (`plugin.observe.decisions`), polled by the page.
- `GET /explain/meta`: the platforms, upstreams, whether this is the sandbox, and where the
  cohort names shown come from (`names`: `workspace`, `sandbox` or null).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from aiohttp import web
from msgspec import Meta
from multidict import CIMultiDict

from plugin import reserved as rp
from plugin.config import Config, ConfigError, explain_networks
from plugin.context import Context
from plugin.dryrun import DryRun
from plugin.enricher import Enricher
from plugin.errors import CohortkvError
from plugin.explanation import Explanation
from plugin.observe.decisions import DecisionLog
from plugin.observe.metrics import RateLimitedLog
from plugin.overrides import from_reserved
from plugin.request import AdRequest
from plugin.serve.bodies import FieldError
from plugin.serve.errors import json_error, json_response
from plugin.serve.explain_diff import request_diff
from plugin.serve.intake import BodyReader
from plugin.serve.limits import ExpectHandler
from plugin.serve.metrics import ServeMetrics
from plugin.serve.proxy import Proxy, Upstream
from plugin.serve.validate import BodyError, decode

_Handler = Callable[[web.Request], Awaitable[web.Response]]
log = logging.getLogger("cohortkv.serve.explain")

MAX_RUNNING = 4
"""Explanations at once; beyond, 503 (a person's page, not a load path)."""


class ExplainBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=65536,
            description="an ad request URL, or a /proxy/{upstream}/... URL of this sidecar",
        ),
    ]
    method: Literal["GET", "POST"] = "GET"
    body: Annotated[str, Meta(max_length=4_194_304)] | None = None
    """A POST ad request's body as pasted (an OpenRTB bid request)."""
    headers: dict[str, str] = {}
    """`X-Cohortkv-*` headers the request would carry (through the proxy)."""
    platform: str | None = None
    run: bool = False
    """Ask the Contextual API (and, with `send_play_event`, the CCS API)."""
    send_play_event: bool = False


def _page() -> tuple[bytes, str]:
    """The page, and its Content-Security-Policy with the hashes of its inline code."""
    text = resources.files("plugin.serve").joinpath("explain_page.html").read_text("utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in blocks
        )

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')};"
        " connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
    )
    return text.encode(), csp


_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Explain:
    def __init__(
        self,
        config: Config,
        enricher: Enricher,
        upstreams: Mapping[str, Upstream],
        proxy: Proxy,
        metrics: ServeMetrics,
        bodies: BodyReader,
    ) -> None:
        self._bodies = bodies
        self._networks: tuple[IPv4Network | IPv6Network, ...] = explain_networks(config.serve)
        self._enricher = enricher
        self._upstreams = upstreams
        self._proxy = proxy
        self._errors = metrics.internal_errors.labels("explain")
        self._warn = RateLimitedLog(log)
        self.dry = DryRun(enricher, _workspace_names(config.serve.explain_workspace))
        self._named_by_file = config.serve.explain_workspace is not None
        self._platforms = sorted(a.name for a in self.dry.adapters)
        if enricher.accounting.decisions is None:
            enricher.accounting.decisions = DecisionLog()
        self.decisions: DecisionLog = enricher.accounting.decisions
        self._page, csp = _page()
        self._page_headers = {**_PAGE_HEADERS, "Content-Security-Policy": csp}
        self._running = 0

    def routes(self, app: web.Application, expect: ExpectHandler) -> None:
        def get(path: str, handler: _Handler) -> None:
            app.router.add_get(
                path, self._only_allowed(handler), allow_head=False, expect_handler=expect
            )

        get("/explain", self.page)
        app.router.add_post("/explain/api", self._only_allowed(self.api), expect_handler=expect)
        get("/explain/decisions", self.recent)
        get("/explain/meta", self.meta)

    def allowed(self, remote: str | None) -> bool:
        """Whether a peer address is in `serve.explain_from` (IPv4-mapped IPv6 as IPv4)."""
        ip = _ip(remote)
        return ip is not None and any(ip in n for n in self._networks)

    def _only_allowed(
        self, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def guarded(request: web.Request) -> web.Response:
            if not self.allowed(request.remote):
                return json_error(
                    403,
                    "the explain page is not served to this client",
                    remote=request.remote,
                    expected="a client address in serve.explain_from",
                )
            if _rebound(request):
                return json_error(
                    403,
                    "the explain page is not served under this host name",
                    field="Host",
                    expected="localhost or a loopback address, for a loopback client",
                )
            return await handler(request)

        return guarded

    # -- handlers -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._page, content_type="text/html", charset="utf-8", headers=self._page_headers
        )

    async def meta(self, request: web.Request) -> web.Response:
        return json_response(
            200,
            {
                "platforms": self._platforms,
                "upstreams": {n: up.platform for n, up in self._upstreams.items()},
                "sandbox": bool(self._enricher.config.sandbox),
                "names": self._names_source(),
            },
        )

    async def recent(self, request: web.Request) -> web.Response:
        return json_response(200, self.decisions.document(), _NO_STORE)

    async def api(self, request: web.Request) -> web.Response:
        refused = _cross_site(request)
        if refused is not None:
            return refused
        try:
            body = decode(
                self._bodies.refuse_undecodable(await self._bodies.read(request)), ExplainBody
            )
            ad, context, platform, via = self._request(body)
        except BodyError as e:
            return _invalid(e.fields)
        if self._running >= MAX_RUNNING:
            return json_error(503, "too many explanations at once", headers={"Retry-After": "1"})
        self._running += 1
        try:
            self._name_sandbox_cohorts()
            x = await self.dry.explain(
                ad, context, platform=platform, run=body.run, send_play_event=body.send_play_event
            )
        except CohortkvError as e:
            return _invalid([FieldError(e.field, e.expected)])
        except Exception as e:
            self._errors.inc()
            self._warn.warning("explain", "explaining failed: %s", type(e).__name__)
            log.debug("explaining failed", exc_info=True)
            return json_error(500, "explaining failed", kind=type(e).__name__)
        finally:
            self._running -= 1
        return json_response(200, explanation_doc(x, via), _NO_STORE)

    # -- the pasted request ----------------------------------------------------------------

    def _request(
        self, body: ExplainBody
    ) -> tuple[AdRequest, Context | None, str | None, dict[str, Any] | None]:
        """The ad request as the enricher would see it: a `/proxy/{upstream}/...` URL is
        mapped to its ad server and platform, and its `cohortkv_*` parameters read, exactly
        as the proxy would."""
        errors: list[FieldError] = []
        if body.platform is not None and body.platform not in (*self._platforms, "auto"):
            errors.append(FieldError("platform", f"one of: auto, {', '.join(self._platforms)}"))
        if body.send_play_event and not body.run:
            errors.append(FieldError("send_play_event", "only together with run"))
        if body.method == "GET" and body.body:
            errors.append(FieldError("body", "no body with GET (choose POST)"))
        url, platform, found, via = self._target(body.url, errors)
        if errors:
            raise BodyError(errors)
        headers = CIMultiDict(body.headers)
        context = from_reserved(headers, found, self._proxy.mistake)
        ad = AdRequest(
            url=url,
            method=body.method,
            headers=(("Content-Type", "application/json"),) if body.method == "POST" else (),
            body=(body.body or "").encode(),
        )
        return ad, context, body.platform or platform, via

    def _target(
        self, url: str, errors: list[FieldError]
    ) -> tuple[str, str | None, dict[str, str], dict[str, Any] | None]:
        url = url.strip()
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None and parts.path.startswith("/proxy/"):
            name, _, rest = parts.path[len("/proxy/") :].partition("/")
            up = self._upstreams.get(name)
            if up is None:
                known = ", ".join(sorted(self._upstreams)) or "none configured"
                errors.append(FieldError("url", f"a configured upstream after /proxy/ ({known})"))
                return url, None, {}, None
            query, found = rp.split_reserved(parts.query) if parts.query else ("", {})
            target = f"{up.base}/{rest}" + (f"?{query}" if query else "")
            return target, up.platform, found, {"upstream": name, "base": up.base}
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(
                FieldError(
                    "url",
                    "an absolute http(s) ad request URL, or a /proxy/{upstream}/... URL of"
                    " this sidecar",
                )
            )
        return url, None, {}, None

    def _names_source(self) -> str | None:
        """Where the cohort names shown come from (`_name_sandbox_cohorts`): the
        `explain_workspace` file, else the sandbox's workspace, else nowhere (None)."""
        if self._named_by_file:
            return "workspace"
        return "sandbox" if self._enricher.sandbox is not None else None

    def _name_sandbox_cohorts(self) -> None:
        sandbox = self._enricher.sandbox
        if not self.dry.names and sandbox is not None:
            self.dry.names = _names_of(sandbox.state.workspace)


def explanation_doc(x: Explanation, via: dict[str, Any] | None) -> dict[str, Any]:
    """The explanation as JSON, with the request before and after as marked segments."""
    doc: dict[str, Any] = msgspec.to_builtins(x)
    del doc["before"], doc["after"]
    doc["request"] = (
        request_diff(x.before, x.after) if x.before is not None and x.after is not None else None
    )
    doc["via"] = via
    return doc


def _rebound(request: web.Request) -> bool:
    """A loopback client that names another host: a web page whose name was re-pointed at
    127.0.0.1 (DNS rebinding) must not read this sidecar as its own origin."""
    if not _is_loopback(_ip(request.remote)):
        return False
    name = request.url.host or ""
    return not (name == "localhost" or name.endswith(".localhost") or _is_loopback(_ip(name)))


def _ip(text: str | None) -> IPv4Address | IPv6Address | None:
    """An address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ip_address((text or "").strip("[]").partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_loopback(ip: IPv4Address | IPv6Address | None) -> bool:
    return ip is not None and ip.is_loopback


def _invalid(fields: list[FieldError]) -> web.Response:
    return json_response(400, {"error": "invalid request", "fields": msgspec.to_builtins(fields)})


def _cross_site(request: web.Request) -> web.Response | None:
    """A refusal for what another site's page could make a browser send here."""
    if request.content_type != "application/json":
        return json_error(
            415, "unsupported media type", field="Content-Type", expected="application/json"
        )
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if site == "cross-site" or (
        origin is not None and origin != f"{request.scheme}://{request.host}"
    ):
        return json_error(403, "cross-site request refused", field="Origin")
    return None


def _workspace_names(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    from plugin.sandbox.workspace import WorkspaceError, load_workspace

    try:
        return _names_of(load_workspace(path))
    except WorkspaceError as e:
        raise ConfigError(
            f"config: serve.explain_workspace: {e}", field="serve.explain_workspace"
        ) from None


def _names_of(workspace: Any) -> dict[str, str]:
    return {c.code: c.name for c in (*workspace.cohorts, *workspace.contextual)}
