"""Structured logs: JSON lines with the request id, and no secret ever printed."""

from __future__ import annotations

import io
import json
import logging

from plugin.observe.logs import JsonFormatter, RedactingFilter, request_id_var


def _capture(
    formatter: logging.Formatter, secrets: tuple[str, ...] = ()
) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    logger = logging.getLogger(f"test.{id(out)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_lines_carry_the_request_id_and_extras() -> None:
    logger, out = _capture(JsonFormatter())
    token = request_id_var.set("req-42")
    try:
        logger.info("enriched %s", "gam", extra={"platform": "gam", "elapsed_ms": 3.2})
    finally:
        request_id_var.reset(token)
    logger.info("outside")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "enriched gam" and first["request_id"] == "req-42"
    assert first["platform"] == "gam" and first["elapsed_ms"] == 3.2
    assert first["level"] == "info" and first["ts"].endswith("Z")
    assert "request_id" not in second


def test_secrets_are_scrubbed_from_messages_and_arguments() -> None:
    logger, out = _capture(JsonFormatter(), secrets=("s3cr3t",))
    logger.warning("calling https://api/ctx?k=%s failed", "s3cr3t")
    logger.warning("key s3cr3t in the message itself")
    text = out.getvalue()
    assert "s3cr3t" not in text
    assert text.count("***") == 2


async def test_sidecar_log_lines_carry_the_callers_request_id() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from plugin.config import Config
    from plugin.serve.app import make_app

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(["k-secret-123"]))
    logger = logging.getLogger("cohortkv")
    logger.addHandler(handler)
    try:
        cfg = Config(
            api_key="k-secret-123", ccs_url="http://127.0.0.1:9", ctx_url="http://127.0.0.1:9"
        )
        async with TestClient(TestServer(make_app(cfg))) as client:
            resp = await client.post(
                "/v1/enrich",
                json={"url": "https://pubads.g.doubleclick.net/gampad/ads?iu=/1/x",
                      "context": {"consent": {"granted": False},
                                  "content": {"url": "https://example.com/v/1"}}},
                headers={"X-Request-Id": "abc-123"},
            )  # fmt: skip
            assert resp.status == 200
            assert resp.headers["X-Request-Id"] == "abc-123"
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failures = [x for x in lines if x["logger"] == "cohortkv.sources"]
    assert failures, "the unreachable Contextual API is logged"
    assert all(x["request_id"] == "abc-123" for x in failures)
    assert "k-secret-123" not in out.getvalue()
