"""`COHORTKV_*` environment variables as configuration overrides, each read as its field's type.

`COHORTKV_BUDGET_MS=120` sets `budget_ms`; a double underscore goes one table down
(`COHORTKV_CACHE__CONTEXTUAL_TTL_S=60`, `COHORTKV_ADAPTERS__GAM__MAX_URL_LENGTH=4000`). The text
of a variable becomes the type of the field it sets:

- text fields (and fields with a closed set of text values) take it as it is, so
  `COHORTKV_API_KEY=123456` is the key `"123456"`;
- integer, number and yes/no fields parse it (`120`, `0.5`, `true`/`false`, `1`/`0`,
  `yes`/`no`, `on`/`off`); an optional field that is not text is unset by `null` or nothing;
- lists and tables are JSON (`COHORTKV_CONSENT__PURPOSES=[1, 3]`); a JSON table is laid over
  the file's table of the same name. Names are lowercased (`COHORTKV_SERVE__UPSTREAMS__GAM`
  is upstream `gam`): a name with capitals goes in a JSON table.

A variable whose first part names no setting (`COHORTKV_SERVICE_HOST`, `COHORTKV_PORT_80_TCP`:
Kubernetes sets such variables for every Service whose name starts with `cohortkv`) is not an
error: `read_env` lists it in `unknown` and the loader warns once, naming them all. Below a
setting that exists, an unknown name is a mistake and an error, as a misspelt key in the file is.
Every error names the variable; values of secret fields are never shown.
"""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

from plugin.errors import ENUM_PROBLEM, msgspec_problem
from plugin.errors import EnvError as EnvError

ENV_PREFIX = "COHORTKV_"
SEPARATOR = "__"
SECRET_FIELDS = frozenset({"api_key"})
"""Fields whose values never appear in an error message (nor do any `*url` fields: a URL can
carry credentials)."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NULL = frozenset({"", "null"})

log = logging.getLogger("cohortkv.config")

Path = tuple[str, ...]
TableTypes = Mapping[Path, Callable[[str], Any]]
"""For a table of named entries (`adapters`): the type an entry is read as, given its name; a
ValueError (`expected a platform, one of ...`) when there is no such entry."""


@dataclass(frozen=True)
class EnvOverrides:
    data: dict[str, Any] = field(default_factory=dict)
    """Nested tables of typed values, to lay over the config file's (`overlay`)."""
    origins: dict[Path, str] = field(default_factory=dict)
    """Field path → the variable that set it."""
    unknown: tuple[str, ...] = ()
    """`COHORTKV_*` variables that name no setting, sorted."""


def read_env(
    env: Mapping[str, str],
    root: type[msgspec.Struct],
    *,
    tables: TableTypes | None = None,
    moved: Mapping[Path, str] | None = None,
) -> EnvOverrides:
    """The `COHORTKV_*` variables of `env` as typed overrides of struct `root`'s fields.

    Raises EnvError for a variable under an existing setting that cannot be used (an unknown
    field, text that is not of the field's type, a value outside its bounds); `moved` maps a
    field that moved to where it went, so that the error says so.
    """
    data: dict[str, Any] = {}
    origins: dict[Path, str] = {}
    unknown: list[str] = []
    # Sorted: a whole table (`COHORTKV_SERVE`) comes before the fields in it (`..._SERVE__PORT`).
    for variable in sorted(n for n in env if n.startswith(ENV_PREFIX)):
        parts = tuple(variable[len(ENV_PREFIX) :].lower().split(SEPARATOR))
        target = _resolve(variable, parts, root, tables or {}, moved or {})
        if target is None:
            unknown.append(variable)
            continue
        value = coerce(env[variable], target, variable=variable, path=parts)
        _set(data, parts, value)
        origins[parts] = variable
    return EnvOverrides(data, origins, tuple(unknown))


def overlay(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it; tables on both sides are merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, Mapping):
            merged[key] = overlay(below, value)
        else:
            merged[key] = value
    return merged


def warn_unknown(names: Iterable[str], logger: logging.Logger = log) -> None:
    """One warning naming every variable that set nothing (their values are not shown)."""
    shown = sorted(names)
    if shown:
        logger.warning(
            "environment: ignoring %d COHORTKV_* variable%s that name%s no setting: %s"
            " (Kubernetes sets such variables for Services named cohortkv*; "
            "enableServiceLinks: false in the pod spec turns them off)",
            len(shown),
            "" if len(shown) == 1 else "s",
            "s" if len(shown) == 1 else "",
            ", ".join(shown),
        )


def name_variable(
    message: str,
    origins: Mapping[Path, str],
    file_data: Mapping[str, Any] | None = None,
    prefix: str = "config: ",
) -> str:
    """A config error (`config: cache.ttl: ...`) about a value a variable set, as an error about
    that variable (`environment COHORTKV_CACHE__TTL: cache.ttl: ...`); else unchanged.

    The variable set that field (and the file, `file_data`, has no table there to merge it
    with), or a table holding it (`COHORTKV_CACHE='{...}'`) and the file has nothing at that
    place: then the value can only have come from the variable.
    """
    if not message.startswith(prefix):
        return message
    where, sep, rest = message[len(prefix) :].partition(": ")
    if not sep:
        return message
    path = tuple(where.split("."))
    in_file = _at_path(file_data or {}, path)
    # A table the file has too is a merge of both: the mistake may be either's.
    found = {
        var
        for set_path, var in origins.items()
        if (set_path == path and not isinstance(in_file, Mapping))
        or (in_file is _ABSENT and path[: len(set_path)] == set_path)
    }
    if len(found) != 1:
        return message
    return f"environment {found.pop()}: {where}: {rest}"


