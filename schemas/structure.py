"""Structural checks and JSON conversion, compiled once per schema into plain closures.

Walking the schema for every message would be slow, so each schema is compiled into a tree of
small functions. Paths to the offending field are built only when something fails: each level
adds its own segment while the failure unwinds, so valid records pay nothing for them.

Two input forms are understood:

* record form: what fastavro reads and writes. Timestamps are timezone-aware ``datetime``,
  dates are ``date``, bytes are ``bytes``.
* JSON form: what event files and the publisher carry. Timestamps are ISO-8601 strings in UTC
  (``Z`` or ``+00:00``), dates are ``YYYY-MM-DD``, bytes are base64, everything else is plain JSON
  (a nullable union is just the value or ``null``, with no Avro type wrapper).
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, Literal, cast

from schemas.catalogue import schema_json
from schemas.errors import SchemaViolation

Converter = Callable[[Any], Any]
Mode = Literal["record", "json"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class Invalid(Exception):
    """Internal failure carrying the path segments collected while unwinding (innermost first)."""

    def __init__(self, value: Any, message: str) -> None:
        super().__init__(message)
        self.value = value
        self.message = message
        self.segments: list[str] = []

    def violation(self) -> SchemaViolation:
        return SchemaViolation(join_path(reversed(self.segments)), self.value, self.message)


def join_path(segments: Any) -> str:
    out = ""
    for seg in segments:
        if seg.startswith("[") or not out:
            out += seg
        else:
            out += "." + seg
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


@dataclass(frozen=True)
class Compiled:
    """The compiled converters of one schema."""

    check_record: Converter
    read_json: Converter
    write_json: Converter


@cache
def compiled(name: str) -> Compiled:
    schema = schema_json(name)
    namespace = schema.get("namespace", "")
    return Compiled(
        check_record=_Compiler("record", namespace).compile(schema),
        read_json=_Compiler("json", namespace).compile(schema),
        write_json=_WriterCompiler(namespace).compile_record(schema),
    )


def run(converter: Converter, value: Any) -> Any:
    """Apply a compiled converter, turning an internal failure into a SchemaViolation."""
    try:
        return converter(value)
    except Invalid as exc:
        raise exc.violation() from None


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name else f"{namespace}.{name}" if namespace else name


class _Compiler:
    """Compiles a schema into a checker of record form or a reader of JSON form."""

    def __init__(self, mode: Mode, namespace: str) -> None:
        self.mode = mode
        self.namespace = namespace
        self.named: dict[str, Converter] = {}

    def compile(self, schema: Any) -> Converter:
        if isinstance(schema, str):
            return self._named_or_primitive(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            return self._timestamp()
        if logical == "date" and kind == "int":
            return self._date()
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            return self._register(schema, self._enum(schema))
        if kind == "array":
            return self._array(self.compile(schema["items"]))
        if kind == "map":
            return self._map(self.compile(schema["values"]))
        return self._named_or_primitive(kind)

    def _register(self, schema: Mapping[str, Any], conv: Converter) -> Converter:
        namespace = schema.get("namespace", self.namespace)
        self.named[_full_name(schema["name"], namespace)] = conv
        return conv

    def _named_or_primitive(self, name: str) -> Converter:
        full = _full_name(name, self.namespace)
        if full in self.named:
            return self.named[full]
        primitives: dict[str, Converter] = {
            "null": _null,
            "boolean": _boolean,
            "int": _integer("int", INT_MIN, INT_MAX),
            "long": _integer("long", LONG_MIN, LONG_MAX),
            "float": _number,
            "double": _number,
            "string": _string,
            "bytes": _bytes_record if self.mode == "record" else _bytes_json,
        }
        if name not in primitives:
            raise ValueError(f"unsupported Avro type {name!r}")
        return primitives[name]

    def _timestamp(self) -> Converter:
        return _timestamp_record if self.mode == "record" else _timestamp_json

    def _date(self) -> Converter:
        return _date_record if self.mode == "record" else _date_json

    def _union(self, branches: list[Any]) -> Converter:
        nullable = "null" in branches
        others = [self.compile(b) for b in branches if b != "null"]
        if len(others) == 1:
            (inner,) = others

            def nullable_one(value: Any) -> Any:
                return None if value is None else inner(value)

            return nullable_one

        def union(value: Any) -> Any:
            if value is None and nullable:
                return None
            failures: list[Invalid] = []
            for conv in others:
                try:
                    return conv(value)
                except Invalid as exc:
                    failures.append(exc)
            reasons = "; ".join(f.message for f in failures)
            raise Invalid(value, f"matches none of the union's types: {reasons}")

        return union

    def _enum(self, schema: Mapping[str, Any]) -> Converter:
        symbols = frozenset(schema["symbols"])
        listed = ", ".join(schema["symbols"])
        enum_name = schema["name"]

        def enum(value: Any) -> Any:
            if value.__class__ is str and value in symbols:
                return value
            raise Invalid(value, f"expected one of {enum_name} ({listed})")

        return enum

    def _array(self, item: Converter) -> Converter:
        accepted: tuple[type, ...] = (list, tuple) if self.mode == "record" else (list,)

        def array(value: Any) -> Any:
            if not isinstance(value, accepted):
                raise Invalid(value, f"expected an array, found {_type_name(value)}")
            out: list[Any] = []
            item_value: Any
            for i, item_value in enumerate(cast("list[Any]", value)):
                try:
                    out.append(item(item_value))
                except Invalid as exc:
                    exc.segments.append(f"[{i}]")
                    raise
            return out

        return array

    def _map(self, values: Converter) -> Converter:
        def map_(value: Any) -> Any:
            if not isinstance(value, dict):
                raise Invalid(value, f"expected a map (an object), found {_type_name(value)}")
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise Invalid(k, "map keys must be strings")
                try:
                    out[k] = values(v)
                except Invalid as exc:
                    exc.segments.append(f"[{k!r}]")
                    raise
            return out

        return map_

    def _record(self, schema: Mapping[str, Any]) -> Converter:
        record_name = schema["name"]
        # Per field: name, converter, has a default, the default, and 1 for a string or 2 for a
        # nullable string (the commonest fields, checked in the loop without a call), else 0.
        fields: list[tuple[str, Converter, bool, Any, int]] = []
        # Registered before its fields compile so a later reference by name finds it.
        by_name: dict[str, Converter] = {}

        def record(value: Any) -> Any:
            if not isinstance(value, dict):
                found_type = _type_name(value)
                raise Invalid(value, f"expected an object for record {record_name}, found {found_type}")
            out: dict[str, Any] = {}
            found = 0
            for fname, conv, has_default, default, text in fields:
                if fname in value:
                    found += 1
                    raw = value[fname]
                elif has_default:
                    raw = copy.copy(default)
                else:
                    missing = Invalid(MISSING, "required field is missing")
                    missing.segments.append(fname)
                    raise missing
                if text and (raw.__class__ is str or (raw is None and text == 2)):
                    out[fname] = raw
                    continue
                try:
                    out[fname] = conv(raw)
                except Invalid as exc:
                    exc.segments.append(fname)
                    raise
            if found != len(value):
                extra = next(k for k in value if k not in by_name)
                unknown = Invalid(value[extra], f"unknown field; {record_name} has no field {extra!r}")
                unknown.segments.append(str(extra))
                raise unknown
            return out

        self._register(schema, record)
        for f in schema["fields"]:
            conv = self.compile(f["type"])
            text = 1 if conv is _string else 2 if f["type"] in (["null", "string"], ["string", "null"]) else 0
            fields.append((f["name"], conv, "default" in f, f.get("default"), text))
            by_name[f["name"]] = conv
        return record


class _WriterCompiler:
    """Compiles record form -> JSON form. Input is trusted to be valid record form."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.named: dict[str, Converter | None] = {}

    def compile(self, schema: Any) -> Converter | None:
        """None means the value passes through unchanged (strings, numbers, enums)."""
        if isinstance(schema, str):
            full = _full_name(schema, self.namespace)
            if full in self.named:
                return self.named[full]
            return _bytes_to_json if schema == "bytes" else None
        if isinstance(schema, list):
            inners = [self.compile(b) for b in schema if b != "null"]
            if all(i is None for i in inners):
                return None
            if len(inners) == 1 and inners[0] is not None:
                inner = inners[0]
                return lambda v: None if v is None else inner(v)
            raise ValueError("only nullable unions of one type are supported when writing JSON")
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            return format_timestamp
        if logical == "date" and kind == "int":
            return _date_to_json
        if kind == "record":
            return self.compile_record(schema)
        if kind == "enum":
            self.named[_full_name(schema["name"], schema.get("namespace", self.namespace))] = None
            return None
        if kind == "array":
            item = self.compile(schema["items"])
            if item is None:
                return list
            return lambda v: [item(x) for x in v]
        if kind == "map":
            values = self.compile(schema["values"])
            if values is None:
                return dict
            return lambda v: {k: values(x) for k, x in v.items()}
        return self.compile(kind)

    def compile_record(self, schema: Mapping[str, Any]) -> Converter:
        fields: list[tuple[str, Converter | None]] = []

        def record(value: Any) -> Any:
            return {f: value.get(f) if conv is None else conv(value.get(f)) for f, conv in fields}

        self.named[_full_name(schema["name"], schema.get("namespace", self.namespace))] = record
        for f in schema["fields"]:
            fields.append((f["name"], self.compile(f["type"])))
        return record


