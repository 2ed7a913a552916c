"""One API answer, reduced to what an ad request needs, and what is activated for a platform."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec


class Answer(msgspec.Struct, frozen=True, gc=False):
    """One API answer, reduced to what an ad request needs."""

    cohorts: tuple[str, ...]
    activations: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    user_id: str | None = None

    @classmethod
    def from_wire(
        cls,
        cohorts: Iterable[str],
        activations: Mapping[str, Iterable[str]] | None,
        user_id: str | None = None,
    ) -> Answer:
        acts = (
            None
            if activations is None
            else tuple((p, tuple(codes)) for p, codes in activations.items())
        )
        return cls(tuple(cohorts), acts, user_id)

    def activated(self, platforms: Iterable[str]) -> list[str]:
        """Cohorts activated for any of `platforms`, in answer order, each once.

        Like the Direct API guide says, only per-platform activations go into an ad request,
        never the whole `cohorts` list.
        """
        if not self.activations:
            return []
        wanted = set(platforms)
        out: dict[str, None] = {}
        for platform, codes in self.activations:
            if platform in wanted:
                out.update(dict.fromkeys(codes))
        return list(out)
