"""The simulated county: deterministic, valid, in event-time order, and shaped like the domain."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers.simulate import simulate, write_jsonl
from schemas import SchemaViolation, from_json
from schemas.jsonl import parse_line, read_lines

START = date(2024, 1, 1)
Event = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def year() -> list[Event]:
    return list(simulate(1, START, 365, children=300))


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_same_seed_gives_identical_events() -> None:
    assert list(simulate(1, START, 60)) == list(simulate(1, START, 60))


def test_different_seeds_give_different_events() -> None:
    assert list(itertools.islice(simulate(1, START, 30), 50)) != list(
        itertools.islice(simulate(2, START, 30), 50)
    )


def test_every_simulated_event_validates(year: list[Event]) -> None:
    for name, event in year:
        from_json(name, event)


def test_events_come_in_event_time_order_inside_the_window(year: list[Event]) -> None:
    times = [_ts(e["occurred_at"]) for _, e in year]
    assert times == sorted(times)
    assert times[0].date() >= START
    assert times[-1].date() < START + timedelta(days=365)


def test_event_ids_are_unique(year: list[Event]) -> None:
    ids = [e["event_id"] for _, e in year]
    assert len(ids) == len(set(ids))


def test_all_three_input_schemas_and_every_agency_type_appear(year: list[Event]) -> None:
    assert {name for name, _ in year} == {"IntelligenceReport", "MissingEpisodeEvent", "HubDecision"}
    types = {e["agency_type"] for name, e in year if name == "IntelligenceReport"}
    assert types == {
        "police", "health", "social_care", "education", "youth_offending",
        "licensing", "hotel", "taxi", "voluntary",
    }  # fmt: skip
    kinds = Counter(e["kind"] for name, e in year if name != "IntelligenceReport")
    assert set(kinds) == {
        "reported_missing", "found_or_returned", "return_interview", "risk_reviewed",
        "case_opened", "case_closed", "risk_level_set", "strategy_meeting_held",
    }  # fmt: skip


def _episodes_by_child(year: list[Event]) -> dict[str, list[datetime]]:
    by_child: dict[str, list[datetime]] = defaultdict(list)
    for name, e in year:
        if name == "MissingEpisodeEvent" and e["kind"] == "reported_missing":
            by_child[e["person_key"]].append(_ts(e["occurred_at"]))
    return by_child


def test_most_children_go_missing_at_most_once_and_a_few_run_repeatedly(year: list[Event]) -> None:
    by_child = _episodes_by_child(year)
    at_most_once = 300 - sum(1 for times in by_child.values() if len(times) > 1)
    assert at_most_once > 300 * 0.6
    repeat = [
        key
        for key, times in by_child.items()
        if any(times[i + 2] - times[i] <= timedelta(days=90) for i in range(len(times) - 2))
    ]
    assert 3 <= len(repeat) <= 60


def test_some_children_are_placed_out_of_area(year: list[Event]) -> None:
    reports = [e for n, e in year if n == "MissingEpisodeEvent" and e["kind"] == "reported_missing"]
    from_care = [e for e in reports if e["missing_from"] == "care"]
    assert from_care and any(e["placing_authority"] != e["host_authority"] for e in from_care)
    assert any(e["missing_from"] == "home" for e in reports)


def test_return_interviews_mostly_within_72_hours_some_late_some_never(year: list[Event]) -> None:
    found: dict[str, datetime] = {}
    interviewed: dict[str, datetime] = {}
    for name, e in year:
        if name == "MissingEpisodeEvent" and e["kind"] == "found_or_returned":
            found[e["episode_id"]] = _ts(e["occurred_at"])
        elif name == "MissingEpisodeEvent" and e["kind"] == "return_interview":
            interviewed[e["episode_id"]] = _ts(e["occurred_at"])
    last = max(found.values())
    settled = [ep for ep, t in found.items() if t < last - timedelta(days=11)]
    on_time = sum(
        1 for ep in settled if ep in interviewed and interviewed[ep] - found[ep] <= timedelta(hours=72)
    )
    late = sum(1 for ep in settled if ep in interviewed and interviewed[ep] - found[ep] > timedelta(hours=72))
    never = sum(1 for ep in settled if ep not in interviewed)
    assert on_time > 0.6 * len(settled)
    assert late > 0 and never > 0


def test_police_grade_partners_do_not_and_some_reports_carry_conditions(year: list[Event]) -> None:
    reports = [e for n, e in year if n == "IntelligenceReport"]
    first_issue: dict[str, dict[str, Any]] = {}
    for e in reports:
        first_issue.setdefault(e["report_id"], e)
        if e["agency_type"] == "police":
            assert e["grading"] is not None
    assert all(e["grading"] is None for e in first_issue.values() if e["agency_type"] != "police")
    regraded = [e for e in reports if e["agency_type"] != "police" and e["grading"] is not None]
    assert regraded and all(e["event_id"] != first_issue[e["report_id"]]["event_id"] for e in regraded)
    conditional = [e for e in reports if e["grading"] and e["grading"]["handling_code"] == "C"]
    assert conditional and all(e["grading"]["handling_conditions"] for e in conditional)


def test_an_adult_or_vehicle_is_seen_with_several_children(year: list[Event]) -> None:
    children_by_entity: dict[str, set[str]] = defaultdict(set)
    for name, e in year:
        if name != "IntelligenceReport":
            continue
        kids = {p["person_key"] for p in e["persons"] if p["role"] == "child_at_risk"}
        entities = [p["person_key"] for p in e["persons"] if p["role"] == "adult_of_concern"]
        entities += [o["value"] for o in e["objects"] if o["kind"] == "vehicle"]
        for entity in entities:
            children_by_entity[entity] |= kids
    assert max(len(kids) for kids in children_by_entity.values()) >= 3


def test_sightings_cluster_at_a_couple_of_hotels(year: list[Event]) -> None:
    places = Counter(
        loc["premises_name"]
        for name, e in year
        if name == "IntelligenceReport"
        for loc in e["locations"]
        if loc["premises_type"] == "hotel"
    )
    (top, top_count), (_, second_count), *rest = places.most_common()
    assert "Hotel" in top or "Lodge" in top or "Inn" in top
    typical = sum(c for _, c in rest) / max(1, len(rest))
    assert top_count > 2 * typical and second_count > 2 * typical


def test_vrms_and_phones_look_real_but_are_synthetic(year: list[Event]) -> None:
    objects = [o for n, e in year if n == "IntelligenceReport" for o in e["objects"]]
    vrms = {o["value"] for o in objects if o["kind"] == "vehicle"}
    phones = {o["value"] for o in objects if o["kind"] == "phone"}
    assert vrms and all(len(v) == 8 and v[:2].isalpha() and v[2:4].isdigit() and v[4] == " " for v in vrms)
    assert phones and all(p.startswith("07700 900") for p in phones)  # Ofcom drama range


def test_nhs_numbers_are_in_the_test_range_and_stable_per_child(year: list[Event]) -> None:
    by_child: dict[str, set[str | None]] = defaultdict(set)
    for name, e in year:
        if name == "MissingEpisodeEvent":
            by_child[e["person_key"]].add(e["nhs_number"])
    for numbers in by_child.values():
        assert len(numbers) == 1
        (number,) = numbers
        assert number is None or number.startswith("999")


def test_duplicates_repeat_the_same_event_straight_after() -> None:
    events = list(simulate(3, START, 60, duplicates=0.2))
    repeats = sum(1 for a, b in itertools.pairwise(events) if a[1]["event_id"] == b[1]["event_id"])
    assert repeats > 0.1 * len(events)
    assert list(simulate(3, START, 60, duplicates=0.2)) == events


def test_zero_days_or_children_gives_nothing_or_no_child_events() -> None:
    assert list(simulate(1, START, 0)) == []
    assert all(name == "IntelligenceReport" for name, _ in simulate(1, START, 30, children=0))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        list(simulate(1, START, 1, duplicates=2.0))
    with pytest.raises(ValueError, match="days"):
        list(simulate(1, START, -1))


def test_write_jsonl_lines_route_by_schema_and_read_back(tmp_path: Path) -> None:
    events = list(simulate(5, START, 30))
    path = tmp_path / "events.jsonl"
    assert write_jsonl(events, path) == len(events)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(events)
    assert set(json.loads(lines[0])) == {"schema", "event"}
    back = [(name, event) for _, name, event in read_lines(lines)]
    assert back == events
    buffer = io.StringIO()
    write_jsonl(events[:3], buffer)
    assert buffer.getvalue().count("\n") == 3


def test_a_line_with_an_unknown_schema_names_it() -> None:
    with pytest.raises(SchemaViolation) as caught:
        parse_line('{"schema": "Referral", "event": {}}')
    assert (caught.value.field, caught.value.value) == ("schema", "Referral")


def test_a_bigger_county_validates_too() -> None:
    count = 0
    for name, event in simulate(11, date(2023, 6, 1), 90, children=3000, duplicates=0.01):
        from_json(name, event)
        count += 1
    assert count > 10_000
