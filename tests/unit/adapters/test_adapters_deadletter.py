"""Dead letters always fit on the dead-letter topic: huge originals are cut, with size and hash."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import fastavro
import pytest

import schemas
from hubstream import topics
from hubstream.deadletter import (
    FIELD_MAX_CHARS,
    REASON_MAX_CHARS,
    TRUNCATED_VALUE_BYTES,
    dead_letter_key,
    encode_dead_letter,
)
from hubstream.serde import Serde
from schemas.catalogue import BASELINE_DIR, parsed_schema, schema_json

KEY = b"k" * 64


def letter(value: bytes | None, *, key: bytes | None = KEY, reason: str = "bad", field: str | None = None,
           stage: str = "decode") -> tuple[bytes, dict[str, Any]]:
    serde = Serde(schemas.InMemoryRegistry())
    data = encode_dead_letter(
        serde, topic="hubstream.missing-episodes", partition=3, offset=1234, key=key, value=value,
        reason=reason, field=field, stage=stage,
    )
    name, record = serde.decode(data)
    assert name == "DeadLetter"
    return data, record


def fits(data: bytes, key: bytes | None = KEY) -> bool:
    return len(data) + len(key or b"") <= topics.MAX_KEY_AND_VALUE_BYTES


def test_a_small_original_is_kept_whole_with_no_size_or_hash() -> None:
    _, record = letter(b"\x00\x00\x00\x00\x01xyz")
    assert record["value"] == b"\x00\x00\x00\x00\x01xyz"
    assert (record["original_size"], record["original_sha256"]) == (None, None)


def test_an_original_that_fits_near_the_limit_is_still_kept_whole() -> None:
    value = b"v" * (topics.MAX_KEY_AND_VALUE_BYTES - 2 * len(KEY) - 1000)
    data, record = letter(value)
    assert record["value"] == value and record["original_size"] is None
    assert fits(data)


@pytest.mark.parametrize("size", [topics.MAX_KEY_AND_VALUE_BYTES, 3_000_000, 50_000_000])
def test_an_original_too_large_for_the_topic_is_cut_with_its_size_and_sha256(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
    data, record = letter(value, stage="validate")
    assert record["value"] == value[:TRUNCATED_VALUE_BYTES]
    assert record["original_size"] == size
    assert record["original_sha256"] == hashlib.sha256(value).hexdigest()
    assert fits(data)
    # Still the same dead letter as the whole original would have been: the id hashes all of it.
    assert record["event_id"] == letter(value, stage="validate")[1]["event_id"]
    assert record["event_id"] != letter(value[:-1], stage="validate")[1]["event_id"]


def test_a_cut_dead_letter_decodes_with_the_schema_and_with_the_baseline() -> None:
    data, _ = letter(b"x" * 3_000_000)
    body = io.BytesIO(data[5:])  # after the Confluent framing
    current = fastavro.schemaless_reader(body, parsed_schema("DeadLetter"), None)
    assert isinstance(current, dict)
    assert current["original_size"] == 3_000_000
    baseline = fastavro.parse_schema(json.loads((BASELINE_DIR / "DeadLetter.avsc").read_text()))
    old = fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed_schema("DeadLetter"), baseline)
    assert isinstance(old, dict)
    assert old["value"] == b"x" * TRUNCATED_VALUE_BYTES and "original_size" not in old


def test_a_huge_reason_and_field_are_cut_and_the_letter_still_fits() -> None:
    reason = "handling failed: ValueError: " + "é" * 5_000_000
    data, record = letter(b"x" * 3_000_000, reason=reason, field="persons[0]." * 1_000_000)
    assert len(record["reason"]) <= REASON_MAX_CHARS
    assert record["reason"].startswith("handling failed: ValueError: éé")
    assert "5,000,029 characters" in record["reason"]
    assert len(record["field"]) <= FIELD_MAX_CHARS
    assert record["field"].startswith("persons[0].persons[0].")
    assert fits(data)


def test_a_short_reason_is_left_alone() -> None:
    reason = "line 1: occurred_at: timestamp must be UTC"
    _, record = letter(b"x", reason=reason, field="occurred_at")
    assert (record["reason"], record["field"]) == (reason, "occurred_at")


def test_no_value_and_no_key_is_an_empty_whole_value() -> None:
    _, record = letter(None, key=None, stage="publish")
    assert (record["value"], record["key"], record["original_size"]) == (b"", None, None)


def test_the_schema_documents_the_bounds_the_code_applies() -> None:
    docs = {f["name"]: f["doc"] for f in schema_json("DeadLetter")["fields"]}
    assert f"{TRUNCATED_VALUE_BYTES:,} bytes" in docs["value"]
    assert f"{REASON_MAX_CHARS:,} characters" in docs["reason"]
    assert f"{FIELD_MAX_CHARS:,} characters" in docs["field"]


def test_an_original_key_of_any_size_leaves_a_dead_letter_that_fits() -> None:
    key = b"k" * 2_000_000
    data, record = letter(b"v", key=key)
    assert fits(data, dead_letter_key(key))
    assert record["key"] == b"sha256:" + hashlib.sha256(key).hexdigest().encode() == dead_letter_key(key)
    assert dead_letter_key(b"short") == b"short"
