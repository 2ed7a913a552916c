"""The rules every configuration value obeys, written once for every way a config is made.

A config file, `COHORTKV_*` variables, command-line flags and `Config(...)` built in Python all
end in the same check: each section's `__post_init__` converts every field's value to the
field's annotated type (bounds and closed sets included), so that `Config(budget_ms=-5)` fails
where it is written, with the same message a file with `budget_ms = -5` gets. A field added to
a section is checked without a line here.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import msgspec

from plugin.config_env import shown_value
from plugin.errors import ENUM_PROBLEM, msgspec_problem
from plugin.errors import ConfigError as ConfigError


def check_fields(section: msgspec.Struct, root: Callable[[], type[msgspec.Struct]]) -> None:
    """Each field of `section` converted to its annotated type, and kept so (a table given
    as a dict becomes its section); a ConfigError naming the field (its dotted place below
    `root()`, asked for only then: the root's own defaults are made before it exists) and what
    was expected, with the value when it is safe to show (never a key, never a URL)."""
    for name, tp in _field_types(type(section)).items():
        value = getattr(section, name)
        struct = _given_as_dict(value, tp)
        if struct is not None:  # built as the section itself is: each field named
            msgspec.structs.force_setattr(section, name, struct(**value))
            continue
        try:
            converted = msgspec.convert(value, tp, strict=True)
        except msgspec.ValidationError as e:
            base = _join(section_path(type(section), root()), name)
            base, value, e = _failing_entry(base, value, tp, e)
            path, text = humanize(e, root(), base)
            got = "" if ", got " in text else shown_value(value, (name,))
            raise ConfigError(f"config: {path}: {text}{got}", field=path) from None
        if converted is not value:
            msgspec.structs.force_setattr(section, name, converted)


def check_arguments(
    tp: type[msgspec.Struct],
    root: Callable[[], type[msgspec.Struct]],
    args: tuple[Any, ...],
    names: Any,
) -> None:
    """A ConfigError for keyword arguments that name no field of `tp` (and for more
    positional ones than it has), as an unknown key in a file gets: not a TypeError."""
    fields = tp.__struct_fields__
    for name in names:
        if name not in fields:
            path = _join(section_path(tp, root()), str(name))
            known = ", ".join(fields)
            raise ConfigError(f"config: {path}: unknown field; expected one of {known}", field=path)
    if len(args) > len(fields):
        where = section_path(tp, root()) or "config"
        raise ConfigError(
            f"config: {where}: expected at most {len(fields)} positional values, got {len(args)}",
            field=where,
        )


def _given_as_dict(value: Any, tp: Any) -> type[msgspec.Struct] | None:
    """The section type of a field given a dict of settings for it, or None."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return None
    members = _members(tp)
    structs = [m for m in members if _is_struct(m)]
    return structs[0] if len(structs) == 1 and len(members) == 1 else None


def _failing_entry(
    base: str, value: Any, tp: Any, e: msgspec.ValidationError
) -> tuple[str, Any, msgspec.ValidationError]:
    """For a table (dict) field, the entry that failed, named by its key (`serve.upstreams.gam`)
    rather than msgspec's `[...]`; else what was given."""
    dict_tp = next((m for m in _members(tp) if get_origin(m) is dict), None)
    if dict_tp is None or not isinstance(value, dict):
        return base, value, e
    key_tp, value_tp = get_args(dict_tp)
    for key, entry in value.items():
        try:
            msgspec.convert(key, key_tp, strict=True)
            msgspec.convert(entry, value_tp, strict=True)
        except msgspec.ValidationError as inner:
            return _join(base, str(key)), entry, inner
    return base, value, e


def humanize(
    e: msgspec.ValidationError, root: type[msgspec.Struct], base: str = ""
) -> tuple[str, str]:
    """(field, problem) out of msgspec's `Expected int, got str - at $.cache.ttl`, the field
    below `base`; for a closed set of values the problem names the valid ones."""
    where, text = msgspec_problem(e)
    path = _join(base, where.lstrip("."))
    choices = _literal_choices(root, path)
    if choices and text.startswith(ENUM_PROBLEM):
        shown = ", ".join(repr(c) for c in choices)
        text = f"expected one of {shown}, got {text.removeprefix(ENUM_PROBLEM)}"
    return path, text


def base_url_problem(value: str, example: str) -> str | None:
    """Why `value` is not an API base URL (http(s), a host, no credentials, query or fragment,
    not an endpoint's own path: the clients add `/ccs/v1/...`, `/ctx/v1/...`), or None.
    The value itself is never quoted: a URL can carry a key."""
    expected = f"expected the API's base URL, like {example}"
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as e:  # a bad port: "Port out of range 0-65535"
        return f"{expected}; {str(e)[:1].lower()}{str(e)[1:]}"
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return f"{expected} (http:// or https://), got {shown}"
    if not parts.hostname:
        return f"{expected}, got one without a host"
    if parts.username is not None or parts.password is not None:
        return f"{expected}, without credentials (the API key goes in api_key / --api-key)"
    if parts.query or parts.fragment:
        return f"{expected}, without a query or fragment (the API key goes in api_key / --api-key)"
    if port == 0:
        return f"{expected}, got port 0"
    path = parts.path.rstrip("/")
    for api in API_PATHS:
        if api in path:
            return f"{expected}, without the endpoint path ({api}/... is added by cohortkv)"
    return None


API_PATHS = ("/ccs/v1", "/ctx/v1")
"""Endpoint paths the clients append to a base URL themselves."""


def section_path(tp: type[msgspec.Struct], root: type[msgspec.Struct]) -> str:
    """Where sections of type `tp` sit below `root` (`cache`, `serve.upstreams.<name>`)."""
    return _section_paths(root).get(tp, "")


@functools.cache
def _section_paths(root: type[msgspec.Struct]) -> dict[type, str]:
    found: dict[type, str] = {}

    def walk(tp: Any, path: str) -> None:
        for name, field_tp in _field_types(tp).items():
            for member in _members(field_tp):
                if _is_struct(member):
                    found.setdefault(member, _join(path, name))
                    walk(member, _join(path, name))
                elif get_origin(member) is dict:
                    for value_tp in _members(get_args(member)[1]):
                        if _is_struct(value_tp):
                            found.setdefault(value_tp, _join(path, f"{name}.<name>"))

    walk(root, "")
    return found


@functools.cache
def _field_types(tp: type[msgspec.Struct]) -> dict[str, Any]:
    hints = get_type_hints(tp, include_extras=True)
    return {f.name: hints[f.name] for f in msgspec.structs.fields(tp)}


def _members(tp: Any) -> tuple[Any, ...]:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(_members(a)[0] for a in get_args(tp) if a is not type(None))
    return (tp,)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base and name else (base or name)


def _literal_choices(root: type[msgspec.Struct], path: str) -> tuple[Any, ...]:
    tp: Any = root
    for part in path.split("."):
        structs = [m for m in _members(tp) if _is_struct(m)]
        if not structs:
            return ()
        try:
            tp = get_type_hints(structs[0])[part]
        except (KeyError, TypeError):
            return ()
    literal = [m for m in _members(tp) if get_origin(m) is Literal]
    return get_args(literal[0]) if literal else ()
