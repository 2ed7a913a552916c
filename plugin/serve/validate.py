"""Decoding a person's JSON body into a struct, naming EVERY field that is wrong.

msgspec stops at the first error; a person fixing a request wants them all at once. The fast
path is one typed decode; only a body that fails it is walked field by field, against the
same struct types, to collect one `FieldError` per bad field.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from typing import Any, TypeVar, Union

import msgspec

from plugin.errors import BodyError as BodyError
from plugin.errors import msgspec_problem
from plugin.json_depth import MAX_DEPTH as MAX_DEPTH
from plugin.json_depth import too_deep as too_deep
from plugin.serve.bodies import FieldError

S = TypeVar("S", bound=msgspec.Struct)

ROOT = "body"

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def decode(raw: bytes, tp: type[S]) -> S:
    """`raw` as a `tp`, or `BodyError` listing each bad field."""
    if too_deep(raw):
        raise BodyError([TOO_DEEP])
    try:
        return msgspec.json.decode(raw, type=tp)
    except msgspec.ValidationError:
        pass  # (a subclass of DecodeError) the JSON may still be malformed further on
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise BodyError([_malformed(e)]) from None
    except RecursionError:  # too_deep should have caught it; never a 500
        raise BodyError([TOO_DEEP]) from None
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise BodyError([_malformed(e)]) from None
    except RecursionError:
        raise BodyError([TOO_DEEP]) from None
    errors: list[FieldError] = []
    _walk(data, tp, ROOT, None, errors)
    if not errors:  # the walk should have found it; fall back to msgspec's own message
        try:
            return msgspec.convert(data, tp)
        except msgspec.ValidationError as e:
            errors.append(_from_msgspec(e, ROOT, None))
    raise BodyError(errors)


TOO_DEEP = FieldError(ROOT, f"JSON nested at most {MAX_DEPTH} levels deep")


def _malformed(e: Exception) -> FieldError:
    why = "invalid UTF-8" if isinstance(e, UnicodeDecodeError) else str(e)
    return FieldError(ROOT, f"a JSON object ({why})")


def _join(path: str, name: str) -> str:
    if _PLAIN.fullmatch(name) is None:  # an unknown key of any shape: quote it
        return f"{path}[{msgspec.json.encode(name).decode()}]"
    return name if path == ROOT else f"{path}.{name}"


def _walk(value: Any, tp: Any, path: str, description: str | None, out: list[FieldError]) -> None:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(tp)
        meta = [m for m in extras if isinstance(m, msgspec.Meta)]
        desc = next((m.description for m in meta if m.description), None)
        if _is_container_of_structs(inner):
            if _check_length(value, meta, path, desc, out):
                _walk(value, inner, path, desc, out)
            return
        _leaf(value, tp, path, desc or description, out)
        return
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return
        if len(args) == 1:
            _walk(value, args[0], path, description, out)
        else:
            _leaf(value, tp, path, description, out)
        return
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        _walk_struct(value, tp, path, out)
        return
    if origin is list and _is_struct(typing.get_args(tp)[0]):
        if not isinstance(value, list):
            out.append(FieldError(path, description or "an array"))
            return
        item = typing.get_args(tp)[0]
        for i, v in enumerate(value):
            _walk(v, item, f"{path}[{i}]", None, out)
        return
    _leaf(value, tp, path, description, out)


def _walk_struct(value: Any, tp: type[msgspec.Struct], path: str, out: list[FieldError]) -> None:
    if not isinstance(value, dict):
        out.append(FieldError(path, "an object"))
        return
    fields = msgspec.structs.fields(tp)
    hints = _hints(tp)
    known = {f.encode_name for f in fields}
    for key in value:
        if key not in known:
            where = _join(path, str(key))
            out.append(FieldError(where, f"no such field (one of: {_list(known)})"))
    for f in fields:
        where = _join(path, f.encode_name)
        if f.encode_name not in value:
            if f.required:
                out.append(FieldError(where, "a value (required)"))
            continue
        _walk(value[f.encode_name], hints[f.name], where, None, out)


def _leaf(value: Any, tp: Any, path: str, description: str | None, out: list[FieldError]) -> None:
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as e:
        choices = _choices(tp)
        if description is None and choices:
            description = f"one of: {', '.join(str(c) for c in choices)}"
        out.append(_from_msgspec(e, path, description))


def _choices(tp: Any) -> tuple[Any, ...]:
    """The values of a closed set (a Literal, maybe optional), else ()."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    literal = [a for a in args if typing.get_origin(a) is typing.Literal]
    return typing.get_args(literal[0]) if len(literal) == 1 else ()


def _check_length(
    value: Any, meta: list[msgspec.Meta], path: str, description: str | None, out: list[FieldError]
) -> bool:
    """A list of structs' own constraints (type, length); True when its items are worth a walk."""
    if not isinstance(value, list):
        out.append(FieldError(path, description or "an array"))
        return False
    for m in meta:
        too_few = m.min_length is not None and len(value) < m.min_length
        too_many = m.max_length is not None and len(value) > m.max_length
        if too_few or too_many:
            out.append(FieldError(path, description or f"{m.min_length} to {m.max_length} items"))
    return True


def _from_msgspec(e: msgspec.ValidationError, path: str, description: str | None) -> FieldError:
    """`Expected `int` >= 0, got `str` - at `$[1]`` → (path[1], "an integer >= 0")."""
    suffix, message = msgspec_problem(e)
    if suffix:
        path = path + suffix if path != ROOT or suffix.startswith("[") else suffix.lstrip(".")
    if description is not None:
        return FieldError(path, description)
    text = message.removeprefix("expected ").split(", got ")[0]
    head, _, rest = text.partition(" ")
    name = _NAMES.get(head.strip("`"), head.strip("`"))
    return FieldError(path, f"{name} {rest}".strip().replace("`", ""))


@functools.cache
def _hints(tp: type[msgspec.Struct]) -> dict[str, Any]:
    return typing.get_type_hints(tp, include_extras=True)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _is_container_of_structs(tp: Any) -> bool:
    return typing.get_origin(tp) is list and _is_struct(typing.get_args(tp)[0])


def _list(names: set[str]) -> str:
    return ", ".join(sorted(names))
