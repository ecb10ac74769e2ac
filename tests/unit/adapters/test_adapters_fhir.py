"""Health flag rows as FHIR R4 Flag resources, checked by an independent FHIR library.

fhir.resources ships R4B, whose Flag resource is the same as R4's.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.flag import Flag

import schemas
from consumers import health
from consumers.fhir import NHS_NUMBER_SYSTEM, SNOMED, to_fhir_flag
from streams.rules import health_flag
from tests.support import events

CHILD = "pk_child_7"
NHS = "9434765919"
T0 = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
REASON = "Closed at review: risk reduced, family engaged with support."
# Everything a Flag resource may hold for health: the flag, its dates, the NHS number, author and contact.
FHIR_FLAG_STATUSES = {"active", "inactive", "entered-in-error"}
ALLOWED_ELEMENTS = {"resourceType", "id", "status", "category", "code", "subject", "period", "author", "text"}


def decided(kind: str, days: int, **fields: Any) -> dict[str, Any]:
    return schemas.from_json("HubDecision", events.decision(CHILD, kind, T0 + timedelta(days=days), **fields))


def stored(flag: dict[str, Any]) -> dict[str, Any]:
    """The flag as the health store holds and returns it (read_flags' columns)."""
    row = {column: health._column(flag, column) for column in health.FLAG_COLUMNS}
    return row | {"updated_at": T0}


def flags_for(*decisions: dict[str, Any]) -> list[dict[str, Any]]:
    state, out = health_flag.FlagState(), []
    for d in decisions:
        state, flags = health_flag.apply(state, d)
        out += flags
    return out


@pytest.fixture
def active_row() -> dict[str, Any]:
    [flag] = flags_for(decided("case_opened", 0, nhs_number=NHS))
    return stored(flag)


@pytest.fixture
def inactive_row() -> dict[str, Any]:
    _, flag = flags_for(decided("case_opened", 0, nhs_number=NHS), decided("case_closed", 30, reason=REASON))
    return stored(flag)


def parsed(row: dict[str, Any]) -> Flag:
    # Through JSON text, as a health system would receive it.
    flag = Flag.model_validate(json.loads(json.dumps(to_fhir_flag(row))))
    # The library checks structure and types, not code bindings: check the required status binding here.
    assert flag.status in FHIR_FLAG_STATUSES
    return flag


def test_an_active_flag_is_a_valid_fhir_flag_with_the_at_risk_code_and_nhs_number(active_row) -> None:
    flag = parsed(active_row)
    assert (flag.id, flag.status) == (health_flag.flag_id(CHILD), "active")
    [coding] = flag.code.coding
    assert (coding.system, coding.code, coding.display) == (SNOMED, "716565009", health_flag.AT_RISK_DISPLAY)
    assert (flag.subject.identifier.system, flag.subject.identifier.value) == (NHS_NUMBER_SYSTEM, NHS)
    assert str(flag.period.start) == "2024-03-05"
    assert flag.period.end is None
    assert flag.text is None


def test_the_author_names_the_hub_and_whom_to_call(active_row) -> None:
    display = parsed(active_row).author.display
    assert health_flag.AUTHOR in display
    assert "Leicestershire County Council" in display
    assert "0116 496 0200" in display


def test_an_inactive_flag_is_a_valid_fhir_flag_with_its_period_end(inactive_row) -> None:
    flag = parsed(inactive_row)
    assert flag.status == "inactive"
    assert (str(flag.period.start), str(flag.period.end)) == ("2024-03-05", "2024-04-04")


def test_an_inactive_flag_carries_its_reason_in_its_narrative(inactive_row) -> None:
    narrative = parsed(inactive_row).text
    assert narrative.status == "generated"
    assert REASON in narrative.div
    assert "inactive" in narrative.div


def test_markup_in_a_reason_is_escaped_and_still_valid(inactive_row) -> None:
    row = inactive_row | {"status_reason": "Closed <b>& reviewed</b>"}
    div = parsed(row).text.div
    assert "Closed &lt;b&gt;&amp; reviewed&lt;/b&gt;" in div
    assert "<b>" not in div


def test_entered_in_error_is_stored_and_shown_with_the_fhir_code(inactive_row) -> None:
    record = inactive_row | {"status": "entered_in_error"}
    row = stored(record)
    assert row["status"] == "entered-in-error"
    assert parsed(row).status == "entered-in-error"


def test_dates_may_come_back_from_the_store_as_dates_or_iso_text(active_row) -> None:
    as_text = active_row | {"period_start": "2024-03-05"}
    assert isinstance(active_row["period_start"], date)
    assert to_fhir_flag(as_text) == to_fhir_flag(active_row)


@pytest.mark.parametrize("row_name", ["active_row", "inactive_row"])
def test_nothing_but_flag_dates_nhs_number_and_author_reaches_health(row_name: str, request) -> None:
    row = request.getfixturevalue(row_name)
    resource = to_fhir_flag(row)
    assert set(resource) <= ALLOWED_ELEMENTS
    text = json.dumps(resource)
    # No child key, no decision maker, no area code, no row bookkeeping.
    for private in (CHILD, "hub-sw-01", events.AREA, "updated_at"):
        assert private not in text
    identifiers = [resource["subject"]["identifier"]["value"]]
    assert identifiers == [NHS]
