"""A health flag row as a FHIR R4 Flag resource: flag, dates and whom to call, nothing more."""

from __future__ import annotations

from datetime import date
from typing import Any

SNOMED = "http://snomed.info/sct"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"


def _day(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def to_fhir_flag(row: dict[str, Any]) -> dict[str, Any]:
    period = {"start": _day(row["period_start"])}
    if row.get("period_end"):
        period["end"] = _day(row["period_end"])
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "id": row["flag_id"],
        "status": row["status"],
        "category": [
            {"coding": [{"system": FLAG_CATEGORY, "code": "safety", "display": "Safety"}]}
        ],
        "code": {"coding": [{"system": SNOMED, "code": row["code"], "display": row["display"]}]},
        "subject": {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": row["nhs_number"]}},
        "period": period,
        "author": {
            "display": f"{row['author']} (contact {row['owning_authority']}: {row['contact_phone']})",
        },
    }
    if row.get("status_reason"):
        # R4 Flag has no status-reason element; an extension would need a profile, so the
        # reason travels as narrative text, which every FHIR reader shows.
        reason = _escape(row["status_reason"])
        flag["text"] = {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Status {row["status"]}: {reason}</div>',
        }
    return flag


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
