import json
from datetime import UTC, datetime, timedelta

import h3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_factories import day, ids, interview, missing, reissue, report, returned

from streams.rules import (
    HotspotSettings,
    LateEventError,
    Location,
    MisroutedEventError,
    RuleInputError,
    identity,
)
from streams.rules import hotspot as rule
from streams.rules._json import dumps
from streams.rules.alerts import Alert, alert_id

DEFAULT = HotspotSettings()
WEEKLY = HotspotSettings(days=7)
SECOND = timedelta(seconds=1)
MONDAY = datetime(2026, 1, 5, tzinfo=UTC)

# A coarse (resolution 6) cell in Leeds and its centre fine cell, whose 3-ring disk stays
# inside it, so single-cell tests involve one state key only.
COARSE = h3.cell_to_parent(h3.latlng_to_cell(53.7997, -1.5492, 8), 6)
CENTRE = h3.cell_to_center_child(COARSE, 8)
# A fine cell on the coarse cell's edge: its neighbours have more than one parent.
EDGE = min(c for c in h3.cell_to_children(COARSE, 8)
           if len({h3.cell_to_parent(n, 6) for n in h3.grid_disk(c, 1)}) > 1)


def at_cell(cell: str) -> Location:
    return Location(*h3.cell_to_latlng(cell))


def ring(cell: str, k: int) -> str:
    return min(h3.grid_ring(cell, k))


def sightings(n: int, cell: str = CENTRE, when=None, prefix: str = "r", **kw) -> list:
    """n reports at one cell, an hour apart from ``when`` (day 0), two agencies, two children."""
    when = when or day(0)
    return [report(f"{prefix}{i}", when + timedelta(hours=i), locations=[at_cell(cell)],
                   agency=("police", "school")[i % 2], children=[f"c{i % 2}"], **kw)
            for i in range(n)]


def period_id(start: datetime, settings: HotspotSettings = DEFAULT, cell: str = COARSE) -> str:
    """The id of ``cell``'s alert for the period starting at ``start``."""
    return alert_id("hotspot", cell, [start.isoformat()], identity(settings))


def route(events: list, settings: HotspotSettings = DEFAULT) -> tuple[dict, list[Alert]]:
    """What the adapter does: each event to every key it concerns, state per key."""
    states: dict[str, rule.HotspotState] = {}
    alerts: list[Alert] = []
    for event in events:
        for key in rule.keys_for_event(event, settings):
            states[key], raised = rule.apply(states.get(key) or rule.initial(key), event, settings)
            alerts += raised
    return states, alerts


def test_fixture_cells_are_where_the_tests_assume() -> None:
    assert {h3.cell_to_parent(c, 6) for c in h3.grid_disk(CENTRE, 3)} == {COARSE}
    assert len(rule.keys_for(at_cell(EDGE), DEFAULT)) > 1


def test_five_reports_from_two_agencies_about_two_children_raise_a_hotspot() -> None:
    _, [alert] = route(sightings(5))
    assert (alert.rule, alert.subject_kind, alert.subject) == ("hotspot", "cell", COARSE)
    assert alert.evidence == ("r0", "r1", "r2", "r3", "r4")
    assert (alert.window_end, alert.raised_at) == (day(0) + timedelta(hours=4),) * 2
    assert alert.window_start == alert.window_end - timedelta(days=28)
    assert alert.severity == "medium"


def test_alert_subject_is_the_coarse_cell_never_the_fine_cell() -> None:
    _, [alert] = route(sightings(5))
    assert h3.get_resolution(alert.subject) == DEFAULT.report_resolution
    assert CENTRE not in alert.subject


def test_four_reports_do_not_raise() -> None:
    assert route(sightings(4))[1] == []


def test_reports_from_one_agency_do_not_raise() -> None:
    events = [report(f"r{i}", day(i), locations=[at_cell(CENTRE)], children=[f"c{i}"]) for i in range(6)]
    assert route(events)[1] == []


def test_reports_about_one_child_do_not_raise() -> None:
    events = [report(f"r{i}", day(i), locations=[at_cell(CENTRE)], agency=f"a{i}", children=["c"])
              for i in range(6)]
    assert route(events)[1] == []


