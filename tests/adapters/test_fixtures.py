"""One table-driven runner for every adapter, as Prebid Server tests its bidders: each file
under `fixtures/<adapter>/` is one ad request and what the adapter must make of it.

A fixture is a JSON object:

- `description`: what it shows;
- `settings` (optional): the adapter's `[adapters.<name>]` table;
- `request`: `{"url", "method"?, "headers"?: [[name, value], ...], "body"? | "body_text"?}`;
  `body` is a JSON value sent encoded, `body_text` a raw string (malformed JSON, say);
- `unrecognised` (optional): the reason the adapter gives; absent means it recognises it;
- `context`: the parsed Context as plain JSON (as msgspec encodes it, defaults and empty
  sections left out);
- `decision` (optional): the consent gate's `{"allowed", "reason"}` on those signals alone;
- `keyvalues`: what to write;
- `expected` (optional; absent: the request comes back as it went in, nothing written):
  `request` as above, where `body` is compared as JSON with member order, `body_text` byte for
  byte and `url` byte for byte; and `written`, the key-values the adapter says it wrote.

Applying the expected output again must change nothing (unless `"idempotent": false`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.base import FailOpen
from adapters.registry import ADAPTERS
from plugin.config import ConsentConfig
from plugin.consent.gate import decide
from plugin.request import AdRequest

FIXTURES = Path(__file__).parent / "fixtures"
BY_NAME: dict[str, type[FailOpen]] = {a.name: a for a in ADAPTERS}
FILES = sorted(FIXTURES.glob("*/*.json"))


def build_request(spec: dict[str, Any]) -> AdRequest:
    if "body_text" in spec:
        body = spec["body_text"].encode()
    elif "body" in spec:
        body = msgspec.json.encode(spec["body"])
    else:
        body = b""
    return AdRequest(
        spec["url"],
        method=spec.get("method", "GET"),
        headers=tuple((k, v) for k, v in spec.get("headers", [])),
        body=body,
    )


def plain(value: Any) -> Any:
    """A Context as plain JSON, empty sections (a default `ConsentSignals()`) left out."""
    if isinstance(value, dict):
        pruned = {k: plain(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != {}}
    return value


def canonical(body: bytes) -> bytes:
    """JSON re-encoded: same values, same member order, no formatting."""
    return msgspec.json.encode(msgspec.json.decode(body))


def test_every_adapter_has_fixtures() -> None:
    assert {p.parent.name for p in FILES} == set(BY_NAME)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    case = msgspec.json.decode(path.read_bytes())
    assert isinstance(case.get("description"), str) and case["description"]
    cls = BY_NAME[path.parent.name]
    settings = msgspec.convert(case.get("settings", {}), cls.Settings)
    failures: list[tuple[str, str, BaseException]] = []
    adapter = cls(settings, on_error=lambda *a: failures.append(a))

    request = build_request(case["request"])
    assert adapter.unrecognised(request) == case.get("unrecognised")

    context = adapter.parse(request)
    assert plain(msgspec.json.decode(msgspec.json.encode(context))) == case["context"]
    if "decision" in case:
        decision = decide(context.consent, ConsentConfig())
        assert {"allowed": decision.allowed, "reason": decision.reason} == case["decision"]

    applied = adapter.apply(request, case["keyvalues"])
    expected = case.get("expected")
    if expected is None:
        assert applied.request == request
        assert applied.written == {}
    else:
        want = expected["request"]
        got = applied.request
        assert got.url == want["url"]
        assert got.method == want.get("method", "GET")
        assert got.headers == build_request(want).headers
        if "body" in want:
            assert canonical(got.body) == msgspec.json.encode(want["body"])
        else:
            assert got.body == build_request(want).body
        assert applied.written == expected["written"]
        if case.get("idempotent", True):
            again = adapter.apply(got, case["keyvalues"])
            assert again.request == got
    assert failures == []
