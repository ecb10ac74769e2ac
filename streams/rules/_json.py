"""Turn rule state (frozen dataclasses of tuples, strings, numbers, datetimes) into JSON and back.

One codec for every state class, so each rule's state is stored the same way in its table and
a bad stored value fails with the path of the field that is wrong.
"""

from __future__ import annotations

import types
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from streams.rules._time import from_iso, to_iso
from streams.rules.errors import RuleInputError

T = TypeVar("T")


# Per dataclass, worked out once: resolving type hints on every decode cost more than the decode.
_NAMES: dict[type[Any], tuple[str, ...]] = {}
_TYPES: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _field_types(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    found = _TYPES.get(cls)
    if found is None:
        hints = get_type_hints(cls)
        found = _TYPES[cls] = tuple((f.name, hints[f.name]) for f in fields(cls))
    return found


def encode(value: object) -> Any:
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return {name: encode(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, tuple):
        return [encode(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r} as rule state")


def decode(cls: type[T], raw: object, path: str = "state") -> T:
    value: T = _decode(cls, raw, path)
    return value


def _decode(tp: Any, raw: object, path: str) -> Any:
    origin = get_origin(tp)
    if tp is datetime:
        return from_iso(path, raw)
    if origin in (Union, types.UnionType):
        return _decode_optional(tp, raw, path)
    if origin is Literal:
        if raw not in get_args(tp):
            raise RuleInputError(f"{path} must be one of {get_args(tp)}, got {raw!r}")
        return raw
    if origin is tuple:
        return _decode_tuple(tp, raw, path)
    if isinstance(tp, type) and is_dataclass(tp):
        return _decode_dataclass(tp, raw, path)
    if tp in (str, int, bool) and type(raw) is tp:
        return raw
    if tp is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    raise RuleInputError(f"{path} must be {getattr(tp, '__name__', tp)}, got {raw!r}")


def _decode_optional(tp: Any, raw: object, path: str) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"only Optional unions are supported in state, got {tp}")
    return None if raw is None else _decode(args[0], raw, path)


def _decode_tuple(tp: Any, raw: object, path: str) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        raise RuleInputError(f"{path} must be a list, got {raw!r}")
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], item, f"{path}[{i}]") for i, item in enumerate(raw))
    if len(raw) != len(args):
        raise RuleInputError(f"{path} must have {len(args)} items, got {raw!r}")
    return tuple(_decode(a, item, f"{path}[{i}]") for i, (a, item) in enumerate(zip(args, raw, strict=True)))


def _decode_dataclass(tp: type[Any], raw: object, path: str) -> Any:
    if not isinstance(raw, dict):
        raise RuleInputError(f"{path} must be an object, got {raw!r}")
    kwargs = {}
    for name, hint in _field_types(tp):
        if name not in raw:
            raise RuleInputError(f"{path}.{name} is missing")
        kwargs[name] = _decode(hint, raw[name], f"{path}.{name}")
    return tp(**kwargs)
