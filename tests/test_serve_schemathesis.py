"""Schemathesis against the sidecar's own /openapi.json: no input may cause a server error."""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.helpers.fake_adserver import FakeAdServer, running, sidecar_config
from tests.helpers.fakes import FakePermutive

EXAMPLES = 50


def fuzz(doc: dict[str, Any], base_url: str) -> list[str]:
    """Runs every operation, positive and negative data; returns what was exercised."""
    schema = schemathesis.openapi.from_dict(doc)
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        has_input = operation.method.upper() == "POST"  # the GETs take no input to violate
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)[: 2 if has_input else 1]
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, timeout=10)
                case.validate_response(response, checks=[not_a_server_error])

            run()
            exercised.append(f"{operation.method.upper()} {operation.path} {mode.value}")
    return exercised


async def test_openapi_document_survives_schemathesis() -> None:
    async with FakePermutive() as fake, FakeAdServer() as ads:
        cfg = sidecar_config(fake, ads)
        async with running(cfg) as side:
            doc = await (await side.client.get("/openapi.json")).json()
            base = str(side.client.make_url("/")).rstrip("/")
            exercised = await asyncio.to_thread(fuzz, doc, base)
        assert "POST /v1/enrich positive" in exercised
        assert "POST /v1/events negative" in exercised
        for route in ("enrich", "proxy"):
            assert side.sample("cohortkv_serve_errors_total", route=route) == 0
        # Valid bodies got through validation to the enricher, not only errors. (Generated
        # event times fall outside the accepted window, so /v1/events positives are 400s.)
        passed = side.total("cohortkv_consent_decisions_total") + side.total(
            "cohortkv_not_recognised_total"
        )
        assert passed > 0
