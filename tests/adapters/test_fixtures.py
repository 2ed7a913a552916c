"""One table-driven runner for every adapter, as Prebid Server tests its bidders: each file
under `fixtures/<adapter>/` is one ad request and what the adapter must make of it.

A fixture is a JSON object:

- `description`: what it shows;
- `settings` (optional): the adapter's `[adapters.<name>]` table;
- `request`: `{"url", "method"?, "headers"?: [[name, value], ...], "body"? | "body_text"? |
  "body_base64"?}`; `body` is a JSON value sent encoded (compact, by msgspec), `body_text` a raw
  string (formatting, number spellings, escapes, malformed JSON, repeated keys), `body_base64`
  raw bytes;
- `gzip` (optional): the sidecar's fixture test sends this body gzip-compressed
  (`Content-Encoding: gzip`); the adapter itself sees it decoded;
- `unrecognised` (optional): the reason the adapter's `read` gives; absent means it
  recognises it (then nothing else is read: `context` is `{}`, nothing is written);
- `context`: the Context `read` gives, as plain JSON (as msgspec encodes it, defaults and
  empty sections left out);
- `decision` (optional): the consent gate's `{"allowed", "reason"}` on those signals alone
  (`consent`: the `[consent]` table it is decided with);
- what to write: `keyvalues`, or `activations` `{"behavioral": {name: [ids]}, "contextual":
  {...}}` as the API answers activate them (with `keys`, the `[keys]` table): then the runner
  writes what the enricher would (the key-values of the adapter's activation names, and the
  cohorts per activation name);
- `skipped` (optional): what the adapter reports it left out (`on_skip` reasons), in order;
- `expected` (optional; absent: the request comes back as it went in, nothing written):
  `request` as above, compared byte for byte (`body` as msgspec encodes it); `written`, the
  key-values the adapter says it wrote; and for bid requests `changed`, the members written:
  the body outside them must be the input's, byte for byte (checked by a reader of the tests'
  own, `tests.helpers.jsonbytes.outside`).

Each request is read once (`adapter.read`) and written from what was read (`adapter.apply`),
as the enricher does. Reading and applying the expected output again must change nothing
(unless `"idempotent": false`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.base import CohortsFor, FailOpen, Parsed, Unrecognised
from adapters.registry import ADAPTERS
from plugin.config import ConsentConfig, KeysConfig
from plugin.consent.gate import decide
from plugin.permutive.answer import Answer
from plugin.request import AdRequest
from plugin.signals.merge import build_keyvalues, cohorts_for
from tests.helpers.jsonbytes import outside

FIXTURES = Path(__file__).parent / "fixtures"
BY_NAME: dict[str, type[FailOpen]] = {a.name: a for a in ADAPTERS}
FILES = sorted(FIXTURES.glob("*/*.json"))


def build_request(spec: dict[str, Any]) -> AdRequest:
    if "body_text" in spec:
        body = spec["body_text"].encode()
    elif "body_base64" in spec:
        body = base64.b64decode(spec["body_base64"])
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


def to_write(
    case: dict[str, Any], activation_platforms: tuple[str, ...]
) -> tuple[dict[str, Any], CohortsFor | None]:
    """The key-values and cohorts per activation name, as the enricher would hand them."""
    if "activations" not in case:
        return case["keyvalues"], None
    keys = msgspec.convert(case.get("keys", {}), KeysConfig)
    acts = case["activations"]
    answers = [
        Answer.from_wire([], acts[kind]) if kind in acts else None
        for kind in ("behavioral", "contextual")
    ]
    b, c = (a.activated(activation_platforms) if a else [] for a in answers)
    return build_keyvalues(keys, b, c), cohorts_for(keys, answers[0], answers[1])


# --- the runner ---


def test_every_adapter_has_fixtures() -> None:
    assert {p.parent.name for p in FILES} == set(BY_NAME)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    case = msgspec.json.decode(path.read_bytes())
    assert isinstance(case.get("description"), str) and case["description"]
    cls = BY_NAME[path.parent.name]
    settings = msgspec.convert(case.get("settings", {}), cls.Settings)
    failures: list[tuple[str, str, BaseException]] = []
    skipped: list[str] = []
    adapter = cls(settings, on_error=lambda *a: failures.append(a))
    adapter.on_skip = lambda _, reason: skipped.append(reason)

    request = build_request(case["request"])
    read = adapter.read(request)  # read once: everything below works from what it read
    if isinstance(read, Unrecognised):
        assert read.reason == case.get("unrecognised")
        assert read.platform == adapter.name
        assert case["context"] == {} and "expected" not in case
        assert skipped == case.get("skipped", []) and failures == []
        return
    assert case.get("unrecognised") is None
    assert read.adapter is adapter and read.request == request

    context = read.context
    assert plain(msgspec.json.decode(msgspec.json.encode(context))) == case["context"]
    if "decision" in case:
        cfg = msgspec.convert(case.get("consent", {}), ConsentConfig)
        decision = decide(context.consent, cfg)
        assert {"allowed": decision.allowed, "reason": decision.reason} == case["decision"]

    keyvalues, by_name = to_write(case, adapter.activation_platforms)
    applied = adapter.apply(read, keyvalues, by_name)
    assert skipped == case.get("skipped", [])
    expected = case.get("expected")
    if expected is None:
        assert applied.request == request
        assert applied.written == {}
    else:
        want = build_request(expected["request"])
        got = applied.request
        assert (got.url, got.method, got.headers) == (want.url, want.method, want.headers)
        assert got.body == want.body
        assert applied.written == expected["written"]
        if request.body and request.method.upper() == "POST" and "changed" in expected:
            assert outside(got.body, expected["changed"]) == outside(
                request.body, expected["changed"]
            )
        if case.get("idempotent", True):
            again = adapter.read(got)
            assert isinstance(again, Parsed)
            assert adapter.apply(again, keyvalues, by_name).request == got
    assert failures == []


def test_openrtb_fixtures_that_write_say_what_they_changed() -> None:
    for path in FILES:
        case = msgspec.json.decode(path.read_bytes())
        if path.parent.name == "openrtb" and "expected" in case:
            assert case["expected"].get("changed"), path.name


def test_outside_cuts_members_with_their_commas() -> None:
    body = b'{"a": 1.00,\n "user": {"data": [{"name": "x"}, {"name": "p"}], "k": 1E2}, "z": []}'
    assert outside(body, ["user.data[name=p]"]) == (
        '{"a": 1.00,\n "user": {"data": [{"name": "x"}], "k": 1E2}, "z": []}'
    )
    assert (
        outside(body, ["a", "user.k"])
        == '{"user": {"data": [{"name": "x"}, {"name": "p"}]}, "z": []}'
    )
    assert outside(body, ["missing.path"]) == body.decode()
