"""Avro binary writing, compiled once per schema into plain closures.

fastavro's writer interprets the schema for every record (dictionary lookups by type name,
and a trial validation of each union branch), which made encoding the publisher's largest
cost. A writer compiled from the schema does only the writing. It produces the bytes fastavro
produces for the same record (tests compare the two), including fastavro's leniencies: a field
missing from the record is written as its default, else as null.

Records are trusted to be valid (``schemas.validate``); a value the schema cannot hold raises
some exception, and ``schemas.codec.encode`` then finds and names the field.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from schemas.catalogue import schema_json

Writer = Callable[[bytearray, Any], None]

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


@cache
def writer(name: str) -> Writer:
    """The compiled writer of catalogue schema ``name``: ``write(out, record)`` appends its body."""
    schema = schema_json(name)
    return _Compiler(schema.get("namespace", "")).compile(schema)


def write_long(out: bytearray, n: int) -> None:
    """Zig-zag varint, as Avro writes int and long."""
    if not LONG_MIN <= n <= LONG_MAX:
        raise OverflowError(f"{n} does not fit in an Avro long")
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_int(out: bytearray, n: Any) -> None:
    if 0 <= n < 64:  # one byte: most lengths, counts and enum indexes
        out.append(n << 1)
    else:
        write_long(out, n.__index__())


def _write_string(out: bytearray, value: Any) -> None:
    data = value.encode()
    size = len(data)
    if size < 64:
        out.append(size << 1)
    else:
        write_long(out, size)
    out += data


def _write_bytes(out: bytearray, value: Any) -> None:
    write_long(out, len(value))
    out += value


def _write_null(out: bytearray, value: Any) -> None:
    if value is not None:
        raise ValueError(f"expected null, got {type(value).__name__}")


def _write_boolean(out: bytearray, value: Any) -> None:
    out.append(1 if value else 0)


def _write_double(out: bytearray, value: Any) -> None:
    out += _pack_double(value)


def _write_float(out: bytearray, value: Any) -> None:
    out += _pack_float(value)


def _write_timestamp_millis(out: bytearray, value: Any) -> None:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            delta = value - _EPOCH
            # fastavro's arithmetic, so both round sub-millisecond times the same way.
            value = (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
        else:  # fastavro reads a naive datetime as local time (validation refuses them)
            value = int(time.mktime(value.timetuple())) * 1000 + int(value.microsecond / 1000)
    write_long(out, value)


def _write_date(out: bytearray, value: Any) -> None:
    if isinstance(value, date):
        value = value.toordinal() - _EPOCH_ORDINAL
    write_long(out, value)


_PRIMITIVES: Mapping[str, Writer] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_int,
    "long": _write_int,
    "float": _write_float,
    "double": _write_double,
    "bytes": _write_bytes,
    "string": _write_string,
}


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name else f"{namespace}.{name}" if namespace else name


class _Compiler:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.named: dict[str, Writer] = {}

    def compile(self, schema: Any) -> Writer:
        if isinstance(schema, str):
            full = _full_name(schema, self.namespace)
            if full in self.named:
                return self.named[full]
            if schema not in _PRIMITIVES:
                raise ValueError(f"unsupported Avro type {schema!r}")
            return _PRIMITIVES[schema]
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-millis" and kind == "long":
            return _write_timestamp_millis
        if logical == "date" and kind == "int":
            return _write_date
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            return self._register(schema, self._enum(schema["symbols"]))
        if kind == "fixed":
            return self._register(schema, _write_fixed)
        if kind == "array":
            return self._array(self.compile(schema["items"]))
        if kind == "map":
            return self._map(self.compile(schema["values"]))
        return self.compile(kind)

    def _register(self, schema: Mapping[str, Any], write: Writer) -> Writer:
        self.named[_full_name(schema["name"], schema.get("namespace", self.namespace))] = write
        return write

    def _union(self, branches: list[Any]) -> Writer:
        others = [i for i, b in enumerate(branches) if b != "null"]
        if "null" not in branches or len(others) != 1:
            raise ValueError("only unions of null and one other type are supported")
        null_index, index = branches.index("null"), others[0]
        inner = self.compile(branches[index])
        null_tag, value_tag = null_index << 1, index << 1  # zig-zag of a small index: one byte

        def nullable(out: bytearray, value: Any) -> None:
            if value is None:
                out.append(null_tag)
            else:
                out.append(value_tag)
                inner(out, value)

        return nullable

    @staticmethod
    def _enum(symbols: list[str]) -> Writer:
        index = {symbol: i for i, symbol in enumerate(symbols)}

        def enum(out: bytearray, value: Any) -> None:
            try:
                i = index[value]
            except (KeyError, TypeError):
                raise ValueError(f"{value!r} is not a symbol of the enum") from None
            _write_int(out, i)

        return enum

    @staticmethod
    def _array(item: Writer) -> Writer:
        def array(out: bytearray, value: Any) -> None:
            if value:
                _write_int(out, len(value))
                for each in value:
                    item(out, each)
            out.append(0)

        return array

    @staticmethod
    def _map(values: Writer) -> Writer:
        def map_(out: bytearray, value: Any) -> None:
            if value:
                _write_int(out, len(value))
                for key, each in value.items():
                    _write_string(out, key)
                    values(out, each)
            out.append(0)

        return map_

    def _record(self, schema: Mapping[str, Any]) -> Writer:
        fields: list[tuple[str, Writer, bool, Any]] = []

        def record(out: bytearray, value: Any) -> None:
            get = value.get
            for name, write, has_default, default in fields:
                write(out, get(name, default) if has_default else get(name))

        # Registered before its fields compile, so a field may name the record itself.
        self._register(schema, record)
        for f in schema["fields"]:
            fields.append((f["name"], self.compile(f["type"]), "default" in f, f.get("default")))
        return record


def _write_fixed(out: bytearray, value: Any) -> None:
    out += value
