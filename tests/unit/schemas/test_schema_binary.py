"""The compiled Avro writer writes exactly the bytes fastavro writes, for any record."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import SCHEMA_NAMES, SchemaViolation, encode, from_json
from schemas.binary import write_long, writer
from schemas.catalogue import parsed_schema
from tests.unit.schemas.test_schema_roundtrip import records


def fastavro_bytes(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed_schema(name), record)
    return buf.getvalue()


def compiled_bytes(name: str, record: dict[str, Any]) -> bytes:
    out = bytearray()
    writer(name)(out, record)
    return bytes(out)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_records_are_written_byte_for_byte_as_fastavro_writes_them(
    name: str, data: st.DataObject
) -> None:
    record = data.draw(records(name))
    assert compiled_bytes(name, record) == fastavro_bytes(name, record)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_sample_is_written_as_fastavro_writes_it(name: str, samples: dict[str, Any]) -> None:
    record = from_json(name, samples[name])
    assert compiled_bytes(name, record) == fastavro_bytes(name, record)


def test_fields_left_out_are_written_as_their_default_or_null_as_fastavro_does(
    samples: dict[str, Any],
) -> None:
    record = from_json("IntelligenceReport", samples["IntelligenceReport"])
    for field in ("objects", "grading", "cse_indicators"):  # defaults [] / null, and a nullable
        partial = {k: v for k, v in record.items() if k != field}
        assert compiled_bytes("IntelligenceReport", partial) == fastavro_bytes("IntelligenceReport", partial)


@given(st.integers(-(2**63), 2**63 - 1))
def test_longs_are_zigzag_varints(n: int) -> None:
    out = bytearray()
    write_long(out, n)
    zigzag = (n << 1) ^ (n >> 63)
    decoded, shift = 0, 0
    for byte in out:
        decoded |= (byte & 0x7F) << shift
        shift += 7
    assert decoded == zigzag and all(b & 0x80 for b in out[:-1]) and not out[-1] & 0x80


def test_a_long_out_of_range_is_refused() -> None:
    with pytest.raises(OverflowError):
        write_long(bytearray(), 2**63)


@pytest.mark.parametrize(
    "when",
    [
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # before the epoch, sub-millisecond
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2200, 6, 1, 12, 0, 0, 123_456, tzinfo=UTC),
    ],
)
def test_timestamps_round_as_fastavro_rounds_them(when: datetime, samples: dict[str, Any]) -> None:
    record = from_json("MissingEpisodeEvent", samples["MissingEpisodeEvent"]) | {"reported_at": when}
    assert compiled_bytes("MissingEpisodeEvent", record) == fastavro_bytes("MissingEpisodeEvent", record)


def test_a_value_the_schema_cannot_hold_is_named_by_encode(samples: dict[str, Any]) -> None:
    record = from_json("MissingEpisodeEvent", samples["MissingEpisodeEvent"]) | {"kind": "vanished"}
    with pytest.raises(SchemaViolation) as caught:
        encode(1, "MissingEpisodeEvent", record)
    assert (caught.value.field, caught.value.value) == ("kind", "vanished")
