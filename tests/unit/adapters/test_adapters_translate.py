"""Translation between Avro records and rule events, and rule alerts back to Avro records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from streams import rules, translate
from streams.rules import hotspot
from streams.rules.alerts import RuleName, Severity, SubjectKind, new_alert
from tests.support import events

T0 = datetime(2024, 3, 1, 21, 30, tzinfo=UTC)
CARE = {"missing_from": "care", "placing_authority": "E08000025", "host_authority": "E10000018"}


def missing_record(kind: str, **fields: Any) -> dict[str, Any]:
    return schemas.from_json("MissingEpisodeEvent", events.missing("pk_child", "ep-1", kind, T0, **fields))


def intelligence_record(**changes: Any) -> dict[str, Any]:
    event = events.intelligence("r1", T0, children=["pk_child"])
    event.update(changes)
    return schemas.from_json("IntelligenceReport", event)


def _person(key: str, role: str) -> dict[str, Any]:
    return {"person_key": key, "role": role}


# -- missing episodes ---------------------------------------------------------------------------


def test_reported_missing_becomes_missing_reported_with_where_last_seen() -> None:
    record = missing_record("reported_missing", risk_level="high", last_seen=events.located(52.77, -1.2))
    event = translate.missing_event(record)
    assert event == rules.MissingReported(
        event_id=record["event_id"], child_id="pk_child", episode_id="ep-1", occurred_at=T0,
        area=events.AREA, agency="Leicestershire Police", location=rules.Location(52.77, -1.2),
        risk_level="high",
    )


def test_reported_missing_without_coordinates_has_no_location() -> None:
    record = missing_record("reported_missing", **CARE, last_seen={"postcode": "LE11 3AB"})
    event = translate.missing_event(record)
    assert isinstance(event, rules.MissingReported)
    assert event.location is None


def test_found_or_returned_becomes_child_returned_with_where_found() -> None:
    record = missing_record("found_or_returned", found=events.located(52.6, -1.1))
    event = translate.missing_event(record)
    assert isinstance(event, rules.ChildReturned)
    assert (event.child_id, event.episode_id, event.occurred_at) == ("pk_child", "ep-1", T0)
    assert event.location == rules.Location(52.6, -1.1)


def test_found_or_returned_without_a_place_has_no_location() -> None:
    event = translate.missing_event(missing_record("found_or_returned"))
    assert isinstance(event, rules.ChildReturned)
    assert event.location is None


@pytest.mark.parametrize("outcome", ["completed", "declined"])
def test_return_interview_carries_its_outcome(outcome: str) -> None:
    event = translate.missing_event(missing_record("return_interview", interview_outcome=outcome))
    assert isinstance(event, rules.ReturnInterview)
    assert (event.child_id, event.episode_id, event.outcome) == ("pk_child", "ep-1", outcome)


def test_risk_reviewed_is_used_by_no_rule() -> None:
    assert translate.missing_event(missing_record("risk_reviewed", risk_level="low")) is None


# -- intelligence -------------------------------------------------------------------------------


def test_children_are_the_sorted_distinct_children_at_risk() -> None:
    persons = [_person("pk_b", "child_at_risk"), _person("pk_adult", "adult_of_concern"),
               _person("pk_a", "child_at_risk"), _person("pk_friend", "associate")]
    assert translate.intelligence_event(intelligence_record(persons=persons)).children == ("pk_a", "pk_b")


def test_adults_of_concern_become_adult_entities_and_associates_do_not() -> None:
    persons = [_person("pk_child", "child_at_risk"), _person("pk_adult", "adult_of_concern"),
               _person("pk_friend", "associate")]
    report = translate.intelligence_event(intelligence_record(persons=persons))
    assert report.entities == (rules.Entity("adult", "pk_adult"),)


def test_vehicles_are_normalised_so_two_spellings_are_one_entity() -> None:
    objects = [{"kind": "vehicle", "value": "ab12 cde"}, {"kind": "vehicle", "value": " AB12CDE "}]
    report = translate.intelligence_event(intelligence_record(objects=objects))
    assert report.entities == (rules.Entity("vehicle", rules.normalise_vrm("ab12 cde")),)
    assert report.entities[0].key == "AB12CDE"


def test_phones_and_handles_become_entities_and_other_objects_are_dropped() -> None:
    objects = [
        {"kind": "phone", "value": " 07700 900123 "},
        {"kind": "online_handle", "value": "@someone"},
        {"kind": "other", "value": "a gold necklace"},
    ]
    report = translate.intelligence_event(intelligence_record(objects=objects))
    assert report.entities == (
        rules.Entity("online_handle", "@someone"), rules.Entity("phone", "07700900123"),
    )


def test_locations_without_coordinates_are_dropped() -> None:
    locations = [
        {"postcode": "LE11 3AB"},
        events.located(52.7721, -1.2062),
        {"premises_name": "Station Hotel", "premises_type": "hotel"},
    ]
    report = translate.intelligence_event(intelligence_record(locations=locations))
    assert report.locations == (rules.Location(52.7721, -1.2062),)


def test_handling_code_c_conditions_are_carried() -> None:
    grading = {"source_evaluation": "B", "intelligence_assessment": 2, "handling_code": "C",
               "handling_conditions": "Share with children's social care only"}
    report = translate.intelligence_event(intelligence_record(grading=grading))
    assert (report.handling_code, report.conditions) == ("C", "Share with children's social care only")


def test_handling_code_p_carries_no_conditions() -> None:
    grading = {"source_evaluation": "A", "intelligence_assessment": 1, "handling_code": "P"}
    report = translate.intelligence_event(intelligence_record(grading=grading))
    assert (report.handling_code, report.handling_conditions, report.conditions) == ("P", None, None)


def test_an_ungraded_partner_report_has_no_handling_code() -> None:
    record = intelligence_record(grading=None)
    report = translate.intelligence_event(record)
    assert (report.handling_code, report.handling_conditions) == (None, None)
    assert (report.event_id, report.occurred_at, report.area, report.agency) == (
        record["event_id"], T0, events.AREA, "Charnwood Youth Project",
    )


def test_a_report_carries_its_report_id_and_when_it_was_reported() -> None:
    record = intelligence_record()
    report = translate.intelligence_event(record)
    assert report.report_id == record["report_id"] != report.event_id
    assert report.reported_at == T0 + timedelta(hours=2)


def test_a_re_keyed_report_written_before_report_ids_travelled_is_its_own_report() -> None:
    data = (b'{"type":"IntelligenceReport","event":{"event_id":"e1","occurred_at":"2024-03-01T21:30:00Z",'
            b'"area":"a","agency":"b","children":["c"],"locations":[],"entities":[],"handling_code":null,'
            b'"handling_conditions":null},"source":"s:0","watermark":"2024-03-01T21:30:00Z"}')
    report, _, _ = translate.event_from_bytes(data)
    assert isinstance(report, rules.IntelligenceReport)
    assert (report.report_id, report.reported_at) == ("e1", None)


# -- re-keyed events on the worker's internal topics ----------------------------------------------

_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    str.strip
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))]),
)
_locations = st.builds(
    rules.Location, st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False)
)
_common = {"event_id": _ids, "child_id": _ids, "episode_id": _ids, "occurred_at": _times}
_rule_events = st.one_of(
    st.builds(
        rules.MissingReported, **_common, area=_ids, agency=_ids, location=st.none() | _locations,
        risk_level=st.sampled_from(["low", "medium", "high"]),
    ),
    st.builds(rules.ChildReturned, **_common, area=_ids, agency=_ids, location=st.none() | _locations),
    st.builds(rules.ReturnInterview, **_common, outcome=st.sampled_from(["completed", "declined"])),
    st.builds(
        rules.IntelligenceReport,
        event_id=_ids, occurred_at=_times, area=_ids, agency=_ids,
        children=st.lists(_ids, max_size=3).map(tuple),
        locations=st.lists(_locations, max_size=3).map(tuple),
        entities=st.lists(
            st.builds(rules.Entity, st.sampled_from(["adult", "vehicle", "phone", "online_handle"]), _ids),
            max_size=3,
        ).map(tuple),
        handling_code=st.none(), handling_conditions=st.none(),
        report_id=st.just("") | _ids, reported_at=st.none() | _times,
    ),
    st.builds(
        rules.IntelligenceReport,
        event_id=_ids, occurred_at=_times, area=_ids, agency=_ids, children=st.just(("c",)),
        locations=st.just(()), entities=st.just(()), handling_code=st.just("C"), handling_conditions=_ids,
    ),
)


@given(_rule_events, _ids, _times)
def test_every_rule_event_round_trips_through_bytes_with_its_source_and_watermark(
    event: rules.RuleEvent, source: str, watermark: datetime
) -> None:
    decoded, decoded_source, decoded_watermark = translate.event_from_bytes(
        translate.event_to_bytes(event, source, watermark)
    )
    assert decoded == event
    assert type(decoded) is type(event)
    assert (decoded_source, decoded_watermark) == (source, watermark)


_GOOD = (
    b'{"type":"ReturnInterview","event":{"event_id":"e1","child_id":"c","episode_id":"ep",'
    b'"occurred_at":"2024-03-01T21:30:00Z","outcome":"completed"},"source":"s:0",'
    b'"watermark":"2024-03-01T21:30:00Z"}'
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", r"re-keyed event: JSON is malformed"),
        (_GOOD.replace(b'"ReturnInterview"', b'"Postcard"'),
         r"re-keyed event\.type must be one of .* got 'Postcard'"),
        (_GOOD.replace(b'"watermark":"2024-03-01T21:30:00Z"', b'"watermark":"2024-03-01T21:30:00"'),
         r"re-keyed event\.watermark: Expected `datetime` with a timezone"),
        (_GOOD.replace(b'"outcome":"completed"', b'"outcome":"lost"'),
         r"ReturnInterview\.outcome: Invalid enum value 'lost'"),
        (_GOOD.replace(b'"event_id":"e1",', b""),
         r"ReturnInterview: Object missing required field `event_id`"),
    ],
)
def test_an_unreadable_re_keyed_event_is_refused_naming_the_field(data: bytes, message: str) -> None:
    with pytest.raises(rules.RuleInputError, match=message):
        translate.event_from_bytes(data)


@given(_rule_events, _ids, _times)
def test_an_events_observations_round_trip_through_bytes_for_a_hotspot_cell(
    event: rules.RuleEvent, source: str, watermark: datetime
) -> None:
    observations = tuple(hotspot.observations_of(event))
    data = translate.observations_to_bytes(observations, source, watermark)
    if not observations:
        with pytest.raises(rules.RuleInputError, match="no located observation"):
            translate.observations_from_bytes(data)
        return
    assert translate.observations_from_bytes(data) == (observations, source, watermark)


@given(_rule_events, _ids, _times)
def test_a_whole_event_sent_to_a_hotspot_cell_by_an_earlier_worker_reads_as_its_observations(
    event: rules.RuleEvent, source: str, watermark: datetime
) -> None:
    data = translate.event_to_bytes(event, source, watermark)
    observations = tuple(hotspot.observations_of(event))
    if not observations:
        with pytest.raises(rules.RuleInputError, match=f"re-keyed {type(event).__name__}: no located"):
            translate.observations_from_bytes(data)
        return
    assert translate.observations_from_bytes(data) == (observations, source, watermark)


_OBSERVED = (
    b'{"type":"Observations","event":[{"event_id":"r1","occurred_at":"2024-03-01T21:30:00Z",'
    b'"lat":52.77,"lon":-1.2,"area":"Leicestershire","agency":"Leicestershire Police",'
    b'"children":["pk_c"],"conditions":null}],"source":"s:0","watermark":"2024-03-01T21:30:00Z"}'
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_OBSERVED.replace(b'"lat":52.77', b'"lat":152.77'),
         r"Observations\[0\]\.lat: Expected `float` <= 90"),
        (_OBSERVED.replace(b'"lon":-1.2', b'"lon":-181.2'),
         r"Observations\[0\]\.lon: Expected `float` >= -180"),
        (_OBSERVED.replace(b'"children":["pk_c"]', b'"children":"pk_c"'), r"Observations\[0\]\.children"),
        (_OBSERVED.replace(b'"Observations"', b'"Postcard"'), r"re-keyed event\.type must be one of"),
        (b'{"type":"Observations","event":[],"source":"s:0","watermark":"2024-03-01T21:30:00Z"}',
         r"re-keyed Observations: no located observation"),
    ],
)
def test_unreadable_re_keyed_observations_are_refused_naming_the_field(data: bytes, message: str) -> None:
    assert translate.observations_from_bytes(_OBSERVED)[0][0].lat == 52.77
    with pytest.raises(rules.RuleInputError, match=message):
        translate.observations_from_bytes(data)


# -- alerts out -----------------------------------------------------------------------------------


def test_a_repeat_missing_alert_becomes_a_valid_alert_record() -> None:
    settings = rules.RepeatMissingSettings()
    state = rules.repeat_missing.initial("pk_child")
    alerts: list[rules.Alert] = []
    for n in range(3):
        record = schemas.from_json(
            "MissingEpisodeEvent",
            events.missing("pk_child", f"ep-{n}", "reported_missing", T0 + timedelta(days=10 * n)),
        )
        event = translate.missing_event(record)
        assert isinstance(event, rules.MissingReported)
        state, raised = rules.repeat_missing.apply(state, event, settings)
        alerts += raised
    [alert] = alerts
    published = alert.raised_at + timedelta(seconds=2)
    record = schemas.validate("Alert", translate.alert_record(alert, published))
    assert (record["alert_id"], record["event_id"]) == (alert.alert_id, alert.alert_id)
    assert (record["occurred_at"], record["reported_at"]) == (alert.raised_at, published)
    assert record["evidence"] == list(alert.evidence)
    assert record["settings"] == {name: str(value) for name, value in alert.settings}


_alerts = st.builds(
    new_alert,
    rule=st.sampled_from(get_args(RuleName)),
    subject_kind=st.sampled_from(get_args(SubjectKind)),
    subject=_ids,
    anchor_ids=st.lists(_ids, min_size=1, max_size=3),
    area=_ids,
    severity=st.sampled_from(get_args(Severity)),
    window_start=st.just(T0 - timedelta(days=90)),
    window_end=st.just(T0),
    evidence=st.lists(_ids, min_size=1, max_size=5),
    raised_at=st.just(T0),
    settings=st.lists(st.tuples(_ids, st.integers(0, 10_000)), max_size=3, unique_by=lambda kv: kv[0]).map(
        tuple
    ),
    handling_conditions=st.lists(_ids, max_size=2),
    resolves=st.none() | _ids,
)


@given(_alerts)
def test_every_alert_record_is_accepted_by_the_alert_schema(alert: rules.Alert) -> None:
    record = schemas.validate("Alert", translate.alert_record(alert, T0 + timedelta(seconds=1)))
    assert (record["rule"], record["subject_kind"], record["subject"]) == (
        alert.rule, alert.subject_kind, alert.subject,
    )
    assert record["handling_conditions"] == list(alert.handling_conditions)
    assert record["resolves"] == alert.resolves
