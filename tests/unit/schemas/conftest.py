"""Valid sample events, one per schema, as JSON form: tests change one thing and expect an error."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

SAMPLES: dict[str, dict[str, Any]] = {
    "IntelligenceReport": {
        "event_id": "ev-1",
        "report_id": "rep-1",
        "occurred_at": "2024-03-01T21:30:00Z",
        "reported_at": "2024-03-02T09:00:00.000+00:00",
        "area": "E10000018",
        "reporting_agency": "Leicestershire Police",
        "agency_type": "police",
        "persons": [
            {"person_key": "pk_child", "role": "child_at_risk", "nhs_number": "9434765919"},
            {"person_key": "pk_adult", "role": "adult_of_concern", "nhs_number": None},
        ],
        "objects": [{"kind": "vehicle", "value": "AB12 CDE"}, {"kind": "phone", "value": "07700 900123"}],
        "locations": [
            {
                "lat": 52.7721,
                "lon": -1.2062,
                "postcode": "LE11 3AB",
                "uprn": 100030000001,
                "premises_name": "Station Hotel, Loughborough",
                "premises_type": "hotel",
            }
        ],
        "cse_indicators": ["older_partner", "hotel_taxi_fast_food_contact"],
        "narrative": "Child seen late evening at the hotel with an older adult.",
        "grading": {
            "source_evaluation": "B",
            "intelligence_assessment": 2,
            "handling_code": "C",
            "handling_conditions": "Share with children's social care only",
        },
    },
    "MissingEpisodeEvent": {
        "event_id": "ev-2",
        "episode_id": "ep-1",
        "kind": "reported_missing",
        "occurred_at": "2024-03-01T21:30:00Z",
        "reported_at": "2024-03-01T22:00:00Z",
        "area": "E10000018",
        "agency": "Leicestershire Police",
        "agency_type": "police",
        "person_key": "pk_child",
        "nhs_number": "9434765919",
        "risk_level": "medium",
        "missing_from": "care",
        "placing_authority": "E08000025",
        "host_authority": "E10000018",
        "last_seen": {"lat": 52.77, "lon": -1.2},
        "found": None,
        "interview_outcome": None,
    },
    "HubDecision": {
        "event_id": "ev-3",
        "occurred_at": "2024-03-05T10:00:00Z",
        "reported_at": "2024-03-05T10:05:00Z",
        "kind": "risk_level_set",
        "person_key": "pk_child",
        "nhs_number": "9434765919",
        "risk_level": "high",
        "reason": "Risk level set at strategy meeting.",
        "decided_by": "hub-sw-01",
        "area": "E10000018",
        "owning_authority": "Leicestershire County Council",
        "contact_phone": "0116 496 0200",
    },
    "Alert": {
        "event_id": "a1",
        "occurred_at": "2024-03-05T10:00:00Z",
        "reported_at": "2024-03-05T10:00:01Z",
        "alert_id": "a1",
        "rule": "repeat_missing",
        "subject_kind": "child",
        "subject": "pk_child",
        "area": "E10000018",
        "severity": "high",
        "window_start": "2024-01-01T00:00:00Z",
        "window_end": "2024-03-05T10:00:00Z",
        "evidence": ["ev-2", "ev-7", "ev-9"],
        "raised_at": "2024-03-05T10:00:00Z",
        "settings": {"count": "3", "days": "90"},
        "handling_conditions": [],
        "resolves": None,
    },
    "HealthCseFlag": {
        "event_id": "ev-5",
        "occurred_at": "2024-03-05T10:00:00Z",
        "reported_at": "2024-03-05T10:00:02Z",
        "flag_id": "flag-1",
        "nhs_number": "9434765919",
        "status": "inactive",
        "code": "716565009",
        "display": "At increased risk of child sexual exploitation",
        "period_start": "2024-03-05",
        "period_end": "2024-09-01",
        "author": "LLR CSE Hub",
        "owning_authority": "Leicestershire County Council",
        "contact_phone": "+44 116 496 0200",
        "status_reason": "Closed to the CSE tracker: risk reduced",
    },
    "DeadLetter": {
        "event_id": "dl-1",
        "failed_at": "2024-03-05T10:00:00Z",
        "stage": "decode",
        "original_topic": "hubstream.missing-episodes",
        "original_partition": 3,
        "original_offset": 1234,
        "key": "cGtfY2hpbGQ=",
        "value": "AAAAAAF4eXo=",
        "reason": "magic byte is 120, expected 0",
        "field": None,
    },
}


@pytest.fixture(scope="session")
def samples() -> dict[str, dict[str, Any]]:
    """Every sample by schema name; copy before changing (session scope suits hypothesis)."""
    return SAMPLES


@pytest.fixture
def sample() -> Callable[[str], dict[str, Any]]:
    """A fresh deep copy of the valid JSON-form sample of a schema."""

    def make(name: str) -> dict[str, Any]:
        return copy.deepcopy(SAMPLES[name])

    return make
