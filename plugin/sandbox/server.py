"""The sandbox HTTP server: the CCS and Contextual APIs' wire format over a local workspace.

Requests are checked the way a person needs (every 400 names the field), events are stored per
resolved user, and cohorts are evaluated at request time. Call counts, recent bodies and
artificial delays are exposed for tests, benchmarks and the demo.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import web

from plugin.identity import IDENTITY_FORMS, ONE_FORM, is_uuid4
from plugin.permutive.wire import (
    CCS_PATH,
    CONTEXTUAL_PATH,
    MAX_EVENTS_PER_REQUEST,
    ErrorBody,
    ErrorDetail,
)
from plugin.sandbox.engine import Engine, describe
from plugin.sandbox.users import UserStore
from plugin.sandbox.workspace import Workspace, default_workspace, load_workspace

log = logging.getLogger("cohortkv.sandbox")

SANDBOX_API_KEY: str = "sandbox"
MAX_BODIES = 1_000

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SandboxState:
    """Everything the running sandbox holds; tests read and tweak it through `Sandbox`."""

    def __init__(self, workspace: Workspace, clock: Clock | None = None) -> None:
        self.workspace = workspace
        self.engine = Engine(workspace)
        self.users = UserStore()
        self.clock: Clock = clock or _utcnow
        self.api_keys = frozenset({SANDBOX_API_KEY, *workspace.api_keys})
        self.calls: Counter[str] = Counter()
        self.bodies: list[tuple[str, Any]] = []
        self.max_bodies = MAX_BODIES
        self.delays: dict[str, float] = {"ccs": 0.0, "ctx": 0.0}

    def now(self) -> float:
        t = self.clock()
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        return t.timestamp()

    def record(self, api: str, body: Any) -> None:
        self.bodies.append((api, body))
        if len(self.bodies) > self.max_bodies:
            del self.bodies[: len(self.bodies) - self.max_bodies]


STATE = web.AppKey("sandbox_state", SandboxState)


# --- errors ------------------------------------------------------------------------------------


DOCS_URL = "https://developer.permutive.com/reference"

# Permutive's numeric error codes, as its error bodies carry them.
CODE_BAD_REQUEST = 2000
CODE_UNAUTHORIZED = 2001
CODE_INVALID_JSON = 2002
CODE_SCHEMA = 2003


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.cause = cause


def _bad(message: str, cause: str | None = None) -> ApiError:
    return ApiError(400, CODE_BAD_REQUEST, message, cause)


def _error_response(e: ApiError) -> web.Response:
    body = ErrorBody(
        request_id=str(uuid.uuid4()),
        error=ErrorDetail(
            status=HTTPStatus(e.status).phrase,
            code=e.code,
            message=e.message,
            cause=e.cause,
            docs=DOCS_URL,
        ),
    )
    return web.Response(
        status=e.status, body=msgspec.json.encode(body), content_type="application/json"
    )


def _got(v: Any) -> str:
    """How a wrong value is shown in an error message (a missing one is "nothing")."""
    return "nothing" if v is _ABSENT else describe(v)


_ABSENT: Any = object()


# --- request checks ----------------------------------------------------------------------------


def _check_key(request: web.Request, keys: frozenset[str]) -> None:
    key = request.headers.get("X-Api-Key") or request.query.get("k")
    if not key:
        raise ApiError(
            401, CODE_UNAUTHORIZED, "missing API key: send it in the X-Api-Key header or as ?k="
        )
    if key not in keys:
        raise ApiError(401, CODE_UNAUTHORIZED, "unknown API key")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _decode(raw: bytes) -> tuple[Any, str | None]:
    """The JSON body, or (raw text, why it is not JSON)."""
    try:
        return msgspec.json.decode(raw), None
    except msgspec.DecodeError as e:
        return raw.decode("utf-8", "replace"), str(e)


def _non_empty_str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key, _ABSENT)
    if not isinstance(v, str) or not v.strip():
        raise _bad(f"{where}.{key}: expected a non-empty string, got {_got(v)}")
    return v


def _priority(obj: dict[str, Any], where: str) -> int:
    v = obj.get("priority", _ABSENT)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _bad(f"{where}.priority: expected an integer >= 0 (0 is highest), got {_got(v)}")
    return v


class CcsIdentity(msgspec.Struct, frozen=True):
    """The checked identity of a CCS request: exactly one form is set."""

    user_id: str | None = None
    aliases: tuple[tuple[str, str, int], ...] = ()


def parse_identity(body: dict[str, Any]) -> CcsIdentity:
    forms = [k for k in IDENTITY_FORMS if k in body]
    if len(forms) != 1:
        got = ", ".join(forms) if forms else "none"
        raise _bad(f"identity: expected {ONE_FORM}; got {got}")
    form = forms[0]
    v = body[form]
    if form == "user_id":
        if not isinstance(v, str) or not is_uuid4(v):
            raise _bad(f"user_id: expected a UUIDv4 string, got {_got(v)}")
        return CcsIdentity(user_id=v)
    if form == "alias":
        if not isinstance(v, dict):
            raise _bad(f"alias: expected an object with tag and id, got {_got(v)}")
        tag, ident = _non_empty_str(v, "tag", "alias"), _non_empty_str(v, "id", "alias")
        if "priority" in v:
            _priority(v, "alias")
        return CcsIdentity(aliases=((tag, ident, 0),))
    if not isinstance(v, list) or not v:
        raise _bad(f"aliases: expected a non-empty list of {{tag, id, priority}}, got {_got(v)}")
    out: list[tuple[str, str, int]] = []
    seen: dict[int, int] = {}
    for i, a in enumerate(v):
        where = f"aliases[{i}]"
        if not isinstance(a, dict):
            raise _bad(f"{where}: expected an object with tag, id and priority, got {_got(a)}")
        tag, ident = _non_empty_str(a, "tag", where), _non_empty_str(a, "id", where)
        prio = _priority(a, where)
        if prio in seen:
            raise _bad(f"{where}.priority: priority {prio} is also used by aliases[{seen[prio]}]")
        seen[prio] = i
        out.append((tag, ident, prio))
    return CcsIdentity(aliases=tuple(out))


class CheckedEvent(msgspec.Struct, frozen=True):
    name: str
    ts: float
    properties: dict[str, Any]
    session_id: str | None
    view_id: str | None


def parse_time(v: Any, where: str) -> float:
    if isinstance(v, str) and v:
        try:
            t = datetime.fromisoformat(v)
        except ValueError:
            pass
        else:
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            return t.timestamp()
    raise _bad(f"{where}: expected an ISO 8601 timestamp string, got {_got(v)}")


def parse_events(body: dict[str, Any]) -> list[CheckedEvent]:
    evs = body.get("events", _ABSENT)
    if not isinstance(evs, list):
        raise _bad(
            f"events: expected a list of 1 to {MAX_EVENTS_PER_REQUEST} events, got {_got(evs)}"
        )
    if not evs:
        raise _bad("events: expected at least 1 event, got 0")
    if len(evs) > MAX_EVENTS_PER_REQUEST:
        raise _bad(
            f"events: expected at most {MAX_EVENTS_PER_REQUEST} events, got {len(evs)}",
            cause="split the events across several requests",
        )
    out: list[CheckedEvent] = []
    for i, e in enumerate(evs):
        where = f"events[{i}]"
        if not isinstance(e, dict):
            raise _bad(f"{where}: expected an object, got {_got(e)}")
        name = _non_empty_str(e, "name", where)
        ts = parse_time(e.get("time", _ABSENT), f"{where}.time")
        props = e.get("properties", _ABSENT)
        if not isinstance(props, dict):
            raise _bad(
                f"{where}.properties: expected an object, got {_got(props)}",
                cause="omit properties that do not apply; send {} when there are none",
            )
        ids: list[str | None] = []
        for key in ("session_id", "view_id"):
            if key in e:
                ids.append(_non_empty_str(e, key, where))
            else:
                ids.append(None)
        out.append(CheckedEvent(name, ts, props, ids[0], ids[1]))
    return out


# --- handlers ----------------------------------------------------------------------------------


class _CcsOut(msgspec.Struct):
    user_id: str
    cohorts: list[str]
    activations: dict[str, list[str]] | msgspec.UnsetType = msgspec.UNSET


class _CtxOut(msgspec.Struct):
    cohorts: list[str]
    activations: dict[str, list[str]]


def _json(obj: Any) -> web.Response:
    return web.Response(body=msgspec.json.encode(obj), content_type="application/json")


async def _prologue(request: web.Request, api: str) -> tuple[SandboxState, Any]:
    """Count, record, delay and authenticate; returns the decoded body (or raises ApiError)."""
    st = request.app[STATE]
    st.calls[api] += 1
    raw = await request.read()
    body, err = _decode(raw)
    st.record(api, body)
    delay = st.delays.get(api, 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    _check_key(request, st.api_keys)
    if err is not None:
        raise ApiError(400, CODE_INVALID_JSON, "body: expected a JSON object", cause=err)
    if not isinstance(body, dict):
        raise _bad(f"body: expected a JSON object, got {_got(body)}")
    return st, body


async def ccs_segmentation(request: web.Request) -> web.Response:
    try:
        st, body = await _prologue(request, "ccs")
        identity = parse_identity(body)
        events = parse_events(body)
        engine = st.engine
        sync = _flag(request, "synchronous-validation")
        valid: list[CheckedEvent] = []
        for i, ev in enumerate(events):
            problem = engine.check_event(ev.name, ev.properties, f"events[{i}]")
            if problem is None:
                valid.append(ev)
            elif sync:
                raise ApiError(400, CODE_SCHEMA, problem, cause="schema mismatch")
    except ApiError as e:
        return _error_response(e)
    users = st.users
    if identity.user_id is not None:
        user_id = identity.user_id
    else:
        user_id = users.resolve_aliases(identity.aliases)
    user = users.user(user_id)
    for ev in valid:
        users.add_event(user, ev.name, ev.ts, ev.properties, ev.session_id, ev.view_id)
    # The request's session and view: those of its latest event that names them.
    with_session = [e for e in valid if e.session_id]
    with_view = [e for e in valid if e.view_id]
    session_id = max(with_session, key=lambda e: e.ts).session_id if with_session else None
    view_id = max(with_view, key=lambda e: e.ts).view_id if with_view else None
    cohorts = engine.cohorts(user.context(st.now(), session_id, view_id))
    out = _CcsOut(user_id, cohorts)
    if _flag(request, "activations"):
        out.activations = engine.activations(cohorts)
    return _json(out)


async def ctx_segment(request: web.Request) -> web.Response:
    try:
        st, body = await _prologue(request, "ctx")
        url = body.get("url", _ABSENT)
        if not isinstance(url, str) or not url.strip():
            raise _bad(f"url: expected a non-empty string identifying the content, got {_got(url)}")
        pp = body.get("page_properties", {})
        if not isinstance(pp, dict):
            raise _bad(f"page_properties: expected an object, got {_got(pp)}")
    except ApiError as e:
        return _error_response(e)
    cohorts = st.engine.contextual(url, pp)
    return _json(_CtxOut(cohorts, st.engine.activations(cohorts)))


def make_app(workspace: Workspace | None = None, *, clock: Clock | None = None) -> web.Application:
    """The sandbox as an aiohttp application (None: the shipped default workspace)."""
    app = web.Application()
    app[STATE] = SandboxState(workspace if workspace is not None else default_workspace(), clock)
    app.router.add_post(CCS_PATH, ccs_segmentation)
    app.router.add_post(CONTEXTUAL_PATH, ctx_segment)
    return app


# --- running -----------------------------------------------------------------------------------


class Sandbox:
    """A running sandbox on loopback; `ccs_url` and `ctx_url` are both `base_url`."""

    def __init__(self, runner: web.AppRunner, base_url: str, state: SandboxState) -> None:
        self._runner = runner
        self.base_url = base_url
        self.ccs_url = base_url
        self.ctx_url = base_url
        self.api_key = SANDBOX_API_KEY
        self.state = state
        self.calls = state.calls
        self.bodies = state.bodies
        self.delays = state.delays

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    workspace: Workspace | None = None,
    *,
    clock: Clock | None = None,
) -> Sandbox:
    app = make_app(workspace, clock=clock)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = bound[0], bound[1]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return Sandbox(runner, f"http://{shown}:{bound_port}", app[STATE])


async def serve_forever(host: str, port: int, workspace_path: str | Path | None) -> None:
    """`cohortkv sandbox`: serve until cancelled (Ctrl-C), printing where and with which key."""
    workspace = load_workspace(workspace_path) if workspace_path else default_workspace()
    sandbox = await start_sandbox(host, port, workspace)
    try:
        log.info(
            "cohortkv sandbox listening on %s (api key: %s)", sandbox.base_url, sandbox.api_key
        )
        await asyncio.Event().wait()
    finally:
        await sandbox.close()
