"""COHORTKV_* environment variables: each value read as its field's type, unknown variables (the
ones Kubernetes sets for Services) warned about once, errors that name the variable."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin.config import Config, ConfigError, load_config
from plugin.config_env import EnvError, coerce, overlay, read_env
from tests.helpers.samples import KUBERNETES_SERVICE_LINKS

CONFIG_WARNINGS = "cohortkv.config"


def config_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CONFIG_WARNINGS]


# -- Kubernetes service links ------------------------------------------------------------------


def test_service_link_variables_start_with_one_warning_naming_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {**KUBERNETES_SERVICE_LINKS, "COHORTKV_API_KEY": "k" * 16, "COHORTKV_BUDGET_MS": "250"}
    with caplog.at_level(logging.WARNING, logger=CONFIG_WARNINGS):
        cfg = load_config(None, env)
    assert cfg.budget_ms == 250 and cfg.api_key == "k" * 16
    (warning,) = config_warnings(caplog)
    for name in KUBERNETES_SERVICE_LINKS:
        assert name in warning
    assert "COHORTKV_BUDGET_MS" not in warning and "COHORTKV_API_KEY" not in warning
    assert "enableServiceLinks" in warning
    assert "10.96." not in warning  # names only, never values


def test_no_warning_when_every_variable_is_a_setting(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=CONFIG_WARNINGS):
        load_config(None, {"COHORTKV_SANDBOX": "true", "OTHER_SERVICE_HOST": "10.0.0.1"})
    assert config_warnings(caplog) == []


def test_the_warning_can_be_left_to_a_later_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=CONFIG_WARNINGS):
        load_config(None, KUBERNETES_SERVICE_LINKS, warn_unknown_env=False)
    assert config_warnings(caplog) == []


def test_a_misspelt_key_in_the_file_stays_an_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("budget_ms = 200\n[cache]\ncontextual_ttl = 60\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, KUBERNETES_SERVICE_LINKS)
    assert "cache" in str(e.value) and "contextual_ttl" in str(e.value)
    assert "environment" not in str(e.value)
    f.write_text("budget = 200\n")
    with pytest.raises(ConfigError, match="budget"):
        load_config(f, {})


def test_a_misspelt_field_below_a_setting_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"COHORTKV_CACHE__CONTEXTUAL_TTL": "60"})
    msg = str(e.value)
    assert msg.startswith("environment COHORTKV_CACHE__CONTEXTUAL_TTL: cache: ")
    assert "unknown field `contextual_ttl`" in msg and "contextual_ttl_s" in msg


def test_an_error_in_the_file_is_not_blamed_on_a_variable_that_set_the_same_table(
    tmp_path: Path,
) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[cache]\ncontextual_ttl = 60\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, {"COHORTKV_CACHE": '{"contextual_ttl_s": 45}'})
    assert str(e.value) == "config: cache.contextual_ttl: unknown field"
    with pytest.raises(ConfigError) as e:
        load_config(None, {"COHORTKV_ADAPTERS": '{"nope": {}}'})
    assert str(e.value).startswith("environment COHORTKV_ADAPTERS: adapters.nope: expected a")


def test_a_moved_setting_says_where_it_went() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"COHORTKV_EVENTS__PLAY_EVENT": "Videoview"})
    assert str(e.value).startswith("environment COHORTKV_EVENTS__PLAY_EVENT: events.play_event:")
    assert "moved to [adapters.<platform>] play_event" in str(e.value)


# -- values typed by their field ---------------------------------------------------------------


def test_text_fields_take_the_text_as_it_is() -> None:
    cfg = load_config(
        None,
        {
            "COHORTKV_API_KEY": "123456",
            "COHORTKV_KEYS__BEHAVIORAL": "123",
            "COHORTKV_KEYS__CONTEXTUAL": "true",
            "COHORTKV_KEYS__PUID": "1e3",
            "COHORTKV_CACHE__REDIS_URL": "redis://cache:6379/0",
        },
    )
    assert cfg.api_key == "123456"
    assert (cfg.keys.behavioral, cfg.keys.contextual, cfg.keys.puid) == ("123", "true", "1e3")
    assert cfg.cache.redis_url == "redis://cache:6379/0"


def test_numbers_flags_lists_and_tables() -> None:
    cfg = load_config(
        None,
        {
            "COHORTKV_SANDBOX": "yes",
            "COHORTKV_LOG__JSON": "TRUE",
            "COHORTKV_BUDGET_MS": " 120 ",
            "COHORTKV_CACHE__CONTEXTUAL_TTL_S": "90",
            "COHORTKV_HTTP__BREAKER_OPEN_S": "0.25",
            "COHORTKV_CONSENT__PURPOSES": "[1, 3]",
            "COHORTKV_KEYS__MODE": "split",
            "COHORTKV_ADAPTERS__GAM__MAX_URL_LENGTH": "4000",
            "COHORTKV_SERVE__UPSTREAMS__GAM": "https://pubads.g.doubleclick.net",
            "COHORTKV_SERVE__UPSTREAMS__VAST__URL": "https://vast.example.com",
            "COHORTKV_SERVE__UPSTREAMS__VAST__PLATFORM": "gam",
            "COHORTKV_EVENTS__PROPERTIES": '{"season": "number"}',
        },
    )
    assert cfg.sandbox is True and cfg.log.json is True
    assert cfg.budget_ms == 120 and cfg.cache.contextual_ttl_s == 90.0
    assert cfg.http.breaker_open_s == 0.25
    assert cfg.consent.purposes == (1, 3)
    assert cfg.keys.mode == "split"
    assert cfg.adapters["gam"] == {"max_url_length": 4000}
    assert cfg.serve.upstreams["gam"] == "https://pubads.g.doubleclick.net"
    vast = cfg.serve.upstreams["vast"]
    assert not isinstance(vast, str) and (vast.url, vast.platform) == (
        "https://vast.example.com",
        "gam",
    )
    assert cfg.events.properties == {"season": "number"}


def test_environment_overrides_the_file_field_by_field(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        "sandbox = true\nbudget_ms = 250\n[cache]\ncontextual_ttl_s = 30\nbehavioral_ttl_s = 60\n"
        '[serve.upstreams]\ngam = "http://gam.example"\n'
    )
    cfg = load_config(
        f,
        {
            "COHORTKV_CACHE": '{"contextual_ttl_s": 45}',
            "COHORTKV_CACHE__BEHAVIORAL_TTL_S": "120",
            "COHORTKV_SERVE__UPSTREAMS__FREEWHEEL": "http://fw.example",
        },
    )
    assert cfg.budget_ms == 250
    assert (cfg.cache.contextual_ttl_s, cfg.cache.behavioral_ttl_s) == (45, 120)
    assert cfg.serve.upstreams == {"gam": "http://gam.example", "freewheel": "http://fw.example"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"COHORTKV_BUDGET_MS": "soon"},
            "environment COHORTKV_BUDGET_MS: budget_ms: expected `int`, got 'soon'",
        ),
        (
            {"COHORTKV_BUDGET_MS": "-5"},
            "environment COHORTKV_BUDGET_MS: budget_ms: expected `int` >= 1, got '-5'",
        ),
        (
            {"COHORTKV_BUDGET_MS": "1.5"},
            "environment COHORTKV_BUDGET_MS: budget_ms: expected `int`, got '1.5'",
        ),
        (
            {"COHORTKV_CACHE__CONTEXTUAL_TTL_S": "0"},
            "environment COHORTKV_CACHE__CONTEXTUAL_TTL_S: cache.contextual_ttl_s: "
            "expected `float` > 0.0, got '0'",
        ),
        (
            {"COHORTKV_KEYS__MODE": "both"},
            "environment COHORTKV_KEYS__MODE: keys.mode: expected one of 'merge', 'split', "
            "got 'both'",
        ),
        (
            {"COHORTKV_SANDBOX": "maybe"},
            "environment COHORTKV_SANDBOX: sandbox: expected `bool` (true/false, yes/no, on/off, "
            "1/0), got 'maybe'",
        ),
        (
            {"COHORTKV_CONSENT__PURPOSES": "1,3"},
            "environment COHORTKV_CONSENT__PURPOSES: consent.purposes: expected a JSON list like "
            "[1, 2], got '1,3'",
        ),
        (
            {"COHORTKV_CONSENT__PURPOSES": "[1, 0]"},
            "environment COHORTKV_CONSENT__PURPOSES: consent.purposes[1]: expected `int` >= 1, "
            "got '[1, 0]'",
        ),
        (
            {"COHORTKV_CONSENT": '{"vendor_id": 0}'},
            "environment COHORTKV_CONSENT: consent.vendor_id: expected `int` >= 1",
        ),
        (
            {"COHORTKV_ADAPTERS__NOPE__MAX_URL_LENGTH": "10"},
            "environment COHORTKV_ADAPTERS__NOPE__MAX_URL_LENGTH: adapters.nope: expected a "
            "platform, one of ",
        ),
        (
            {"COHORTKV_ADAPTERS__GAM__MAX_URL_LENGTH": "long"},
            "environment COHORTKV_ADAPTERS__GAM__MAX_URL_LENGTH: adapters.gam.max_url_length: "
            "expected `int`, got 'long'",
        ),
        (
            {"COHORTKV_BUDGET_MS__LOW": "1"},
            "environment COHORTKV_BUDGET_MS__LOW: budget_ms: is a single value, not a table",
        ),
        (
            {"COHORTKV_SERVE____PORT": "1"},
            "environment COHORTKV_SERVE____PORT: serve: expected a field name between `__`",
        ),
        (
            {"COHORTKV_SANDBOX": "true", "COHORTKV_API_KEY": "k" * 16},
            "environment COHORTKV_SANDBOX: sandbox: true cannot be combined with an api_key",
        ),
    ],
)
def test_errors_name_the_variable_the_field_and_what_was_expected(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env)
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize(
    "env",
    [
        {"COHORTKV_API_KEY": "   "},
        {"COHORTKV_API_KEY__X": "s3cr3t-value-1"},
        {"COHORTKV_API_KEY": "s3cr3t-value-1", "COHORTKV_SANDBOX": "true"},
        {"COHORTKV_CACHE": '{"redis_url": "redis://:s3cr3t-value-1@c/0", "typo": 1}'},
        {"COHORTKV_SERVE__UPSTREAMS__GAM": '{"url": "https://u:s3cr3t-value-1@x", "typo": 1}'},
    ],
)
def test_secret_values_never_appear_in_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env)
    msg = str(e.value)
    assert msg.startswith("environment COHORTKV_"), msg
    assert "s3cr3t" not in msg


# -- coercion, for any value -------------------------------------------------------------------

FLAG_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


@given(st.text())
def test_any_text_is_kept_as_it_is_for_a_text_field(text: str) -> None:
    assert coerce(text, str) == text
    assert coerce(text, str | None) == text


@given(st.integers())
def test_integers_read_back_as_written(n: int) -> None:
    assert coerce(str(n), int) == n
    assert coerce(f" {n}\n", int | None) == n


@given(st.integers(min_value=1))
def test_bounded_integers_within_bounds(n: int) -> None:
    assert coerce(str(n), PositiveInt) == n


@given(st.integers(max_value=0))
def test_bounded_integers_out_of_bounds_are_refused(n: int) -> None:
    with pytest.raises(EnvError, match=">= 1"):
        coerce(str(n), PositiveInt, variable="COHORTKV_X", path=("x",))


@given(st.floats(allow_nan=False))
def test_floats_read_back_as_written(x: float) -> None:
    assert coerce(repr(x), float) == x


@given(st.floats(min_value=0, exclude_min=True, allow_infinity=False))
def test_positive_floats_within_bounds(x: float) -> None:
    assert coerce(str(x), PositiveFloat) == x


def test_nan_is_not_a_positive_number() -> None:
    with pytest.raises(EnvError):
        coerce("nan", PositiveFloat)
    assert math.isnan(coerce("nan", float))


@given(st.sampled_from(sorted(FLAG_WORDS)), st.booleans())
def test_flags_in_any_case(word: str, upper: bool) -> None:
    expected = word in ("true", "1", "yes", "on")
    assert coerce(word.upper() if upper else word, bool) is expected


@given(st.text().filter(lambda t: t.strip().lower() not in FLAG_WORDS))
def test_anything_else_is_not_a_flag(text: str) -> None:
    with pytest.raises(EnvError, match="expected `bool`"):
        coerce(text, bool)


@given(st.lists(st.integers(min_value=1, max_value=10)))
def test_lists_are_json(items: list[int]) -> None:
    assert coerce(msgspec.json.encode(items).decode(), tuple[PositiveInt, ...]) == items


@given(st.sampled_from(["", "null", "NULL", " null "]))
def test_null_unsets_an_optional_field_that_is_not_text(text: str) -> None:
    assert coerce(text, int | None) is None
    assert coerce(text, str | None) == text


@given(st.text())
def test_a_closed_set_of_text_values(text: str) -> None:
    tp: Any = Literal["merge", "split"]
    if text in ("merge", "split"):
        assert coerce(text, tp) == text
    else:
        with pytest.raises(EnvError, match="expected one of 'merge', 'split'"):
            coerce(text, tp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


tables = st.dictionaries(st.text(), json_values, max_size=4)


@given(tables, tables)
def test_overlay_keeps_what_the_top_does_not_set(base: dict[str, Any], top: dict[str, Any]) -> None:
    merged = overlay(base, top)
    assert set(merged) == set(base) | set(top)
    for key, value in merged.items():
        if key not in top:
            assert value == base[key]
        elif not (isinstance(base.get(key), dict) and isinstance(top[key], dict)):
            assert value == top[key]


@given(st.from_regex(r"[A-Z][A-Z0-9_]{0,30}", fullmatch=True))
def test_names_that_are_no_setting_are_listed_never_fatal(suffix: str) -> None:
    name = "COHORTKV_" + suffix
    settings = {f.encode_name for f in msgspec.structs.fields(Config)}
    if suffix.lower().split("__")[0] in settings:
        return  # a real setting (or one below it): the tests above cover those
    found = read_env({name: "x"}, Config)
    assert found.unknown == (name,) and found.data == {} and found.origins == {}
