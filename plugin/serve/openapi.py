"""The OpenAPI 3.1 document of the sidecar's JSON endpoints, generated from the body structs.

msgspec writes JSON Schema 2020-12, which OpenAPI 3.1 uses as is; a few rules the structs
cannot say (exactly one identity form, the platform names) are added here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from plugin.result import EnrichResult
from plugin.serve.bodies import EnrichBody, ErrorBody, EventsAccepted, EventsBody
from plugin.version import __version__

REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid body: `fields` names each wrong field and what was expected there.",
        408: "The body did not arrive whole within serve.body_timeout_s; the connection closes.",
        413: "Body (as sent, or decoded) or headers over the configured size limit.",
        414: "URL over the configured length limit.",
        415: "A Content-Encoding other than gzip, deflate or identity.",
        503: "Overloaded: too many enrichments in flight, or the event queue is full.",
    }
    return {str(s): _json(_ref("ErrorBody"), text[s]) for s in statuses}


def _identity(identity: dict[str, Any]) -> None:
    """Exactly one identity form, not null; several aliases each with its own priority."""
    identity["minProperties"] = 1
    identity["maxProperties"] = 1
    for name, prop in identity["properties"].items():
        # null is accepted as absent, but the one form given must not be null
        identity["properties"][name] = prop["anyOf"][0]
    identity["properties"]["aliases"]["items"] = {
        "allOf": [
            _ref("AliasBody"),
            {"required": ["priority"], "properties": {"priority": {"type": "integer"}}},
        ],
        "description": "With several aliases each needs its own priority (0 is the highest).",
    }


def _platform(platforms: Sequence[str]) -> dict[str, Any]:
    return {
        "enum": sorted(platforms),
        "description": "Which adapter reads `url`; `auto` (or absent) picks it by the URL.",
    }


def _health() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"status": {"type": "string"}},
        "required": ["status"],
    }


def _readiness() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "ready": {"type": "boolean"},
            "degraded": {"type": "array", "items": {"type": "string"}},
            "upstreams": {"type": "object"},
            "permutive": {"type": "object"},
            "sandbox": {"type": "boolean"},
        },
        "required": ["ready", "degraded"],
    }


def _schemas(platforms: Sequence[str]) -> dict[str, Any]:
    """The body structs' schemas with the rules they cannot say, and the probes' answers."""
    (_, _, _, _, _), components = msgspec.json.schema_components(
        [EnrichBody, EventsBody, EnrichResult, EventsAccepted, ErrorBody], ref_template=REF
    )
    _identity(components["IdentityBody"])
    components["EnrichBody"]["properties"]["platform"] = _platform(platforms)
    components["Health"] = _health()
    components["Readiness"] = _readiness()
    return components


def _post(operation_id: str, summary: str, body: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": responses,
        }
    }


def _get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary, "responses": responses}}


def _paths() -> dict[str, Any]:
    return {
        "/v1/enrich": _post(
            "enrich",
            "Enrich one ad request URL with cohort key-values.",
            "EnrichBody",
            {
                "200": _json(_ref("EnrichResult"), "The enriched URL, as enrich --json."),
                **_errors(400, 408, 413, 415, 503),
            },
        ),
        "/v1/events": _post(
            "events",
            "Accept player events for delivery to the CCS API.",
            "EventsBody",
            {
                "202": _json(
                    _ref("EventsAccepted"),
                    "Accepted: queued for delivery, or (accepted: 0) not consented.",
                ),
                **_errors(400, 408, 413, 415, 503),
            },
        ),
        "/healthz": _get("healthz", "Liveness.", {"200": _json(_ref("Health"), "Alive.")}),
        "/readyz": _get(
            "readyz",
            "Readiness, with the upstreams currently degraded.",
            {
                "200": _json(_ref("Readiness"), "Ready."),
                "503": _json(_ref("Readiness"), "Starting or shutting down."),
            },
        ),
    }


def openapi_document(platforms: Sequence[str], version: str = __version__) -> dict[str, Any]:
    components = _schemas(platforms)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cohortkv sidecar",
            "version": version,
            "description": (
                "Permutive cohort key-values for ad requests. The enriching proxy "
                "(`GET /proxy/{upstream}/{path}`) passes ad-server responses through and is "
                "described in docs/sidecar.md, not here."
            ),
        },
        "paths": _paths(),
        "components": {"schemas": components},
    }
