"""Configuration: TOML plus COHORTKV_* environment, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

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
