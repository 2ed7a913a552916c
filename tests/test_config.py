"""Configuration: TOML plus COHORTKV_* environment, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugin.config import Config, ConfigError, load_config


def test_defaults_match_the_documented_ones() -> None:
    c = Config()
    assert c.budget_ms == 300
    assert c.cache.behavioral_ttl_s == 30 * 86400
    assert c.cache.contextual_ttl_s == 600
    assert (c.keys.mode, c.keys.behavioral, c.keys.contextual) == ("merge", "permutive", "prmtvctx")
    assert c.consent.vendor_id == 361 and c.consent.purposes == (1,)
    assert c.consent.default == "denied"
    assert c.sessions.idle_timeout_s == c.views.idle_timeout_s == 1800
    assert c.behavioral.wait == "always"
    assert c.sandbox is False


def test_toml_then_environment_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        'api_key = "from-file"\nbudget_ms = 250\n[keys]\nmode = "split"\n'
        '[adapters.gam]\nmax_url_length = 4000\n[serve.upstreams]\ngam = "http://x"\n'
    )
    env = {
        "COHORTKV_BUDGET_MS": "120",
        "COHORTKV_CACHE__CONTEXTUAL_TTL_S": "60",
        "COHORTKV_CONSENT__PURPOSES": "[1, 3]",
        "COHORTKV_KEYS__PUID": "puid",
        "OTHER": "ignored",
    }
    c = load_config(f, env)
    assert c.api_key == "from-file"
    assert c.budget_ms == 120
    assert c.keys.mode == "split" and c.keys.puid == "puid"
    assert c.cache.contextual_ttl_s == 60
    assert c.consent.purposes == (1, 3)
    assert c.adapters == {"gam": {"max_url_length": 4000}}
    assert c.serve.upstreams == {"gam": "http://x"}


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"COHORTKV_BUDGET_MS": "-5"}, "budget_ms", "expected `int` >= 1"),
        ({"COHORTKV_BUDGET_MS": "soon"}, "budget_ms", "expected `int`"),
        ({"COHORTKV_CACHE__CONTEXTUAL_TTL_S": "0"}, "cache.contextual_ttl_s", "> 0.0"),
        ({"COHORTKV_KEYS__MODE": "both"}, "keys.mode", "'merge', 'split'"),
        ({"COHORTKV_KEYS__BEHAVIORAL": "a key with spaces"}, "keys.behavioral", "expected `str`"),
        ({"COHORTKV_CONSENT__DEFAULT": "maybe"}, "consent.default", "'denied', 'granted'"),
        ({"COHORTKV_CACHE__TYPO": "1"}, "cache", "unknown field `typo`"),
    ],
)
def test_bad_values_name_the_field(env: dict[str, str], field: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env)
    msg = str(e.value)
    assert field in msg and expected in msg, msg


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("budget_ms = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, {})


def test_repr_hides_the_api_key() -> None:
    c = Config(api_key="s3cr3t-key")
    assert "s3cr3t-key" not in repr(c) and "s3cr3t-key" not in str(c)


# -- `Config(...)` in Python obeys the rules a file does ------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"sandbox": True, "budget_ms": -5},
            "budget_ms",
            "config: budget_ms: expected `int` >= 1, got -5",
        ),
        ({"budget_ms": "300"}, "budget_ms", "config: budget_ms: expected `int`, got `str`"),
        (
            {"ccs_url": "ftp://x"},
            "ccs_url",
            "config: ccs_url: expected the API's base URL, like https://api.permutive.app"
            " (http:// or https://), got scheme 'ftp'",
        ),
        ({"ctx_url": "https://api.permutive.com/ctx/v1/segment"}, "ctx_url", "endpoint path"),
        ({"api_key": "k-123456", "sandbox": True}, "sandbox", "cannot be combined"),
        ({"adapters": {"gam": {"max_url_length": 0}}}, "adapters.gam.max_url_length", ">= 1"),
    ],
)
def test_python_construction_is_checked(
    kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        Config(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field
    assert message in str(e.value)


def test_python_and_file_give_the_same_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    for toml, kwargs in (
        ('ccs_url = "ftp://x"', {"ccs_url": "ftp://x"}),
        ('[keys]\nmode = "both"', {"keys": {"mode": "both"}}),
        ("[cache]\ncontextual_ttl_s = 0", {"cache": {"contextual_ttl_s": 0}}),
        ('budget_ms = "300"', {"budget_ms": "300"}),
    ):
        f.write_text(toml)
        with pytest.raises(ConfigError) as from_file:
            load_config(f, {})
        with pytest.raises(ConfigError) as from_python:
            Config(**_sections(kwargs))
        assert from_file.value.field == from_python.value.field
        # The file's message is the Python one, without the value where the type says it all.
        assert str(from_python.value).startswith(str(from_file.value).split(", got")[0])


def _sections(kwargs: dict[str, object]) -> dict[str, object]:
    from plugin.config import CacheConfig, KeysConfig

    kinds = {"keys": KeysConfig, "cache": CacheConfig}
    out: dict[str, object] = {}
    for k, v in kwargs.items():
        out[k] = kinds[k](**v) if isinstance(v, dict) else v  # type: ignore[arg-type]
    return out


def test_sections_built_alone_name_their_place_in_the_config() -> None:
    from plugin.config import CacheConfig, KeysConfig

    with pytest.raises(ConfigError) as e:
        CacheConfig(contextual_ttl_s=-1)
    assert str(e.value) == "config: cache.contextual_ttl_s: expected `float` > 0.0, got -1"
    with pytest.raises(ConfigError) as e:
        KeysConfig(mode="both")  # type: ignore[arg-type]
    assert str(e.value) == "config: keys.mode: expected one of 'merge', 'split', got 'both'"


def test_overrides_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="budget_ms"):
        Config(sandbox=True).with_overrides(budget_ms=0)


def _build(path: str, kwargs: dict[str, object]) -> object:
    """`Config(...)`, or the section at `path` built alone (`serve`, `cache`), from kwargs."""
    from plugin import config

    kinds = {"serve": config.ServeConfig, "cache": config.CacheConfig, "": Config}
    return kinds[path](**kwargs)


@pytest.mark.parametrize(
    ("section", "kwargs", "field"),
    [
        ("", {"bugdet_ms": 5}, "bugdet_ms"),
        ("cache", {"ttl": 5}, "cache.ttl"),
        ("", {"cache": "600"}, "cache"),
        ("", {"cache": [600]}, "cache"),
        ("", {"cache": {"contextual_ttl_s": "soon"}}, "cache.contextual_ttl_s"),
        ("", {"serve": {"upstreams": ["gam"]}}, "serve.upstreams"),
        ("", {"serve": {"upstreams": {"gam": 5}}}, "serve.upstreams.gam"),
        ("serve", {"upstreams": {"gam": {"url": 5}}}, "serve.upstreams.gam.url"),
        ("serve", {"upstreams": {"vast": {"platform": "query"}}}, "serve.upstreams.vast.url"),
        ("", {"events": {"properties": ["a"]}}, "events.properties"),
        ("", {"events": {"properties": {"season": "nope"}}}, "events.properties.season"),
        ("", {"adapters": {"gam": 5}}, "adapters.gam"),
        ("", {"adapters": {"gam": {"max_url_length": "x"}}}, "adapters.gam.max_url_length"),
    ],
)
def test_wrong_shapes_and_unknown_names_in_python_are_config_errors(
    section: str, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as e:
        _build(section, kwargs)
    assert e.value.field == field
    assert str(e.value).startswith(f"config: {field}: ")


def test_a_table_given_as_a_dict_becomes_its_section() -> None:
    from plugin.config import UpstreamConfig

    cfg = Config(
        cache={"contextual_ttl_s": 60},  # type: ignore[arg-type]
        serve={"upstreams": {"vast": {"url": "http://x", "platform": "query"}}},  # type: ignore[arg-type]
    )
    assert cfg.cache.contextual_ttl_s == 60 and cfg.cache.behavioral_ttl_s == 30 * 86400
    assert cfg.serve.upstreams["vast"] == UpstreamConfig(url="http://x", platform="query")
    assert cfg.serve.explain_from == ("127.0.0.0/8", "::1/128")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"COHORTKV_CACHE__REDIS_PREFIX": "p" * 65},
            "cache.redis_prefix: expected `str` of at most 64 characters",
        ),
        ({"COHORTKV_KEYS__MODE": "both"}, "keys.mode: expected one of 'merge', 'split'"),
    ],
)
def test_length_and_enum_problems_are_in_our_words(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env)
    assert message in str(e.value) and "length" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        Config(cache={"redis_prefix": "p" * 65})  # type: ignore[arg-type]
    assert str(e.value).startswith("config: cache.redis_prefix: expected `str` of at most 64 ")


def test_unknown_overrides_are_config_errors() -> None:
    with pytest.raises(ConfigError) as e:
        Config(sandbox=True).with_overrides(bugdet_ms=5)
    assert e.value.field == "bugdet_ms" and "budget_ms" in str(e.value)


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([f.name for f in msgspec.structs.fields(Config)] + ["nope"]),
    st.sampled_from(["", "cache", "serve", "events", "adapters"]),
    _JUNK,
)
def test_anything_given_in_python_is_accepted_or_a_config_error(
    name: str, inner: str, value: object
) -> None:
    kwargs: dict[str, object] = {"sandbox": True}
    kwargs.update({inner: {name: value}} if inner else {name: value})
    try:
        Config(**kwargs)  # type: ignore[arg-type]
    except ConfigError as e:
        assert str(e).startswith("config: ") and e.field
    except DeprecationWarning:
        pass  # log_json: still read, with a warning


async def test_an_enricher_never_starts_on_a_bad_config_built_in_python() -> None:
    from plugin import Enricher

    with pytest.raises(ConfigError, match="budget_ms"):
        async with Enricher(Config(sandbox=True, budget_ms=-5)):
            pass


def test_the_secret_and_urls_are_never_shown() -> None:
    with pytest.raises(ConfigError) as e:
        Config(api_key=123456789)  # type: ignore[arg-type]
    assert "123456789" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        Config(ccs_url="https://user:pa55word@api.permutive.app")
    assert "pa55word" not in str(e.value)
