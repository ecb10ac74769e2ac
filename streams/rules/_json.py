"""Turn rule state (frozen dataclasses of tuples, strings, numbers, datetimes) into JSON and back.

One codec for every state class, so each rule's state is stored the same way in its table and
a bad stored value fails with the path of the field that is wrong.
"""

from __future__ import annotations

import types
from collections.abc import Callable
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
    kind = type(value)
    if kind is str or kind is float or kind is int or kind is bool or value is None:
        return value
    if kind is tuple:
        return [encode(item) for item in value]  # type: ignore[attr-defined]
    if kind is datetime:
        return to_iso(value)  # type: ignore[arg-type]
    if is_dataclass(kind):
        return {name: encode(getattr(value, name)) for name in _field_names(kind)}
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, tuple):
        return [encode(item) for item in value]
    if isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r} as rule state")


def decode(cls: type[T], raw: object, path: str = "state") -> T:
    value: T = _decoder(cls)(raw, path)
    return value


Decoder = Callable[[object, str], Any]
# One decoder per type, built on first use: working out what a type hint means on every value
# cost more than the decoding itself.
_DECODERS: dict[Any, Decoder] = {}


def _decoder(tp: Any) -> Decoder:
    found = _DECODERS.get(tp)
    if found is None:
        found = _DECODERS[tp] = _build(tp)
    return found


def _build(tp: Any) -> Decoder:
    origin = get_origin(tp)
    if tp is datetime:
        return _datetime
    if origin in (Union, types.UnionType):
        return _optional(tp)
    if origin is Literal:
        return _literal(get_args(tp))
    if origin is tuple:
        return _tuple(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        return _dataclass(tp)
    if tp in (str, int, bool):
        return _exactly(tp)
    if tp is float:
        return _float
    raise TypeError(f"rule state cannot hold {tp}")


def _datetime(raw: object, path: str) -> datetime:
    return from_iso(path, raw)


def _fail(path: str, what: object, raw: object) -> RuleInputError:
    return RuleInputError(f"{path} must be {what}, got {raw!r}")


def _exactly(tp: type[Any]) -> Decoder:
    def decode_exactly(raw: object, path: str) -> Any:
        if type(raw) is tp:
            return raw
        raise _fail(path, tp.__name__, raw)

    return decode_exactly


def _float(raw: object, path: str) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    raise _fail(path, "float", raw)


def _literal(allowed: tuple[Any, ...]) -> Decoder:
    def decode_literal(raw: object, path: str) -> Any:
        if raw in allowed:
            return raw
        raise _fail(path, f"one of {allowed}", raw)

    return decode_literal


def _optional(tp: Any) -> Decoder:
    args = [a for a in get_args(tp) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"only Optional unions are supported in state, got {tp}")
    inner = _decoder(args[0])

    def decode_optional(raw: object, path: str) -> Any:
        return None if raw is None else inner(raw, path)

    return decode_optional


def _tuple(tp: Any) -> Decoder:
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        item = _decoder(args[0])

        def decode_items(raw: object, path: str) -> tuple[Any, ...]:
            if not isinstance(raw, list):
                raise _fail(path, "a list", raw)
            return tuple([item(x, f"{path}[{i}]") for i, x in enumerate(raw)])

        return decode_items
    items = [_decoder(a) for a in args]

    def decode_fixed(raw: object, path: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _fail(path, "a list", raw)
        if len(raw) != len(items):
            raise RuleInputError(f"{path} must have {len(items)} items, got {raw!r}")
        return tuple([d(x, f"{path}[{i}]") for i, (d, x) in enumerate(zip(items, raw, strict=True))])

    return decode_fixed


def _dataclass(tp: type[Any]) -> Decoder:
    # Decoders of the fields are looked up on first decode: a dataclass may name itself.
    fields_of: list[tuple[str, Decoder]] = []

    def decode_dataclass(raw: object, path: str) -> Any:
        if not isinstance(raw, dict):
            raise _fail(path, "an object", raw)
        if not fields_of:
            fields_of.extend((name, _decoder(hint)) for name, hint in _field_types(tp))
        kwargs = {}
        for name, field_decoder in fields_of:
            if name not in raw:
                raise RuleInputError(f"{path}.{name} is missing")
            kwargs[name] = field_decoder(raw[name], f"{path}.{name}")
        return tp(**kwargs)

    return decode_dataclass
