"""Plain oracles the URL fuzz tests check adapters against: a URL's parts, its query's
segments, and what writing our key-values into a query may change."""

from __future__ import annotations

from urllib.parse import unquote_plus


def split(url: str) -> tuple[str, str | None, str]:
    rest, hash_, frag = url.partition("#")
    base, q, query = rest.partition("?")
    return base, (query if q else None), hash_ + frag


def segments(query: str | None) -> list[str]:
    return query.split("&") if query else []


def named(segment: str, name: str) -> bool:
    return segment == name or segment.startswith(name + "=")


def utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def dedup(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def assert_only_ours_changed(
    url: str, out: str, ours: list[tuple[str, list[str]]], before: list[str], after: list[str]
) -> None:
    """Query segments `before` → `after` (of `url` → `out`): every segment not named by one of
    `ours` (raw name, values) is unchanged; each of ours gains exactly the values it lacked, in
    order, after those it had; nothing new at all means the URL came back as it was."""

    def others(segs: list[str]) -> list[str]:
        return [s for s in segs if not any(named(s, n) for n, _ in ours)]

    assert others(after) == others(before)
    changed = False
    for name, values in ours:
        old = next((s for s in before if named(s, name)), None)
        new = next((s for s in after if named(s, name)), None)
        old_vals = unquote_plus(old.partition("=")[2]).split(",") if old and "=" in old else []
        old_vals = [] if old_vals == [""] else old_vals
        fresh = [v for v in values if v not in set(old_vals)]
        if fresh:
            changed = True
            assert new is not None
            assert unquote_plus(new.partition("=")[2]).split(",") == old_vals + fresh
        else:
            assert new == old
    if not changed:
        assert out == url