def test_alert_id_names_the_cell_and_the_period_not_the_report() -> None:
    _, [alert] = route(sightings(5))
    assert alert.alert_id == period_id(rule.period_start(day(0), DEFAULT))


def test_periods_are_iso_weeks_when_days_is_seven() -> None:
    thursday, sunday_night = datetime(2026, 1, 1, 12, tzinfo=UTC), MONDAY - SECOND
    assert rule.period_start(thursday, WEEKLY) == datetime(2025, 12, 29, tzinfo=UTC)
    assert rule.period_start(MONDAY, WEEKLY) == MONDAY
    assert rule.period_start(sunday_night, WEEKLY) == MONDAY - timedelta(days=7)


def test_periods_of_more_days_are_counted_from_monday_5_january_1970() -> None:
    assert rule.period_start(rule.EPOCH, DEFAULT) == rule.EPOCH
    assert rule.period_start(day(0), DEFAULT) == datetime(2025, 12, 22, tzinfo=UTC)
    assert rule.period_start(day(0), DEFAULT).weekday() == 0


def test_a_sixth_report_in_the_same_period_raises_nothing_more() -> None:
    _, alerts = route(sightings(6))
    assert [a.evidence for a in alerts] == [("r0", "r1", "r2", "r3", "r4")]


def test_a_qualifying_report_in_the_next_period_raises_a_new_alert() -> None:
    first = rule.period_start(day(0), DEFAULT)
    following = first + timedelta(days=DEFAULT.days)
    events = sightings(5) + sightings(1, when=following, prefix="next")
    _, alerts = route(events)
    assert [a.alert_id for a in alerts] == [period_id(first), period_id(following)]
    assert alerts[1].raised_at == following
    assert alerts[1].evidence == ("next0", "r0", "r1", "r2", "r3", "r4")


def test_the_same_cluster_seen_over_two_weeks_gives_exactly_two_alerts() -> None:
    daily = [report(f"d{i}", MONDAY + timedelta(days=i, hours=12), locations=[at_cell(CENTRE)],
                    agency=("police", "school")[i % 2], children=[f"c{i % 3}"]) for i in range(14)]
    _, alerts = route(daily, WEEKLY)
    assert [a.alert_id for a in alerts] == [period_id(MONDAY, WEEKLY),
                                            period_id(MONDAY + timedelta(days=7), WEEKLY)]
    assert [a.raised_at.date().isoformat() for a in alerts] == ["2026-01-09", "2026-01-12"]
    assert {a.subject for a in alerts} == {COARSE}


def test_a_late_report_completing_an_earlier_period_fires_that_period() -> None:
    week = [report(f"w{i}", MONDAY + timedelta(days=i), locations=[at_cell(CENTRE)],
                   agency=("police", "school")[i % 2], children=[f"c{i % 2}"]) for i in range(4)]
    next_monday = sightings(1, when=MONDAY + timedelta(days=7), prefix="m")
    friday = sightings(1, when=MONDAY + timedelta(days=4), prefix="late")
    _, alerts = route(week + next_monday + friday, WEEKLY)
    # Monday's window already holds five reports; Friday arrives late and completes week one.
    assert [a.alert_id for a in alerts] == [period_id(MONDAY + timedelta(days=7), WEEKLY),
                                            period_id(MONDAY, WEEKLY)]
    assert alerts[1].raised_at == MONDAY + timedelta(days=4)
    assert alerts[1].evidence == ("late0", "w0", "w1", "w2", "w3")


def test_arrival_order_can_change_the_evidence_but_never_the_id() -> None:
    r0, r1, r2, r3, r4, r5 = sightings(6)
    _, [in_order] = route([r0, r1, r2, r3, r4, r5])
    _, [shuffled] = route([r5, r3, r2, r1, r0, r4])
    assert in_order.alert_id == shuffled.alert_id
    assert in_order.evidence == ("r0", "r1", "r2", "r3", "r4")
    assert shuffled.evidence == ("r0", "r1", "r2", "r3", "r5")


