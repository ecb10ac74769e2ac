"""Translate between the wire (Avro records) and the rules (frozen dataclasses).

This is the only place that knows both shapes; the rules never see Avro and the agents
never see rule internals beyond the fold API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from streams import rules
from streams.rules import _json, hotspot
from streams.rules._time import UtcDatetime
from streams.rules.events import ENTITY_KINDS, EntityKind, normalise_phone, normalise_vrm

_OBJECT_ENTITY: dict[str, EntityKind] = {
    "vehicle": "vehicle", "phone": "phone", "online_handle": "online_handle"
}


def _location(raw: dict[str, Any] | None) -> rules.Location | None:
    if raw is None or raw.get("lat") is None or raw.get("lon") is None:
        return None
    return rules.Location(raw["lat"], raw["lon"])


def missing_event(record: dict[str, Any]) -> rules.RuleEvent | None:
    """The rule event for a MissingEpisodeEvent record, or None for steps no rule uses."""
    kind = record["kind"]
    common = {
        "event_id": record["event_id"],
        "child_id": record["person_key"],
        "episode_id": record["episode_id"],
        "occurred_at": record["occurred_at"],
    }
    if kind == "reported_missing":
        return rules.MissingReported(
            **common, area=record["area"], agency=record["agency"],
            location=_location(record.get("last_seen")), risk_level=record["risk_level"],
        )
    if kind == "found_or_returned":
        return rules.ChildReturned(
            **common, area=record["area"], agency=record["agency"], location=_location(record.get("found"))
        )
    if kind == "return_interview":
        return rules.ReturnInterview(**common, outcome=record["interview_outcome"])
    return None


_NORMALISE = {"vehicle": normalise_vrm, "phone": normalise_phone}


def _entity(kind: EntityKind, value: str) -> rules.Entity:
    # The same vehicle or phone written two ways must be one entity for the association rule.
    normalise = _NORMALISE.get(kind)
    return rules.Entity(kind, normalise(value) if normalise else value.strip())


def intelligence_event(record: dict[str, Any]) -> rules.IntelligenceReport:
    persons = record["persons"]
    entities = [_entity("adult", p["person_key"]) for p in persons if p["role"] == "adult_of_concern"]
    entities += [
        _entity(_OBJECT_ENTITY[o["kind"]], o["value"])
        for o in record["objects"]
        if o["kind"] in _OBJECT_ENTITY
    ]
    grading = record.get("grading")
    return rules.IntelligenceReport(
        event_id=record["event_id"],
        occurred_at=record["occurred_at"],
        area=record["area"],
        agency=record["reporting_agency"],
        children=tuple(sorted({p["person_key"] for p in persons if p["role"] == "child_at_risk"})),
        locations=tuple(loc for loc in map(_location, record["locations"]) if loc is not None),
        entities=tuple(sorted(set(entities), key=lambda e: (e.kind, e.key))),
        handling_code=grading["handling_code"] if grading else None,
        handling_conditions=grading.get("handling_conditions") if grading else None,
        # A re-issue (a police grading of a partner report) is the same report: the rules count
        # reports by report_id, and order its issues by when they reached the hub.
        report_id=record["report_id"],
        reported_at=record["reported_at"],
    )


assert set(_OBJECT_ENTITY.values()) <= set(ENTITY_KINDS)

# Events re-keyed onto the worker's internal topics travel as tagged JSON.
_EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (rules.MissingReported, rules.ChildReturned, rules.ReturnInterview, rules.IntelligenceReport)
}


@dataclass(frozen=True)
class _Rekeyed:
    type: str
    event: msgspec.Raw  # decoded once its type is known
    source: str
    watermark: UtcDatetime


def event_to_bytes(event: rules.RuleEvent, source: str, source_watermark: datetime) -> bytes:
    """A re-keyed event, with the watermark of the source partition it came from."""
    payload = {"type": type(event).__name__, "event": event, "source": source, "watermark": source_watermark}
    return _json.dumps(payload)


def event_from_bytes(data: bytes) -> tuple[rules.RuleEvent, str, datetime]:
    raw = _json.loads(_Rekeyed, data, "re-keyed event")
    return _event_of(raw), raw.source, raw.watermark


def _event_of(raw: _Rekeyed) -> rules.RuleEvent:
    kind = _EVENT_TYPES.get(raw.type)
    if kind is None:
        known = sorted(_EVENT_TYPES)
        raise rules.RuleInputError(f"re-keyed event.type must be one of {known}, got {raw.type!r}")
    decoded: rules.RuleEvent = _json.loads(kind, raw.event, raw.type)
    return decoded


# What goes to a hotspot cell is the event's observations: smaller, and read back without
# rebuilding (and re-checking) the whole event at every cell it is sent to.
_OBSERVATIONS = "Observations"


def observations_to_bytes(
    observations: Sequence[hotspot.Observation], source: str, source_watermark: datetime
) -> bytes:
    """An event's observations re-keyed to a hotspot cell, with its source partition's watermark."""
    payload = {"type": _OBSERVATIONS, "event": observations, "source": source, "watermark": source_watermark}
    return _json.dumps(payload)


def observations_from_bytes(data: bytes) -> tuple[tuple[hotspot.Observation, ...], str, datetime]:
    """What :func:`observations_to_bytes` wrote; a whole event (as workers before observations were
    sent wrote them) gives its observations, so a topic written by both reads the same."""
    raw = _json.loads(_Rekeyed, data, "re-keyed observations")
    if raw.type == _OBSERVATIONS:
        observations = _json.loads(tuple[hotspot.Observation, ...], raw.event, _OBSERVATIONS)
    else:
        observations = tuple(hotspot.observations_of(_event_of(raw)))
    if not observations:
        raise rules.RuleInputError(f"re-keyed {raw.type}: no located observation for a hotspot cell")
    return observations, raw.source, raw.watermark


def alert_record(alert: rules.Alert, published_at: datetime) -> dict[str, Any]:
    """The Avro Alert record for a rule alert."""
    return {
        "event_id": alert.alert_id,
        "occurred_at": alert.raised_at,
        "reported_at": published_at,
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "subject_kind": alert.subject_kind,
        "subject": alert.subject,
        "area": alert.area,
        "severity": alert.severity,
        "window_start": alert.window_start,
        "window_end": alert.window_end,
        "evidence": list(alert.evidence),
        "raised_at": alert.raised_at,
        "settings": {name: str(value) for name, value in alert.settings},
        "handling_conditions": list(alert.handling_conditions),
        "resolves": alert.resolves,
    }