_ABSENT: Any = object()


def _at_path(data: Mapping[str, Any], path: Path) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


# -- types ------------------------------------------------------------------------------------


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> tuple[Any, ...]:
    """The types of a union (None left out), or `(tp,)`."""
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(_strip(a) for a in get_args(tp) if a is not type(None))
    return (tp,)


def _optional(tp: Any) -> bool:
    tp = _strip(tp)
    return get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _is_table(tp: Any) -> bool:
    return _is_struct(tp) or get_origin(tp) in (dict, Mapping) or tp is dict


def _is_text(tp: Any) -> bool:
    if tp is str:
        return True
    return get_origin(tp) is Literal and all(isinstance(a, str) for a in get_args(tp))


def _fields(tp: type[msgspec.Struct]) -> dict[str, Any]:
    """Field name as written in the file → its type."""
    hints = get_type_hints(tp, include_extras=True)
    return {f.encode_name: hints[f.name] for f in msgspec.structs.fields(tp)}


def _resolve(
    variable: str,
    parts: Path,
    root: type[msgspec.Struct],
    tables: TableTypes,
    moved: Mapping[Path, str],
) -> Any | None:
    """The type `parts` lead to from `root`; None when the first part names no field."""
    tp: Any = root
    for i, part in enumerate(parts):
        here, below = parts[:i], parts[: i + 1]
        if not part and i > 0:
            raise EnvError(variable, here, "expected a field name between `__` separators")
        containers = [m for m in _members(tp) if _is_table(m) or m is Any]
        if not containers:
            raise EnvError(
                variable, here, f"is a single value, not a table: it has no field `{part}`"
            )
        node = containers[0]
        if _is_struct(node):
            fields = _fields(node)
            if part not in fields:
                if i == 0:
                    return None
                if below in moved:
                    raise EnvError(variable, below, f"moved to {moved[below]}")
                raise EnvError(
                    variable,
                    here,
                    f"unknown field `{part}`; expected one of {', '.join(sorted(fields))}",
                )
            tp = fields[part]
        elif node is Any:
            tp = Any
        else:  # a table keyed by name
            entry = tables.get(here)
            if entry is not None:
                try:
                    tp = entry(part)
                except ValueError as e:
                    raise EnvError(variable, below, str(e)) from None
            else:
                args = get_args(node)
                tp = args[1] if len(args) == 2 else Any
    return tp


# -- values -----------------------------------------------------------------------------------


def coerce(raw: str, tp: Any, *, variable: str = "", path: Path = ()) -> Any:
    """`raw` (a variable's text) as a value of type `tp`, checked against `tp`'s bounds."""
    value = _parse(raw, tp, variable, path)
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as e:
        inner, text = msgspec_problem(e)
        expected = _explain(text, tp if not inner else None) + shown_value(raw, path)
        raise EnvError(variable, path, expected, inner) from None
    return value


def _parse(raw: str, tp: Any, variable: str, path: Path) -> Any:
    members = _members(tp)
    text = raw.strip()
    if _optional(tp) and not any(m is str for m in members) and text.lower() in _NULL:
        return None
    structured = (text.startswith("{") and any(_is_table(m) for m in members)) or (
        text.startswith("[") and any(_is_list(m) for m in members)
    )
    if any(_is_text(m) for m in members) and not structured:
        return raw
    scalar = [m for m in members if m in (bool, int, float)]
    if scalar and len(scalar) == len(members):
        for m in scalar:
            parsed = _scalar(text, m)
            if parsed is not None:
                return parsed
        names = " or ".join(f"`{m.__name__}`" for m in scalar)
        hint = " (true/false, yes/no, on/off, 1/0)" if bool in scalar else ""
        raise EnvError(variable, path, f"expected {names}{hint}{shown_value(raw, path)}")
    try:
        return json.loads(raw)
    except ValueError:
        if all(m is Any for m in members):
            return raw
        kind = "a JSON table" if any(_is_table(m) for m in members) else "a JSON list"
        example = ' like {"name": "value"}' if kind == "a JSON table" else " like [1, 2]"
        raise EnvError(
            variable, path, f"expected {kind}{example}{shown_value(raw, path)}"
        ) from None


def _is_list(tp: Any) -> bool:
    return get_origin(tp) in (list, tuple, set, frozenset) or tp in (list, tuple)


def _scalar(text: str, tp: type) -> bool | int | float | None:
    if tp is bool:
        low = text.lower()
        return True if low in _TRUE else False if low in _FALSE else None
    try:
        return int(text) if tp is int else float(text)
    except ValueError:
        return None


def _explain(text: str, tp: Any) -> str:
    """The problem as `msgspec_problem` words it; for a closed set of values (`tp` a
    Literal), the values."""
    choices = [get_args(m) for m in _members(tp) if get_origin(m) is Literal]
    if choices and text.startswith(ENUM_PROBLEM):
        return f"expected one of {', '.join(repr(c) for c in choices[0])}"
    return text


def shown_value(value: Any, path: Path) -> str:
    """`, got '-5'` (as an error message ends); nothing for a secret field, a URL (it can
    carry credentials) or a table (it can hold either)."""
    name = path[-1] if path else ""
    if name in SECRET_FIELDS or name.endswith("url") or isinstance(value, dict):
        return ""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return ""
    text = repr(value)
    return f", got {text if len(text) <= 60 else text[:57] + '...'}"


def _set(data: dict[str, Any], path: Path, value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = path[-1]
    below = node.get(last)
    node[last] = (
        overlay(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    )