def test_reports_in_a_period_that_has_fired_are_not_evaluated_again(monkeypatch) -> None:
    states, _ = route(sightings(5))

    def must_not_run(*args: object) -> None:
        raise AssertionError("evaluated an anchor of a period that has fired")

    monkeypatch.setattr(rule, "_evaluate", must_not_run)
    more = sightings(3, when=day(1), prefix="more")
    state = states[COARSE]
    for event in more:
        state, alerts = rule.apply(state, event, DEFAULT)
        assert alerts == []
    assert len(state.observations) == 8


def test_reports_in_neighbouring_cells_count_together() -> None:
    cells = [CENTRE, *sorted(h3.grid_ring(CENTRE, 1))[:4]]
    events = [ev for i, cell in enumerate(cells) for ev in sightings(1, cell, day(i), prefix=f"n{i}-")]
    events = [report(e.event_id, e.occurred_at, locations=e.locations, agency=("police", "school")[i % 2],
                     children=[f"c{i}"]) for i, e in enumerate(events)]
    assert len(route(events)[1]) == 1


def test_reports_two_rings_apart_share_the_cell_between_them() -> None:
    far = sightings(3, CENTRE) + sightings(2, ring(CENTRE, 2), day(1), prefix="f")
    assert len(route(far)[1]) == 1


def test_reports_three_rings_apart_do_not_cluster() -> None:
    apart = sightings(3, CENTRE) + sightings(2, ring(CENTRE, 3), day(1), prefix="f")
    assert route(apart)[1] == []


def test_report_exactly_window_days_before_the_anchor_counts() -> None:
    events = sightings(4) + sightings(1, when=day(28) + timedelta(hours=0), prefix="x")
    # The anchor x0 at day 28 sees r0 at day 0 exactly 28 days earlier.
    assert [a.raised_at for a in route(events)[1]] == [day(28)]


def test_report_window_days_and_one_second_before_the_anchor_does_not_count() -> None:
    events = sightings(4) + sightings(1, when=day(28) + SECOND, prefix="x")
    assert route(events)[1] == []


def test_missing_and_returned_locations_count_as_observations() -> None:
    here = at_cell(CENTRE)
    events = [
        missing("e1", day(0), child="a", location=here),
        returned("e1", day(1), child="a", location=here),
        missing("e2", day(2), child="b", location=here, agency="social-care"),
        *sightings(2, when=day(3)),
    ]
    _, [alert] = route(events)
    assert alert.evidence == ("missing-e1", "missing-e2", "r0", "r1", "returned-e1")


def test_events_without_a_location_are_ignored() -> None:
    state = rule.initial(COARSE)
    for event in (missing("e1", day(0)), interview("e1", day(1)), report("r", day(0), children=["a"])):
        assert rule.keys_for_event(event, DEFAULT) == []
        assert rule.apply(state, event, DEFAULT) == (state, [])


def test_event_far_from_the_cell_is_misrouted() -> None:
    elsewhere = report("r", day(0), locations=[Location(51.5, -0.12)])
    with pytest.raises(MisroutedEventError, match=r"event 'r' has no location near cell"):
        rule.apply(rule.initial(COARSE), elsewhere, DEFAULT)


def test_observations_of_two_events_are_refused_together() -> None:
    [first] = rule.observations_of(report("r1", day(0), locations=[at_cell(CENTRE)]))
    [second] = rule.observations_of(report("r2", day(0), locations=[at_cell(CENTRE)]))
    with pytest.raises(RuleInputError, match="observations of one event must share its id and time"):
        rule.add(rule.initial(COARSE), [first, second], DEFAULT)


def test_same_report_twice_counts_once() -> None:
    events = sightings(4)
    assert route(events + events[:1])[1] == []


def test_report_with_two_locations_in_one_neighbourhood_counts_once() -> None:
    two = report("two", day(0), locations=[at_cell(CENTRE), at_cell(ring(CENTRE, 1))],
                  agency="school", children=["z"])
    assert route([two, *sightings(3, when=day(1))])[1] == []


def test_handling_code_c_conditions_travel_with_the_alert() -> None:
    events = sightings(4) + sightings(1, when=day(1), prefix="c", handling_code="C",
                                      handling_conditions="police only")
    _, [alert] = route(events)
    assert alert.handling_conditions == ("police only",)


