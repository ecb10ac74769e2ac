from datetime import UTC, datetime, timedelta, timezone

import pytest
from rules_factories import interview, missing, report

from streams.rules import Entity, IntelligenceReport, Location, RuleInputError, normalise_vrm


def test_naive_occurred_at_is_rejected_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"MissingReported\.occurred_at must be timezone-aware"):
        missing("e1", datetime(2026, 1, 1, 12, 0))


def test_occurred_at_with_an_offset_is_converted_to_utc() -> None:
    bst = timezone(timedelta(hours=1))
    event = missing("e1", datetime(2026, 6, 1, 13, 0, tzinfo=bst))
    assert event.occurred_at == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


def test_occurred_at_that_is_not_a_datetime_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"occurred_at must be a datetime, got '2026-01-01'"):
        interview("e1", "2026-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (90.5, 0.0, r"Location\.lat must be within ±90, got 90\.5"),
        (-91, 0.0, r"Location\.lat must be within ±90, got -91"),
        (0.0, 180.01, r"Location\.lon must be within ±180, got 180\.01"),
        (float("nan"), 0.0, r"Location\.lat must be a finite number, got nan"),
        (True, 0.0, r"Location\.lat must be a finite number, got True"),
        (0.0, "1.0", r"Location\.lon must be a finite number, got '1\.0'"),
    ],
)
def test_location_out_of_range_names_field_and_value(lat: object, lon: object, message: str) -> None:
    with pytest.raises(RuleInputError, match=message):
        Location(lat, lon)  # type: ignore[arg-type]


def test_location_on_the_limits_is_accepted_and_stored_as_float() -> None:
    location = Location(-90, 180)
    assert (location.lat, location.lon) == (-90.0, 180.0)
    assert isinstance(location.lat, float)


def test_unknown_risk_level_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"risk_level must be one of .* got 'severe'"):
        missing("e1", datetime(2026, 1, 1, tzinfo=UTC), risk="severe")


def test_unknown_interview_outcome_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"outcome must be one of .* got 'missed'"):
        interview("e1", datetime(2026, 1, 1, tzinfo=UTC), outcome="missed")


def test_empty_identifier_is_rejected_naming_the_field() -> None:
    with pytest.raises(RuleInputError, match=r"MissingReported\.child_id must be a non-empty string"):
        missing("e1", datetime(2026, 1, 1, tzinfo=UTC), child=" ")


def test_entity_ref_is_kind_and_key() -> None:
    assert Entity("vehicle", "AB12CDE").ref == "vehicle:AB12CDE"


def test_unknown_entity_kind_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"Entity\.kind must be one of .* got 'boat'"):
        Entity("boat", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "expected"), [("ab12 cde", "AB12CDE"), (" Ab12\tCdE ", "AB12CDE")])
def test_normalise_vrm_uppercases_and_strips_spaces(raw: str, expected: str) -> None:
    assert normalise_vrm(raw) == expected


def test_normalise_vrm_rejects_a_blank_mark() -> None:
    with pytest.raises(RuleInputError, match=r"vrm must contain a registration mark, got '  '"):
        normalise_vrm("  ")


def test_handling_code_c_without_conditions_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"handling_conditions must be a non-empty string"):
        report("r1", datetime(2026, 1, 1, tzinfo=UTC), handling_code="C")


def test_unknown_handling_code_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"handling_code must be one of .* got 'X'"):
        report("r1", datetime(2026, 1, 1, tzinfo=UTC), handling_code="X")


def test_conditions_travel_only_with_handling_code_c() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    c = report("r1", when, handling_code="C", handling_conditions="no onward sharing")
    p = report("r2", when, handling_code="P", handling_conditions="ignored")
    assert (c.conditions, p.conditions) == ("no onward sharing", None)


def test_report_children_must_be_a_tuple_of_strings() -> None:
    with pytest.raises(RuleInputError, match=r"IntelligenceReport\.children must be a tuple of str"):
        IntelligenceReport(
            event_id="r1",
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            area="north",
            agency="police",
            children=["a"],  # type: ignore[arg-type]
            locations=(),
            entities=(),
            handling_code=None,
            handling_conditions=None,
        )


def test_the_same_phone_written_three_ways_is_one_key() -> None:
    from streams.rules.events import normalise_phone

    assert normalise_phone("07700 900123") == normalise_phone("+44 7700 900123") == "07700900123"
    assert normalise_phone("07700-900-123") == "07700900123"


def test_a_phone_without_digits_is_refused_naming_the_value() -> None:
    import pytest

    from streams.rules.errors import RuleInputError
    from streams.rules.events import normalise_phone

    with pytest.raises(RuleInputError, match="phone must contain digits, got 'unknown'"):
        normalise_phone("unknown")
