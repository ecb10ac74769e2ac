"""Property tests: random records round-trip; decode and from_json fail only in their own way."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import SCHEMA_NAMES, DecodeError, InMemoryRegistry, SchemaViolation, decode, encode, from_json
from schemas.catalogue import schema_json
from schemas.structure import compiled, run

_MIN_TIME = datetime(1900, 1, 1)
_MAX_TIME = datetime(2200, 1, 1)


def _strategy(
    schema: Any, named: dict[str, st.SearchStrategy[Any]], namespace: str
) -> st.SearchStrategy[Any]:
    """Record-form values for an Avro schema: structurally valid, not necessarily domain-valid."""
    if isinstance(schema, list):
        return st.one_of(*[_strategy(branch, named, namespace) for branch in schema])
    if isinstance(schema, str):
        primitives: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "double": st.floats(allow_nan=False),
            "string": st.text(max_size=12),
            "bytes": st.binary(max_size=12),
        }
        return primitives[schema] if schema in primitives else named[f"{namespace}.{schema}"]
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "timestamp-millis":
        return st.datetimes(_MIN_TIME, _MAX_TIME).map(
            lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC)
        )
    if logical == "date":
        return st.dates()
    if kind == "record":
        strategy = st.fixed_dictionaries(
            {f["name"]: _strategy(f["type"], named, namespace) for f in schema["fields"]}
        )
        named[f"{namespace}.{schema['name']}"] = strategy
        return strategy
    if kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
        named[f"{namespace}.{schema['name']}"] = strategy
        return strategy
    if kind == "array":
        return st.lists(_strategy(schema["items"], named, namespace), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), _strategy(schema["values"], named, namespace), max_size=3)
    return _strategy(kind, named, namespace)


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    schema = schema_json(name)
    return _strategy(schema, {}, schema["namespace"])


REGISTRY = InMemoryRegistry()
IDS = {name: REGISTRY.register(f"{name}-value", json.dumps(schema_json(name))) for name in SCHEMA_NAMES}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_records_round_trip_through_the_wire_format(name: str, data: st.DataObject) -> None:
    record = data.draw(records(name))
    assert decode(encode(IDS[name], name, record), REGISTRY.schema_by_id) == (name, record)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_random_records_round_trip_through_json(name: str, data: st.DataObject) -> None:
    record = data.draw(records(name))
    shape = compiled(name)
    as_json = json.loads(json.dumps(shape.write_json(record)))
    assert run(shape.read_json, as_json) == record


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_decode_of_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data, REGISTRY.schema_by_id)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(sorted(IDS.values())), st.binary(max_size=200))
def test_decode_of_framed_garbage_raises_only_decode_error(schema_id: int, body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(b"\x00" + schema_id.to_bytes(4, "big") + body, REGISTRY.schema_by_id)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_decode_of_a_corrupted_message_raises_only_decode_error(name: str, data: st.DataObject) -> None:
    message = bytearray(encode(IDS[name], name, data.draw(records(name))))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(5, len(message) - 1)) if len(message) > 5 else 5
        if position < len(message):
            message[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode(bytes(message), REGISTRY.schema_by_id)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCHEMA_NAMES), JSON_VALUES)
def test_from_json_of_arbitrary_json_raises_only_schema_violation(name: str, obj: Any) -> None:
    with contextlib.suppress(SchemaViolation):
        from_json(name, obj)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SCHEMA_NAMES), st.data())
def test_from_json_of_a_sample_with_one_field_replaced_raises_only_schema_violation(
    samples: dict[str, dict[str, Any]], name: str, data: st.DataObject
) -> None:
    event = json.loads(json.dumps(samples[name]))
    target = event
    # Walk one or two levels down so nested records get their share of nonsense.
    if isinstance(event.get("grading"), dict) and data.draw(st.booleans()):
        target = event["grading"]
    field = data.draw(st.sampled_from(sorted(target)))
    target[field] = data.draw(
        JSON_VALUES | st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-02-30"])
    )
    with contextlib.suppress(SchemaViolation):
        from_json(name, event)