def test_keys_for_a_point_inside_a_coarse_cell_is_that_cell() -> None:
    assert rule.keys_for(at_cell(CENTRE), DEFAULT) == [COARSE]


def test_cluster_on_a_coarse_edge_alerts_once_per_coarse_cell_for_its_own_centres() -> None:
    states, alerts = route(sightings(5, EDGE))
    keys = rule.keys_for(at_cell(EDGE), DEFAULT)
    assert sorted(states) == keys
    assert h3.cell_to_parent(EDGE, 6) in {a.subject for a in alerts}
    assert len({(a.subject, a.raised_at) for a in alerts}) == len(alerts)
    assert {a.subject for a in alerts} <= set(keys)
    # Every alert's key owns a fine cell within one ring of the cluster.
    for alert in alerts:
        assert any(h3.cell_to_parent(c, 6) == alert.subject for c in h3.grid_disk(EDGE, 1))


def test_advance_prunes_observations_older_than_days_plus_lateness() -> None:
    states, _ = route(sightings(2))
    state, alerts = rule.advance(states[COARSE], day(58), DEFAULT)
    assert (alerts, len(state.observations)) == ([], 2)
    state, _ = rule.advance(state, day(58) + SECOND, DEFAULT)
    assert [o.event_id for o in state.observations] == ["r1"]


def test_advance_forgets_periods_that_ended_before_the_pruning_horizon() -> None:
    states, _ = route(sightings(5))
    start = rule.period_start(day(0), DEFAULT)
    assert [p for p, _ in states[COARSE].fired] == [start.isoformat()]
    # The horizon is watermark - days - lateness (58 days); the period ends 28 days after it starts.
    ends_at_horizon = start + timedelta(days=28 + 58)
    state, _ = rule.advance(states[COARSE], ends_at_horizon, DEFAULT)
    assert len(state.fired) == 1
    state, _ = rule.advance(state, ends_at_horizon + SECOND, DEFAULT)
    assert state.fired == ()


def test_advance_drops_fired_entries_kept_by_the_per_report_rule() -> None:
    old = rule.HotspotState(cell=COARSE, fired=(("r4", "0" * 32),))
    state, _ = rule.advance(old, day(0), DEFAULT)
    assert state.fired == ()


def test_event_older_than_watermark_minus_lateness_is_refused() -> None:
    state, _ = rule.advance(rule.initial(COARSE), day(40), DEFAULT)
    with pytest.raises(LateEventError):
        rule.apply(state, sightings(1)[0], DEFAULT)


def test_state_round_trips_through_json() -> None:
    states, _ = route(sightings(5, handling_code="C", handling_conditions="police only"))
    state, _ = rule.advance(states[COARSE], day(1), DEFAULT)
    assert rule.HotspotState.from_json(json.loads(json.dumps(state.to_json()))) == state


# --- properties -------------------------------------------------------------------------

SMALL = HotspotSettings(days=5, min_reports=3, min_agencies=2, min_children=2)
PLACES = [CENTRE, ring(CENTRE, 1), ring(CENTRE, 2), EDGE, ring(EDGE, 1), ring(EDGE, 2)]

