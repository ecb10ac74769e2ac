"""Validation, JSON form and Confluent wire framing for the hubstream schemas.

Wire format: magic byte 0, the registry's schema id as 4 bytes big-endian, then the Avro binary
body written without a container header (fastavro's schemaless writer).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro import schemaless_reader
from fastavro.schema import to_parsing_canonical_form

from schemas import binary
from schemas import catalogue as cat
from schemas.domain import CHECKS, Record
from schemas.errors import DecodeError, SchemaError, SchemaViolation
from schemas.structure import compiled, run

MAGIC = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**32 - 1

SchemaResolver = Callable[[int], str]
"""Returns the writer schema's JSON text for a schema id; raises LookupError if unknown."""


def validate(name: str, record: Record) -> Record:
    """Check a record-form event against schema ``name`` and its domain rules.

    Returns the record with defaults filled in and timestamps normalised to UTC.
    Raises SchemaViolation naming the field path and the value.
    """
    checked: Record = run(compiled(name).check_record, record)
    CHECKS[name](checked)
    return checked


def from_json(name: str, obj: Any) -> Record:
    """Turn a JSON-form event (ISO-8601 UTC timestamps, plain JSON otherwise) into a valid record."""
    if name not in cat.SCHEMA_NAMES:
        cat.schema_text(name)  # raises UnknownSchema with the list of known names
    record: Record = run(compiled(name).read_json, obj)
    CHECKS[name](record)
    return record


def to_json(name: str, record: Record) -> dict[str, Any]:
    """The JSON form of a record-form event (assumed valid)."""
    out: dict[str, Any] = compiled(name).write_json(record)
    return out


def dumps(name: str, record: Record) -> str:
    """The event as one compact JSON text."""
    return json.dumps(to_json(name, record), separators=(",", ":"), ensure_ascii=False)


_headers: dict[int, bytes] = {}


def _header(schema_id: int) -> bytes:
    header = _headers.get(schema_id)
    if header is None:
        if not 0 <= schema_id <= MAX_SCHEMA_ID:
            raise SchemaError(f"schema id must fit in 4 bytes (0..{MAX_SCHEMA_ID}), got {schema_id}")
        header = _headers[schema_id] = bytes([MAGIC]) + schema_id.to_bytes(4, "big")
    return header


def encode(schema_id: int, name: str, record: Record) -> bytes:
    """Confluent-framed Avro bytes for a record (validate it first: this checks structure only)."""
    write = binary.writer(name)  # UnknownSchema, listing the known names, for a name not ours
    out = bytearray(_header(schema_id))
    try:
        write(out, record)
    except Exception as exc:  # a bad value fails in many ways; find the field and say it clearly
        validate(name, record)
        raise SchemaViolation("", record, f"could not encode as {name}: {exc}") from exc
    return bytes(out)


@dataclass(frozen=True)
class _ReadPlan:
    name: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None


_plans: dict[str, _ReadPlan] = {}


def _plan_for_text(schema_id: int, text: str) -> _ReadPlan:
    plan = _plans.get(text)
    if plan is not None:
        return plan
    try:
        writer = fastavro.parse_schema(json.loads(text))
        if not isinstance(writer, dict) or writer.get("type") != "record":
            raise ValueError("not a record schema")
        full_name = str(writer["name"])
    except Exception as exc:  # a registry can hold anything; a bad schema is a decode failure
        raise DecodeError(f"schema id {schema_id} is not a usable Avro record schema: {exc}") from None
    name = cat.short_name(full_name)
    reader: dict[str, Any] | None = None
    if name in cat.SCHEMA_NAMES:
        local = cat.parsed_schema(name)
        # Same canonical form means same binary layout: skip fastavro's slower resolving reader.
        if to_parsing_canonical_form(local) != to_parsing_canonical_form(writer):
            reader = local
    plan = _plans[text] = _ReadPlan(name, writer, reader)
    return plan


def _read(data: bytes, plan: _ReadPlan, schema_id: int) -> Record:
    buf = io.BytesIO(data)
    buf.seek(HEADER_SIZE)
    try:
        record = schemaless_reader(buf, plan.writer, plan.reader)
    except EOFError:
        raise DecodeError(f"truncated {plan.name} body ({len(data)} bytes, schema id {schema_id})") from None
    except Exception as exc:  # garbled bodies surface as many fastavro/Python errors
        problem = f"{type(exc).__name__}: {exc}"
        raise DecodeError(f"garbled {plan.name} body (schema id {schema_id}): {problem}") from None
    if not isinstance(record, dict):
        raise DecodeError(f"schema id {schema_id} did not decode to a record")
    if buf.tell() != len(data):
        raise DecodeError(
            f"{len(data) - buf.tell()} trailing bytes after the {plan.name} body (schema id {schema_id})"
        )
    return record


def _schema_id(data: bytes) -> int:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, found {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"message is {len(data)} bytes, shorter than the 5-byte Confluent header")
    if data[0] != MAGIC:
        raise DecodeError(f"magic byte is {data[0]}, expected 0 (not Confluent-framed Avro)")
    return int.from_bytes(data[1:HEADER_SIZE], "big")


def decode(data: bytes, resolve_schema_by_id: SchemaResolver) -> tuple[str, Record]:
    """Decode Confluent-framed Avro into (schema name, record).

    The writer schema comes from ``resolve_schema_by_id``; when it differs from the local schema of
    the same name, the local one is the reader schema, so older and newer writers both decode.
    Raises DecodeError for anything that is not a well-formed message of a known schema id.
    Errors other than LookupError from the resolver (say the registry is down) propagate: that is
    not the message's fault and must not send it to the dead-letter topic.
    """
    schema_id = _schema_id(data)
    try:
        text = resolve_schema_by_id(schema_id)
    except LookupError:
        raise DecodeError(f"unknown schema id {schema_id}") from None
    plan = _plan_for_text(schema_id, text)
    return plan.name, _read(bytes(data), plan, schema_id)


class Decoder:
    """Decoder that asks the resolver once per schema id, for consumers on the hot path."""

    def __init__(self, resolve_schema_by_id: SchemaResolver) -> None:
        self._resolve = resolve_schema_by_id
        self._by_id: dict[int, _ReadPlan] = {}

    def decode(self, data: bytes) -> tuple[str, Record]:
        schema_id = _schema_id(data)
        plan = self._by_id.get(schema_id)
        if plan is None:
            try:
                text = self._resolve(schema_id)
            except LookupError:
                raise DecodeError(f"unknown schema id {schema_id}") from None
            plan = self._by_id[schema_id] = _plan_for_text(schema_id, text)
        return plan.name, _read(bytes(data), plan, schema_id)
