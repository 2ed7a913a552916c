"""Behavioral and contextual cohorts into one ad request's key-values: merged or split."""

from __future__ import annotations

from collections.abc import Sequence

from plugin.config import KeysConfig


def build_keyvalues(
    keys: KeysConfig,
    behavioral: Sequence[str],
    contextual: Sequence[str],
    user_id: str | None = None,
) -> dict[str, list[str]]:
    """Merged: behavioral then contextual under one key, each cohort once, order kept.
    Split: each signal under its own key. Empty keys are left out."""
    out: dict[str, list[str]] = {}
    if keys.mode == "merge":
        merged = list(dict.fromkeys([*behavioral, *contextual]))
        if merged:
            out[keys.behavioral] = merged
    else:
        if behavioral:
            out[keys.behavioral] = list(dict.fromkeys(behavioral))
        if contextual:
            out[keys.contextual] = list(dict.fromkeys(contextual))
    if keys.puid and user_id:
        out[keys.puid] = [user_id]
    return out