observations = st.lists(
    st.tuples(st.sampled_from(PLACES), st.integers(0, 15 * 24), st.sampled_from(["police", "school"]),
              st.sampled_from(["a", "b", "c"])),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(spec=observations, data=st.data())
def test_any_arrival_order_with_duplicates_fires_the_same_alert_ids(spec, data) -> None:
    events = [report(f"r{i}", day(0) + timedelta(hours=h), locations=[at_cell(cell)], agency=agency,
                     children=[child]) for i, (cell, h, agency, child) in enumerate(spec)]
    shuffled = data.draw(st.permutations(events + events[: data.draw(st.integers(0, 3))]))
    _, in_order = route(sorted(events, key=lambda e: e.occurred_at), SMALL)
    _, any_order = route(shuffled, SMALL)
    assert ids(any_order) == ids(in_order)
    assert len(any_order) == len(ids(any_order))
    # At most one alert per coarse cell per period, named by both.
    periods = [(a.subject, rule.period_start(a.raised_at, SMALL)) for a in any_order]
    assert len(set(periods)) == len(periods)
    assert ids(any_order) == {period_id(start, SMALL, cell) for cell, start in periods}


def test_state_round_trips_through_its_parts() -> None:
    events = sightings(5, handling_code="C", handling_conditions="police only")
    events += sightings(3, when=day(3), prefix="later")
    states, _ = route(events)
    state, _ = rule.advance(states[COARSE], day(4), DEFAULT)
    parts = rule.parts(state)
    assert sorted(parts) == ["2026-01-01", "2026-01-04", rule.HEAD]  # day(0) is 2026-01-01
    encoded = {name: dumps(part) for name, part in parts.items()}
    assert rule.from_parts(COARSE, encoded) == state


def test_an_event_changes_its_own_days_part_and_the_head_only() -> None:
    states, _ = route(sightings(5) + sightings(2, when=day(3), prefix="later"))
    before = rule.parts(states[COARSE])
    after = rule.parts(rule.apply(states[COARSE], sightings(1, when=day(3), prefix="new")[0], DEFAULT)[0])
    assert {name for name in after if after[name] is not before.get(name)} == {rule.HEAD, "2026-01-04"}


def test_unreadable_parts_are_refused_naming_the_part() -> None:
    states, _ = route(sightings(5))
    encoded = {name: dumps(part) for name, part in rule.parts(states[COARSE]).items()}
    with pytest.raises(RuleInputError, match="no 'head' part"):
        rule.from_parts(COARSE, {k: v for k, v in encoded.items() if k != rule.HEAD})
    with pytest.raises(RuleInputError, match="part 'tuesday' is neither"):
        rule.from_parts(COARSE, {**encoded, "tuesday": b"[]"})
    with pytest.raises(RuleInputError, match=r"2026-01-01\[0\]\.event_id"):
        rule.from_parts(COARSE, {**encoded, "2026-01-01": b'[{"event_id": 7}]'})


# --- re-issued reports: counted once, by report id ---------------------------------------------


def test_three_reports_and_two_gradings_of_them_raise_no_hotspot() -> None:
    originals = sightings(3)
    assert route([*originals, reissue(originals[0], "g0"), reissue(originals[1], "g1")])[1] == []


def test_gradings_arriving_first_count_with_their_reports_once() -> None:
    originals = sightings(5)
    gradings = [reissue(r, f"g{i}") for i, r in enumerate(originals[:4])]
    _, alerts = route(gradings + originals[:4])
    assert alerts == []
    _, [alert] = route(gradings + originals)
    assert alert.evidence == ("r0", "r1", "r2", "r3", "r4")  # each report by its first issue


def test_a_grading_s_conditions_travel_with_the_alert_in_place_of_the_report_s() -> None:
    originals = sightings(5)
    graded = reissue(originals[2], "g2", handling_code="C", handling_conditions="police only")
    _, [alert] = route([*originals[:4], graded, originals[4]])
    assert alert.handling_conditions == ("police only",)
    assert alert.evidence == ("r0", "r1", "r2", "r3", "r4")


@settings(max_examples=150, deadline=None)
@given(spec=observations, data=st.data())
def test_re_issuing_any_subset_of_reports_in_any_order_changes_no_alert_id(spec, data) -> None:
    events = [report(f"r{i}", day(0) + timedelta(hours=h), locations=[at_cell(cell)], agency=agency,
                     children=[child]) for i, (cell, h, agency, child) in enumerate(spec)]
    chosen = data.draw(st.sets(st.integers(0, len(events) - 1))) if events else set()
    gradings = [reissue(events[i], f"g{i}", handling_code="C", handling_conditions=f"cond {i}")
                for i in sorted(chosen)]
    _, plain = route(sorted(events, key=lambda e: e.occurred_at), SMALL)
    _, reissued = route(data.draw(st.permutations(events + gradings)), SMALL)
    assert ids(reissued) == ids(plain)
    assert len(reissued) == len(ids(reissued))
