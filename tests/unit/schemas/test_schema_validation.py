"""Validation: every sample is valid, and each broken field gets an error naming field and value."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas import SCHEMA_NAMES, SchemaViolation, UnknownSchema, from_json, to_json, validate
from schemas.domain import check_not_future, nhs_check_digit, nhs_number_problem

Sample = Callable[[str], dict[str, Any]]


def violation(name: str, event: dict[str, Any]) -> SchemaViolation:
    with pytest.raises(SchemaViolation) as caught:
        from_json(name, event)
    return caught.value


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_sample_is_valid_and_round_trips_through_json(name: str, sample: Sample) -> None:
    record = from_json(name, sample(name))
    assert from_json(name, to_json(name, record)) == record
    assert validate(name, record) == record


def test_timestamps_come_back_as_utc_datetimes_and_go_out_with_z(sample: Sample) -> None:
    record = from_json("IntelligenceReport", sample("IntelligenceReport"))
    assert record["reported_at"] == datetime(2024, 3, 2, 9, 0, tzinfo=UTC)
    assert to_json("IntelligenceReport", record)["reported_at"] == "2024-03-02T09:00:00.000Z"


def test_handling_code_c_without_conditions_names_the_field(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["grading"]["handling_conditions"] = None
    err = violation("IntelligenceReport", event)
    assert err.field == "grading.handling_conditions"
    assert err.value is None
    assert "handling code C requires the conditions" in str(err)
    assert str(err).startswith("grading.handling_conditions:")


def test_blank_conditions_do_not_count_as_stated(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["grading"]["handling_conditions"] = "   "
    assert violation("IntelligenceReport", event).field == "grading.handling_conditions"


def test_conditions_with_handling_code_p_are_rejected(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["grading"]["handling_code"] = "P"
    err = violation("IntelligenceReport", event)
    assert err.field == "grading.handling_conditions"
    assert "only with handling code C" in err.message


def test_ungraded_partner_report_is_valid(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["grading"] = None
    event["agency_type"] = "education"
    assert from_json("IntelligenceReport", event)["grading"] is None


def test_intelligence_assessment_outside_one_to_five(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["grading"]["intelligence_assessment"] = 6
    err = violation("IntelligenceReport", event)
    assert (err.field, err.value) == ("grading.intelligence_assessment", 6)


def test_bad_nhs_check_digit_names_the_person_and_value(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["persons"][0]["nhs_number"] = "9434765918"
    err = violation("IntelligenceReport", event)
    assert err.field == "persons[0].nhs_number"
    assert err.value == "9434765918"
    assert "modulus-11" in str(err)
    assert "'9434765918'" in str(err)


def test_nhs_number_with_spaces_is_rejected_with_a_hint(sample: Sample) -> None:
    event = sample("MissingEpisodeEvent")
    event["nhs_number"] = "943 476 5919"
    err = violation("MissingEpisodeEvent", event)
    assert err.field == "nhs_number"
    assert "without spaces" in err.message


def test_nhs_number_is_never_given_for_an_adult(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["persons"][1]["nhs_number"] = "9434765919"
    err = violation("IntelligenceReport", event)
    assert err.field == "persons[1].nhs_number"


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        ("9434765919", True),
        ("4010232137", True),
        ("9434765918", False),
        ("123456789", False),
        ("94347659x9", False),
    ],
)
def test_nhs_modulus_eleven(number: str, ok: bool) -> None:
    assert (nhs_number_problem(number) is None) is ok


def test_nhs_check_digit_ten_means_no_valid_number() -> None:
    # Weighted sum 1*10 = 10 gives 11 - 10 = 1, while a sum leaving remainder 1 gives 10: never issued.
    stems = [f"{i:09d}" for i in range(200)]
    assert any(nhs_check_digit(s) is None for s in stems)
    for stem in stems:
        digit = nhs_check_digit(stem)
        if digit is not None:
            assert nhs_number_problem(f"{stem}{digit}") is None


def test_unknown_enum_symbol_lists_the_allowed_ones(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["agency_type"] = "fire_service"
    err = violation("IntelligenceReport", event)
    assert err.field == "agency_type"
    assert err.value == "fire_service"
    assert "police" in err.message and "voluntary" in err.message


def test_wrong_type_deep_in_an_array_gives_the_index(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    event["locations"][0]["uprn"] = "100030000001"
    err = violation("IntelligenceReport", event)
    assert err.field == "locations[0].uprn"
    assert "expected a whole number" in err.message


def test_missing_required_field(sample: Sample) -> None:
    event = sample("HubDecision")
    del event["reason"]
    err = violation("HubDecision", event)
    assert err.field == "reason"
    assert "required field is missing" in str(err)


def test_omitted_nullable_fields_take_their_defaults(sample: Sample) -> None:
    event = sample("IntelligenceReport")
    for key in ("grading", "objects", "locations"):
        del event[key]
    record = from_json("IntelligenceReport", event)
    assert (record["grading"], record["objects"], record["locations"]) == (None, [], [])


def test_unknown_field_is_rejected_not_dropped(sample: Sample) -> None:
    event = sample("HubDecision")
    event["narative"] = "typo"
    err = violation("HubDecision", event)
    assert err.field == "narative"
    assert "unknown field" in err.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2024-03-01T21:30:00", "no timezone"),
        ("2024-03-01T21:30:00+01:00", "not in UTC"),
        ("1 March 2024", "not an ISO-8601 timestamp"),
        (1709328600000, "expected an ISO-8601 UTC timestamp string"),
    ],
)
def test_json_timestamps_must_be_utc_iso_strings(sample: Sample, value: Any, words: str) -> None:
    event = sample("MissingEpisodeEvent")
    event["occurred_at"] = value
    err = violation("MissingEpisodeEvent", event)
    assert err.field == "occurred_at"
    assert err.value == value
    assert words in err.message


def test_sub_millisecond_precision_is_truncated_to_what_avro_keeps(sample: Sample) -> None:
    event = sample("MissingEpisodeEvent")
    event["occurred_at"] = "2024-03-01T21:30:00.123456Z"
    assert from_json("MissingEpisodeEvent", event)["occurred_at"].microsecond == 123000


def test_record_form_rejects_naive_datetimes_and_converts_offsets(sample: Sample) -> None:
    record = from_json("HubDecision", sample("HubDecision"))
    naive = dict(record, occurred_at=datetime(2024, 3, 5, 10, 0))
    with pytest.raises(SchemaViolation) as caught:
        validate("HubDecision", naive)
    assert caught.value.field == "occurred_at"
    plus_one = timezone(timedelta(hours=1))
    shifted = dict(record, occurred_at=datetime(2024, 3, 5, 11, 0, tzinfo=plus_one))
    assert validate("HubDecision", shifted)["occurred_at"] == datetime(2024, 3, 5, 10, 0, tzinfo=UTC)


def test_reported_long_before_it_occurred_is_rejected(sample: Sample) -> None:
    event = sample("HubDecision")
    event["reported_at"] = "2024-03-05T09:00:00Z"
    err = violation("HubDecision", event)
    assert err.field == "reported_at"
    assert "reported before it occurred" in err.message


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("reported_missing", "risk_level"),
        ("reported_missing", "missing_from"),
        ("return_interview", "interview_outcome"),
    ],
)
def test_missing_episode_kind_requires_its_fields(sample: Sample, kind: str, field: str) -> None:
    event = sample("MissingEpisodeEvent")
    event.update(kind=kind, last_seen=None, placing_authority=None, host_authority=None, missing_from=None)
    event["risk_level"] = None if kind != "reported_missing" or field == "risk_level" else "low"
    event["missing_from"] = "home" if kind == "reported_missing" and field != "missing_from" else None
    err = violation("MissingEpisodeEvent", event)
    assert err.field == field
    assert f"required when kind is {kind}" in err.message


def test_missing_from_care_requires_placing_and_host_authority(sample: Sample) -> None:
    event = sample("MissingEpisodeEvent")
    event["placing_authority"] = None
    err = violation("MissingEpisodeEvent", event)
    assert err.field == "placing_authority"
    assert "missing from care" in err.message


def test_fields_of_another_kind_are_rejected(sample: Sample) -> None:
    event = sample("MissingEpisodeEvent")
    event["interview_outcome"] = "completed"
    err = violation("MissingEpisodeEvent", event)
    assert (err.field, err.value) == ("interview_outcome", "completed")
    assert "not given when kind is reported_missing" in err.message


def test_found_event_needs_no_location(sample: Sample) -> None:
    event = sample("MissingEpisodeEvent")
    event.update(
        kind="found_or_returned",
        risk_level=None,
        missing_from=None,
        placing_authority=None,
        host_authority=None,
        last_seen=None,
    )
    assert from_json("MissingEpisodeEvent", event)["found"] is None


@pytest.mark.parametrize(
    ("location", "field"),
    [
        ({"lat": 52.7}, "last_seen.lon"),
        ({"lat": 95.0, "lon": 0.0}, "last_seen.lat"),
        ({"postcode": "le11 3ab"}, "last_seen.postcode"),
        ({"uprn": 0}, "last_seen.uprn"),
        ({}, "last_seen"),
    ],
)
def test_location_checks(sample: Sample, location: dict[str, Any], field: str) -> None:
    event = sample("MissingEpisodeEvent")
    event["last_seen"] = location
    assert violation("MissingEpisodeEvent", event).field == field


def test_risk_level_set_requires_a_level(sample: Sample) -> None:
    event = sample("HubDecision")
    event["risk_level"] = None
    assert violation("HubDecision", event).field == "risk_level"


def test_contact_phone_must_look_like_a_uk_number(sample: Sample) -> None:
    event = sample("HubDecision")
    event["contact_phone"] = "call the hub"
    err = violation("HubDecision", event)
    assert (err.field, err.value) == ("contact_phone", "call the hub")


def test_inactive_flag_needs_a_reason(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event["status_reason"] = None
    err = violation("HealthCseFlag", event)
    assert err.field == "status_reason"
    assert "stated reason" in err.message


def test_active_flag_needs_no_reason(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event.update(status="active", status_reason=None, period_end=None)
    assert from_json("HealthCseFlag", event)["period_start"] == date(2024, 3, 5)


def test_flag_code_must_be_one_of_the_two_snomed_codes(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event["code"] = "123456"
    err = violation("HealthCseFlag", event)
    assert (err.field, err.value) == ("code", "123456")
    assert "716565009" in err.message


def test_flag_display_must_match_its_code(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event["code"] = "713834002"
    err = violation("HealthCseFlag", event)
    assert err.field == "display"
    assert "Victim of child sexual exploitation" in err.message


def test_flag_carries_nothing_beyond_the_allowed_fields(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event["narrative"] = "must never reach health"
    assert violation("HealthCseFlag", event).field == "narrative"


def test_health_flag_schema_fields_are_exactly_the_allowed_ones() -> None:
    from schemas.catalogue import schema_json

    fields = {f["name"] for f in schema_json("HealthCseFlag")["fields"]}
    assert fields == {
        "event_id", "occurred_at", "reported_at", "flag_id", "nhs_number", "status", "code", "display",
        "period_start", "period_end", "author", "owning_authority", "contact_phone", "status_reason",
    }  # fmt: skip


def test_flag_period_cannot_end_before_it_starts(sample: Sample) -> None:
    event = sample("HealthCseFlag")
    event["period_end"] = "2024-01-01"
    assert violation("HealthCseFlag", event).field == "period_end"


def test_alert_window_and_evidence(sample: Sample) -> None:
    event = sample("Alert")
    event["window_end"] = "2023-12-31T00:00:00Z"
    assert violation("Alert", event).field == "window_end"
    event = sample("Alert")
    event["evidence"] = []
    assert violation("Alert", event).field == "evidence"


def test_alert_settings_values_are_strings(sample: Sample) -> None:
    event = sample("Alert")
    event["settings"] = {"count": 3}
    err = violation("Alert", event)
    assert err.field == "settings['count']"


def test_dead_letter_bytes_travel_as_base64(sample: Sample) -> None:
    record = from_json("DeadLetter", sample("DeadLetter"))
    assert record["key"] == b"pk_child"
    event = sample("DeadLetter")
    event["value"] = "not base64!"
    assert violation("DeadLetter", event).field == "value"


def test_dead_letter_partition_and_offset_go_together(sample: Sample) -> None:
    event = sample("DeadLetter")
    event["original_offset"] = None
    assert violation("DeadLetter", event).field == "original_offset"
    event = sample("DeadLetter")
    event.update(stage="publish", original_partition=None, original_offset=None, key=None)
    assert from_json("DeadLetter", event)["original_partition"] is None


def test_a_json_event_must_be_an_object() -> None:
    err = violation("Alert", [])  # type: ignore[arg-type]
    assert err.field == ""
    assert err.message == "expected an object for record Alert, found array"


def test_unknown_schema_name() -> None:
    with pytest.raises(UnknownSchema, match="known schemas: IntelligenceReport"):
        from_json("Referral", {})


@pytest.mark.parametrize("name", ["IntelligenceReport", "MissingEpisodeEvent", "HubDecision"])
def test_an_event_before_1900_names_its_field(name: str, sample: Sample) -> None:
    event = {**sample(name), "occurred_at": "1899-12-31T23:59:59Z", "reported_at": "1899-12-31T23:59:59Z"}
    err = violation(name, event)
    assert err.field == "occurred_at"
    assert "before 1900" in str(err)


@pytest.mark.parametrize("name", ["IntelligenceReport", "MissingEpisodeEvent", "HubDecision"])
def test_an_event_dated_after_its_publication_is_refused_naming_the_field(name: str, sample: Sample) -> None:
    """9999-12-31 passes every structural check, and overflowed a deadline in the rules."""
    published = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    record = from_json(name, {**sample(name), "occurred_at": "9999-12-31T00:00:00Z",
                              "reported_at": "9999-12-31T00:00:00Z"})
    with pytest.raises(SchemaViolation) as caught:
        check_not_future(record, published)
    assert caught.value.field == "occurred_at"
    assert "datetime(9999, 12, 31" in str(caught.value) and "in the future" in str(caught.value)
    on_time = {**record, "occurred_at": published + timedelta(minutes=4), "reported_at": published}
    check_not_future(on_time, published)  # within the clock skew
    late = {**on_time, "reported_at": published + timedelta(minutes=6)}
    with pytest.raises(SchemaViolation, match="reported_at"):
        check_not_future(late, published)
