"""`POST /v1/enrich` and `POST /v1/events`: the JSON API, for hosts that call rather than proxy.

A person writes these bodies, so a bad one gets a 400 naming every wrong field. Events pass
the enricher's one gate (`Enricher.prepare_events`, as `track()` does) when they are accepted:
events of an unconsented user are answered 202 with `accepted: 0`, counted, and never queued;
the queue holds only what the gate prepared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
from aiohttp import web

from plugin.config import Config
from plugin.context import ConsentSignals
from plugin.enricher import Enricher
from plugin.errors import CohortkvError
from plugin.identity import Identity
from plugin.observe.metrics import RateLimitedLog
from plugin.overrides import Report, body_identity, body_signals, from_body
from plugin.permutive.wire import Event
from plugin.request import AdRequest
from plugin.result import ConsentDecision, EnrichResult, SignalResult, result_doc
from plugin.serve.bodies import (
    ConsentBody,
    EnrichBody,
    EventsAccepted,
    EventsBody,
    FieldError,
    IdentityBody,
)
from plugin.serve.errors import json_error, json_response
from plugin.serve.intake import BodyReader
from plugin.serve.limits import ExpectHandler, Gate
from plugin.serve.metrics import ServeMetrics
from plugin.serve.queue import EventQueue
from plugin.serve.validate import BodyError, decode
from plugin.signals.events import check_event
from plugin.signals.tracker import EventIds
from plugin.tracking import Denied

log = logging.getLogger("cohortkv.serve.api")

_encode = msgspec.json.Encoder().encode
_RETRY = {"Retry-After": "1"}


class Api:
    def __init__(
        self,
        config: Config,
        enricher: Enricher,
        queue: EventQueue,
        gate: Gate,
        metrics: ServeMetrics,
        bodies: BodyReader,
    ) -> None:
        self._config = config
        self._bodies = bodies
        self._enricher = enricher
        self._queue = queue
        self._gate = gate
        self._metrics = metrics
        self._platforms = frozenset(a.name for a in enricher.adapters) | {"auto"}
        self._shed = metrics.shed.labels("enrich_api")
        self._unconsented = metrics.events.labels("unconsented")
        self._warn = RateLimitedLog(log)

    @property
    def platforms(self) -> list[str]:
        return sorted(self._platforms)

    def routes(self, app: web.Application, expect: ExpectHandler) -> None:
        app.router.add_post("/v1/enrich", self.enrich, expect_handler=expect)
        app.router.add_post("/v1/events", self.events, expect_handler=expect)

    async def _json(self, request: web.Request) -> bytes:
        """The body, decoded; a coding it cannot undo is refused (`BodyRefused`)."""
        return self._bodies.refuse_undecodable(await self._bodies.read(request))

    # -- /v1/enrich -------------------------------------------------------------------------

    async def enrich(self, request: web.Request) -> web.Response:
        try:
            body = decode(await self._json(request), EnrichBody)
            errors: list[FieldError] = []
            if body.platform is not None and body.platform not in self._platforms:
                errors.append(FieldError("platform", f"one of: {', '.join(self.platforms)}"))
            context = from_body(body.context, "context", into(errors))
            if errors:
                raise BodyError(errors)
        except BodyError as e:
            return _invalid(e.fields)
        if not self._gate.enter():
            self._shed.inc()
            return json_error(503, "too many enrichments in flight", headers=_RETRY)
        ad = AdRequest(body.url)
        if body.method == "POST":
            ad = AdRequest(
                body.url,
                method="POST",
                headers=(("Content-Type", "application/json"),),
                body=_encode(body.body),
            )
        try:
            result = await self._enricher.enrich(ad, context, platform=body.platform, origin="api")
        except CohortkvError as e:
            return _invalid([FieldError(e.field, e.expected)])
        except Exception as e:
            self._metrics.internal_errors.labels("enrich").inc()
            self._warn.warning("api:enrich", "enrichment failed: %s", type(e).__name__)
            log.debug("enrichment failed", exc_info=True)
            result = _unchanged(body.url)
        finally:
            self._gate.leave()
        return json_response(200, result_doc(result))

    # -- /v1/events -------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        try:
            body = decode(await self._json(request), EventsBody)
            errors: list[FieldError] = []
            identity = to_identity(body.identity, "identity", errors)
            signals = to_signals(body.consent, "consent", errors)
            props = [check_event(ev, f"events[{i}]", errors) for i, ev in enumerate(body.events)]
            if errors or identity is None:
                raise BodyError(errors)
        except BodyError as e:
            return _invalid(e.fields)
        given = [
            Event(
                name=ev.name,
                time=ev.time,
                properties=p,
                view_id=ev.view_id,
                session_id=ev.session_id,
            )
            for ev, p in zip(body.events, props, strict=True)
        ]
        ids = EventIds(
            session_id=body.session_id,
            view_id=body.view_id,
            ssai_session_id=body.ssai_session_id,
            content_url=body.content_url,
        )
        got = await self._enricher.prepare_events(
            given, identity=identity, consent=signals, ids=ids
        )
        if isinstance(got, Denied):
            self._unconsented.inc(got.count)
            return _accepted(0, got.reason)
        if got.events:
            offered = await self._queue.offer(got)
            if offered != "accepted":
                self._enricher.events.withdraw(got)
            if offered == "full":
                return json_error(503, "event queue full", limit=self._queue.max, headers=_RETRY)
            if offered == "unavailable":
                return json_error(503, "event queue unavailable", headers=_RETRY)
        return _accepted(len(got.events), got.reason, got.duplicates)


# -- a body's identity, consent and context: `plugin.overrides`, mistakes collected -------------


def into(errors: list[FieldError]) -> Report:
    """A mistake of a person's body becomes one entry of the 400's `fields`."""
    return lambda m: errors.append(FieldError(m.field, m.expected))


def to_identity(b: IdentityBody, path: str, errors: list[FieldError]) -> Identity | None:
    return body_identity(b, path, into(errors))


def to_signals(b: ConsentBody | None, path: str, errors: list[FieldError]) -> ConsentSignals:
    return body_signals(b, path, into(errors))


def _unchanged(url: str) -> EnrichResult:
    none = SignalResult("none", [], "not_recognised")
    return EnrichResult(url, {}, none, none, ConsentDecision(False, "internal_error"), 0.0)


def _invalid(fields: Sequence[FieldError]) -> web.Response:
    return json_response(400, {"error": "invalid request", "fields": msgspec.to_builtins(fields)})


def _accepted(n: int, reason: str, duplicates: int = 0) -> web.Response:
    return web.Response(
        status=202,
        body=_encode(EventsAccepted(n, reason, duplicates)),
        content_type="application/json",
    )
