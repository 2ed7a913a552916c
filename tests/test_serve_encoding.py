"""The sidecar's decoders on their own: content codings (bounded, exact round trips, nothing
raised but the named errors) and reserved names however a lenient decoder would spell them."""

from __future__ import annotations

import contextlib
import gzip
import tracemalloc
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.serve.encoding import (
    MAX_CODINGS,
    Coding,
    Malformed,
    TooLarge,
    UnsupportedCoding,
    decode,
    encode,
    parse_codings,
)

# -- content codings ---------------------------------------------------------------------------

forms = st.lists(st.sampled_from(list(Coding)), max_size=3)
NAME = {Coding.GZIP: "gzip", Coding.ZLIB: "deflate", Coding.RAW_DEFLATE: "deflate"}


@given(st.binary(max_size=4096), forms)
def test_what_is_encoded_decodes_to_the_same_bytes_and_forms(data: bytes, fs: list[Coding]) -> None:
    coded = encode(data, tuple(fs))
    plain, found = decode(coded, tuple(NAME[f] for f in fs), 1 << 16)
    assert plain == data
    assert encode(plain, found) == coded


@given(
    st.binary(max_size=4096),
    st.lists(st.sampled_from(list(Coding)), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=4096),
)
def test_the_limit_holds_at_every_stage(data: bytes, fs: list[Coding], limit: int) -> None:
    """Each coding undone yields at most `limit` bytes, or `TooLarge`."""
    coded = encode(data, tuple(fs))
    names = tuple(NAME[f] for f in fs)
    stages = [encode(data, tuple(fs[:i])) for i in range(len(fs))]
    if all(len(stage) <= limit for stage in stages):
        assert decode(coded, names, limit)[0] == data
    else:
        with pytest.raises(TooLarge):
            decode(coded, names, limit)


@given(st.binary(max_size=512), st.lists(st.sampled_from(["gzip", "deflate"]), max_size=3))
def test_garbage_raises_only_the_named_errors(data: bytes, names: list[str]) -> None:
    with contextlib.suppress(Malformed, TooLarge):
        decode(data, tuple(names), 1 << 16)


def test_a_decompression_bomb_costs_about_the_limit_not_its_size() -> None:
    limit = 1 << 20
    bomb = gzip.compress(b"\0" * (256 << 20))  # 256 MiB in about 250 KiB
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            decode(bomb, ("gzip",), limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        ("gzip", gzip.compress(b"x" * 100)[:-4]),  # truncated
        ("gzip", gzip.compress(b"x") + b"junk"),  # trailing bytes
        ("deflate", zlib.compress(b"x") + b"\0"),
        ("gzip", b"\x1f\x8b\x08\x00garbage"),  # corrupt
        ("deflate", b""),
    ],
)
def test_malformed_streams_are_malformed(coding: str, data: bytes) -> None:
    with pytest.raises(Malformed):
        decode(data, (coding,), 1 << 16)


def test_gzip_members_one_after_another_are_one_body() -> None:
    assert decode(gzip.compress(b"ab") + gzip.compress(b"cd"), ("gzip",), 4)[0] == b"abcd"


@pytest.mark.parametrize(
    ("header", "codings"),
    [
        (["gzip"], ("gzip",)),
        (["GZip , identity", "x-gzip"], ("gzip", "gzip")),
        (["identity", ""], ()),
        (["deflate,,gzip"], ("deflate", "gzip")),
    ],
)
def test_codings_are_read_from_every_header_line(header: list[str], codings: tuple[str]) -> None:
    assert parse_codings(header) == codings


@pytest.mark.parametrize(
    "header",
    [
        ["br"],
        ["zstd"],
        ["gzip", "compress"],
        ["x-unknown"],
        [", ".join(["gzip"] * (MAX_CODINGS + 1))],
    ],
)
def test_other_codings_are_unsupported(header: list[str]) -> None:
    with pytest.raises(UnsupportedCoding):
        parse_codings(header)
