"""The schema catalogue: the .avsc files in ``schemas/avro`` loaded once by name."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import UnknownSchema

AVRO_DIR = Path(__file__).resolve().parent / "avro"
BASELINE_DIR = AVRO_DIR / "baseline"

INTELLIGENCE_REPORT = "IntelligenceReport"
MISSING_EPISODE_EVENT = "MissingEpisodeEvent"
HUB_DECISION = "HubDecision"
ALERT = "Alert"
HEALTH_CSE_FLAG = "HealthCseFlag"
DEAD_LETTER = "DeadLetter"

SCHEMA_NAMES: tuple[str, ...] = (
    INTELLIGENCE_REPORT,
    MISSING_EPISODE_EVENT,
    HUB_DECISION,
    ALERT,
    HEALTH_CSE_FLAG,
    DEAD_LETTER,
)


@cache
def schema_text(name: str) -> str:
    """The schema's JSON text as committed: what gets registered with the registry."""
    if name not in SCHEMA_NAMES:
        raise UnknownSchema(name, SCHEMA_NAMES)
    return (AVRO_DIR / f"{name}.avsc").read_text(encoding="utf-8")


@cache
def schema_json(name: str) -> dict[str, Any]:
    """The schema as plain JSON (not parsed by fastavro)."""
    loaded: dict[str, Any] = json.loads(schema_text(name))
    return loaded


@cache
def parsed_schema(name: str) -> dict[str, Any]:
    """The schema parsed by fastavro, cached: parsing is far too slow for the hot path."""
    parsed = fastavro.parse_schema(schema_json(name))
    assert isinstance(parsed, dict)
    return parsed


def short_name(full_name: str) -> str:
    """``uk.hubstream.v1.Alert`` -> ``Alert``."""
    return full_name.rsplit(".", 1)[-1]
