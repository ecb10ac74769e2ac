"""Schema evolution: every schema stays BACKWARD and FORWARD compatible with its baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas import SCHEMA_NAMES, schema_text
from schemas.catalogue import AVRO_DIR, BASELINE_DIR


def _compatible(reader: str, writer: str) -> bool:
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(avro.schema.parse(reader), avro.schema.parse(writer))
    return bool(result.compatibility is SchemaCompatibilityType.compatible)


def _full(new: str, old: str) -> bool:
    # BACKWARD: new readers read old data. FORWARD: old readers read new data.
    return _compatible(new, old) and _compatible(old, new)


def test_catalogue_lists_every_avsc_file_and_each_has_a_baseline() -> None:
    on_disk = sorted(p.stem for p in AVRO_DIR.glob("*.avsc"))
    assert on_disk == sorted(SCHEMA_NAMES)
    assert sorted(p.stem for p in BASELINE_DIR.glob("*.avsc")) == on_disk


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_backward_and_forward_compatible_with_its_baseline(name: str) -> None:
    baseline = (BASELINE_DIR / f"{name}.avsc").read_text(encoding="utf-8")
    current = schema_text(name)
    assert _compatible(current, baseline), f"{name}: new readers cannot read baseline data (BACKWARD)"
    assert _compatible(baseline, current), f"{name}: baseline readers cannot read new data (FORWARD)"


def _walk(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        if "fields" in schema and "doc" in schema:
            found.append(schema)
        for value in schema.values():
            found.extend(_walk(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(_walk(value))
    return found


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_field_has_a_doc(name: str) -> None:
    records = _walk(json.loads(schema_text(name)))
    assert records
    for record in records:
        for field in record["fields"]:
            assert field.get("doc", "").strip(), f"{record['name']}.{field['name']} has no doc"


def _changed(name: str, change: Callable[[dict[str, Any]], None]) -> str:
    schema = json.loads(schema_text(name))
    change(schema)
    return json.dumps(schema)


def _field(schema: dict[str, Any], field: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == field)


def test_removing_a_required_field_is_caught() -> None:
    def remove(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "episode_id"]

    broken = _changed("MissingEpisodeEvent", remove)
    baseline = schema_text("MissingEpisodeEvent")
    assert _compatible(broken, baseline)  # a new reader can ignore the old field...
    assert not _compatible(baseline, broken)  # ...but old readers need it: FORWARD breaks
    assert not _full(broken, baseline)


def test_adding_a_required_field_without_default_is_caught() -> None:
    def add(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "school_urn", "type": "string", "doc": "x"})

    broken = _changed("HubDecision", add)
    assert not _compatible(broken, schema_text("HubDecision"))  # BACKWARD breaks


def test_changing_a_type_is_caught() -> None:
    def retype(schema: dict[str, Any]) -> None:
        _field(schema, "reported_at")["type"] = "string"

    broken = _changed("IntelligenceReport", retype)
    assert not _full(broken, schema_text("IntelligenceReport"))


def test_removing_an_enum_symbol_without_default_is_caught() -> None:
    def drop_symbol(schema: dict[str, Any]) -> None:
        _field(schema, "kind")["type"]["symbols"].remove("risk_reviewed")

    broken = _changed("MissingEpisodeEvent", drop_symbol)
    assert not _compatible(broken, schema_text("MissingEpisodeEvent"))


def test_adding_an_optional_field_with_default_is_allowed() -> None:
    def add(schema: dict[str, Any]) -> None:
        schema["fields"].append(
            {"name": "school_urn", "type": ["null", "string"], "default": None, "doc": "x"}
        )

    assert _full(_changed("HubDecision", add), schema_text("HubDecision"))


def test_adding_a_cse_indicator_is_allowed_because_the_enum_has_a_default() -> None:
    def add_symbol(schema: dict[str, Any]) -> None:
        _field(schema, "cse_indicators")["type"]["items"]["symbols"].append("county_lines")

    assert _full(_changed("IntelligenceReport", add_symbol), schema_text("IntelligenceReport"))
