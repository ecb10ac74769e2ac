"""Builders of valid JSON-form events for tests: each names only what the test is about."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

AREA = "E10000018"


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _id(*parts: object) -> str:
    return str(uuid5(NAMESPACE_URL, "/".join(map(str, parts))))


def missing(child: str, episode: str, kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": _id(child, episode, kind, at),
        "episode_id": episode,
        "kind": kind,
        "occurred_at": iso(at),
        "reported_at": iso(at + timedelta(minutes=30)),
        "area": AREA,
        "agency": "Leicestershire Police",
        "agency_type": "police",
        "person_key": child,
    }
    if kind == "reported_missing":
        event.update(risk_level="medium", missing_from="home")
    if kind == "return_interview":
        event.update(interview_outcome="completed")
    event.update(fields)
    return event


def located(lat: float, lon: float) -> dict[str, Any]:
    return {"lat": lat, "lon": lon}


def intelligence(
    event_key: str,
    at: datetime,
    *,
    children: list[str],
    adults: Sequence[str] = (),
    vehicles: Sequence[str] = (),
    where: tuple[float, float] | None = None,
    agency: str = "Charnwood Youth Project",
    agency_type: str = "voluntary",
    grading: dict[str, Any] | None = None,
) -> dict[str, Any]:
    persons = [{"person_key": c, "role": "child_at_risk"} for c in children]
    persons += [{"person_key": a, "role": "adult_of_concern"} for a in adults]
    return {
        "event_id": _id("intel", event_key),
        "report_id": _id("report", event_key),
        "occurred_at": iso(at),
        "reported_at": iso(at + timedelta(hours=2)),
        "area": AREA,
        "reporting_agency": agency,
        "agency_type": agency_type,
        "persons": persons,
        "objects": [{"kind": "vehicle", "value": v} for v in vehicles],
        "locations": [located(*where)] if where else [],
        "cse_indicators": ["cars_with_unknown_adults"],
        "narrative": "Seen getting into a car with an older male.",
        "grading": grading,
    }


def alert(n: int, at: datetime) -> dict[str, Any]:
    """A record-form Alert, as the worker publishes them (for consumer tests)."""
    alert_id = f"{n:032x}"
    return {
        "event_id": alert_id,
        "occurred_at": at,
        "reported_at": at,
        "alert_id": alert_id,
        "rule": "repeat_missing",
        "subject_kind": "child",
        "subject": f"pk_{n % 997:04d}",
        "area": AREA,
        "severity": "medium",
        "window_start": at - timedelta(days=90),
        "window_end": at,
        "evidence": [_id("ev", n, k) for k in range(3)],
        "raised_at": at,
        "settings": {"count": "3", "days": "90"},
        "handling_conditions": [],
        "resolves": None,
    }


def decision(
    child: str,
    kind: str,
    at: datetime,
    *,
    nhs_number: str | None = None,
    risk_level: str | None = None,
    reason: str | None = None,
    authority: str = "Leicestershire County Council",
    phone: str = "0116 496 0200",
) -> dict[str, Any]:
    """A JSON-form HubDecision; risk_level_set gets a risk level unless one is given."""
    return {
        "event_id": _id("decision", child, kind, at),
        "occurred_at": iso(at),
        "reported_at": iso(at + timedelta(minutes=5)),
        "kind": kind,
        "person_key": child,
        "nhs_number": nhs_number,
        "risk_level": risk_level or ("high" if kind == "risk_level_set" else None),
        "reason": reason or kind.replace("_", " "),
        "decided_by": "hub-sw-01",
        "area": AREA,
        "owning_authority": authority,
        "contact_phone": phone,
    }
