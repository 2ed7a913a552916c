"""Identity forms and the wire encoding: one identity form, absent fields omitted."""

from __future__ import annotations

import contextlib
import hashlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.identity import (
    Alias,
    Identity,
    IdentityError,
    email_sha256,
    generate_permutive_id,
    is_uuid4,
    parse_alias_flag,
)
from plugin.permutive.wire import (
    CcsRequest,
    ContextualResponse,
    ErrorBody,
    Event,
    ccs_response_decoder,
    ctx_response_decoder,
    error_decoder,
    json_encoder,
    parse_error,
)

UID = "2008c38f-dece-4570-976d-87593ed001c3"


def test_exactly_one_identity_form() -> None:
    Identity(user_id=UID).validate()
    Identity(alias=Alias("idfa", "X")).validate()
    Identity(aliases=(Alias("email_sha256", "a", 0), Alias("idfa", "X", 1))).validate()
    with pytest.raises(IdentityError, match="exactly one"):
        Identity().validate()
    with pytest.raises(IdentityError, match="exactly one"):
        Identity(user_id=UID, alias=Alias("idfa", "X")).validate()


@pytest.mark.parametrize(
    ("identity", "field"),
    [
        (Identity(user_id="not-a-uuid"), "identity.user_id"),
        (Identity(user_id="2008c38f-dece-1570-976d-87593ed001c3"), "identity.user_id"),  # v1
        (Identity(alias=Alias("", "X")), "identity.alias.tag"),
        (Identity(alias=Alias("idfa", " ")), "identity.alias.id"),
        (Identity(aliases=()), "identity.aliases"),
        (
            Identity(aliases=(Alias("a", "1", 0), Alias("b", "2", 0))),
            "identity.aliases[1].priority",
        ),
        (Identity(aliases=(Alias("a", "1"),)), "identity.aliases[0].priority"),
    ],
)
def test_invalid_identities_name_the_field(identity: Identity, field: str) -> None:
    with pytest.raises(IdentityError, match=field.replace("[", r"\[").replace("]", r"\]")):
        identity.validate()


def test_cache_key_follows_the_highest_priority_alias() -> None:
    a = Identity(aliases=(Alias("idfa", "X", 1), Alias("email_sha256", "E", 0)))
    assert a.cache_key() == Identity(alias=Alias("email_sha256", "E")).cache_key()


def test_helpers() -> None:
    assert is_uuid4(generate_permutive_id())
    assert (
        email_sha256("  Jane.Doe@Example.COM ")
        == hashlib.sha256(b"jane.doe@example.com").hexdigest()
    )
    assert parse_alias_flag("idfa:6D92:prio") == Alias("idfa", "6D92:prio")
    assert parse_alias_flag("email_sha256:abc:0") == Alias("email_sha256", "abc", 0)
    with pytest.raises(IdentityError, match="--alias"):
        parse_alias_flag("nocolon")


def test_ccs_request_omits_absent_fields() -> None:
    req = CcsRequest(
        events=[Event(name="Videoview", time="2024-01-15T14:00:00Z", properties={"a": 1})],
        alias=Alias("idfa", "X"),
    )
    assert msgspec.json.decode(json_encoder.encode(req)) == {
        "events": [{"name": "Videoview", "time": "2024-01-15T14:00:00Z", "properties": {"a": 1}}],
        "alias": {"tag": "idfa", "id": "X"},
    }


def test_responses_decode_as_documented() -> None:
    r = ccs_response_decoder.decode(
        b'{"user_id":"u","cohorts":["1","2"],"activations":{"dfp":["1"]},"extra":true}'
    )
    assert (r.user_id, r.cohorts, r.activations) == ("u", ["1", "2"], {"dfp": ["1"]})
    assert ctx_response_decoder.decode(
        b'{"activations":{"freewheel":["9"]}}'
    ) == ContextualResponse(cohorts=[], activations={"freewheel": ["9"]})
    e = error_decoder.decode(
        b'{"request_id":"r","error":{"status":"Bad Request","code":2000,"message":"m","x":1}}'
    )
    assert isinstance(e, ErrorBody) and e.error is not None
    assert (e.error.status, e.error.code) == ("Bad Request", 2000)


def test_parse_error_keeps_the_fields_of_the_right_type() -> None:
    """An upstream error body is diagnostic: a wrongly typed field loses only itself."""
    e = parse_error(b'{"error":{"status":400,"code":"2001","message":"m"}}')
    assert e is not None and (e.status, e.code, e.message) == (None, 2001, "m")
    assert parse_error(b"<html>") is None
    assert parse_error(b'{"error":"x"}') is None


@given(st.binary(max_size=200))
def test_decoders_fail_only_with_decode_error(data: bytes) -> None:
    for decoder in (ccs_response_decoder, ctx_response_decoder, error_decoder):
        with contextlib.suppress(msgspec.DecodeError):
            decoder.decode(data)
