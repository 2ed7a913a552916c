"""A row of the results table, and the word for a target met or missed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    scenario: str
    measure: str
    result: str
    target: str = "—"
    status: str = "—"


def verdict(ok: bool) -> str:
    return "met" if ok else "GAP"