# --- primitives -------------------------------------------------------------------------------


def _null(value: Any) -> Any:
    if value is not None:
        raise Invalid(value, "expected null")
    return None


def _boolean(value: Any) -> Any:
    if value is True or value is False:
        return value
    raise Invalid(value, f"expected true or false, found {_type_name(value)}")


def _integer(avro: str, low: int, high: int) -> Converter:
    def integer(value: Any) -> Any:
        if value.__class__ is not int:
            if isinstance(value, int) and not isinstance(value, bool):
                value = int(value)
            else:
                raise Invalid(value, f"expected a whole number ({avro}), found {_type_name(value)}")
        if not low <= value <= high:
            raise Invalid(value, f"number out of range for Avro {avro}")
        return value

    return integer


def _number(value: Any) -> Any:
    if value.__class__ is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise Invalid(value, f"expected a number, found {_type_name(value)}")


def _string(value: Any) -> Any:
    if value.__class__ is str:
        return value
    raise Invalid(value, f"expected a string, found {_type_name(value)}")


def _bytes_record(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise Invalid(value, f"expected bytes, found {_type_name(value)}")


def _bytes_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise Invalid(value, f"expected base64 text for bytes, found {_type_name(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(value, "expected base64 text for bytes") from None


def _bytes_to_json(value: Any) -> Any:
    return base64.b64encode(value).decode("ascii")


def _timestamp_record(value: Any) -> Any:
    if not isinstance(value, datetime):
        raise Invalid(value, f"expected a timezone-aware datetime, found {_type_name(value)}")
    offset = value.utcoffset()
    if offset is None:
        raise Invalid(value, "timestamp has no timezone; give it in UTC")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value


def _timestamp_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise Invalid(value, f"expected an ISO-8601 UTC timestamp string, found {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(value, "not an ISO-8601 timestamp; expected e.g. 2024-03-01T18:30:00Z") from None
    offset = parsed.utcoffset()
    if offset is None:
        raise Invalid(value, "timestamp has no timezone; give it in UTC with 'Z' or '+00:00'")
    if offset:
        raise Invalid(value, "timestamp is not in UTC; give it with 'Z' or '+00:00'")
    if parsed.microsecond % 1000:
        # Avro timestamp-millis keeps milliseconds; truncating here keeps JSON and binary equal.
        parsed = parsed.replace(microsecond=parsed.microsecond - parsed.microsecond % 1000)
    return parsed.replace(tzinfo=UTC)


def format_timestamp(value: datetime) -> str:
    """A UTC datetime as ISO-8601 with milliseconds and 'Z', the JSON form of timestamp-millis."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def _date_record(value: Any) -> Any:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise Invalid(value, f"expected a date, found {_type_name(value)}")
    return value


def _date_json(value: Any) -> Any:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise Invalid(value, "expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(value, "not a calendar date") from None


def _date_to_json(value: Any) -> Any:
    return value.isoformat()
