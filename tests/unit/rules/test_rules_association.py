import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_factories import day, fold, ids, missing, reissue, report

from streams.rules import AssociationSettings, Entity, LateEventError, MisroutedEventError, normalise_vrm
from streams.rules import association as rule
from streams.rules.alerts import alert_id
from streams.rules.settings import identity

DEFAULT = AssociationSettings()
CAR = Entity("vehicle", normalise_vrm("ab12 cde"))
SECOND = timedelta(seconds=1)


def seen(event_id: str, when, *children: str, entity: Entity = CAR, **kw):
    return report(event_id, when, children=children, entities=[entity], **kw)


def run(events: list, settings: AssociationSettings = DEFAULT):
    return fold(rule.apply, rule.initial(CAR.ref), events, settings)


def test_vehicle_seen_with_a_third_child_inside_ninety_days_raises_alert() -> None:
    _, [alert] = run([seen("r1", day(0), "a"), seen("r2", day(30), "b"), seen("r3", day(60), "c")])
    assert (alert.rule, alert.subject_kind, alert.subject) == ("association", "entity", "vehicle:AB12CDE")
    assert alert.evidence == ("r1", "r2", "r3")
    assert (alert.window_start, alert.window_end, alert.raised_at) == (day(-30), day(60), day(60))
    assert alert.alert_id == alert_id("association", "vehicle:AB12CDE", ["r3"], identity(DEFAULT))


def test_two_children_do_not_raise() -> None:
    assert run([seen("r1", day(0), "a"), seen("r2", day(1), "b")])[1] == []


def test_the_same_child_in_many_reports_counts_once() -> None:
    assert run([seen(f"r{i}", day(i), "a", "b") for i in range(5)])[1] == []


def test_one_report_naming_three_children_raises() -> None:
    assert len(run([seen("r1", day(0), "a", "b", "c")])[1]) == 1


def test_children_exactly_ninety_days_apart_count_together() -> None:
    assert len(run([seen("r1", day(0), "a"), seen("r2", day(45), "b"), seen("r3", day(90), "c")])[1]) == 1


def test_children_ninety_days_and_one_second_apart_do_not() -> None:
    events = [seen("r1", day(0), "a"), seen("r2", day(45), "b"), seen("r3", day(90) + SECOND, "c")]
    assert run(events)[1] == []


def test_later_report_inside_the_window_raises_its_own_alert() -> None:
    _, alerts = run([seen("r1", day(0), "a"), seen("r2", day(1), "b"), seen("r3", day(2), "c"),
                     seen("r4", day(3))])
    assert [a.raised_at for a in alerts] == [day(2), day(3)]


def test_late_report_fires_for_each_report_it_makes_qualify() -> None:
    events = [seen("r0", day(0), "a"), seen("r50", day(50), "b"), seen("r100", day(100), "c"),
              seen("r40", day(40), "d")]
    assert [a.raised_at for a in run(events)[1]] == [day(50), day(100)]


def test_handling_code_c_conditions_travel_with_the_alert() -> None:
    events = [seen("r1", day(0), "a", handling_code="C", handling_conditions="not to partners"),
              seen("r2", day(1), "b", handling_code="P"), seen("r3", day(2), "c")]
    _, [alert] = run(events)
    assert alert.handling_conditions == ("not to partners",)


def test_keys_for_a_report_are_its_entities_as_kind_and_key() -> None:
    phone = Entity("phone", "p-123")
    keys = rule.keys_for(report("r", day(0), entities=[phone, CAR, phone]))
    assert keys == ["phone:p-123", "vehicle:AB12CDE"]


def test_report_not_naming_the_entity_is_misrouted() -> None:
    other = seen("r1", day(0), "a", entity=Entity("adult", "x"))
    with pytest.raises(MisroutedEventError, match=r"'r1' does not name entity 'vehicle:AB12CDE'"):
        rule.apply(rule.initial(CAR.ref), other, DEFAULT)


def test_missing_reports_leave_state_unchanged() -> None:
    state = rule.initial(CAR.ref)
    assert rule.apply(state, missing("e1", day(0)), DEFAULT) == (state, [])


def test_same_report_twice_is_held_once() -> None:
    state, alerts = run([seen("r1", day(0), "a")] * 2 + [seen("r2", day(1), "b")])
    assert (len(state.links), alerts) == (2, [])


def test_advance_prunes_reports_older_than_days_plus_lateness() -> None:
    state, _ = run([seen("r1", day(0), "a"), seen("r2", day(1), "b")])
    state, _ = rule.advance(state, day(120) + SECOND, DEFAULT)
    assert [x.event_id for x in state.links] == ["r2"]


def test_report_older_than_watermark_minus_lateness_is_refused() -> None:
    state, _ = rule.advance(rule.initial(CAR.ref), day(31), DEFAULT)
    with pytest.raises(LateEventError):
        rule.apply(state, seen("r1", day(1) - SECOND, "a"), DEFAULT)


def test_state_round_trips_through_json() -> None:
    state, _ = run([seen("r1", day(0), "a", "b", handling_code="C", handling_conditions="x"),
                    seen("r2", day(1), "c")])
    state, _ = rule.advance(state, day(2), DEFAULT)
    assert rule.AssociationState.from_json(json.loads(json.dumps(state.to_json()))) == state


SMALL = AssociationSettings(min_children=3, days=10)
links = st.lists(st.tuples(st.integers(0, 40 * 24), st.sets(st.sampled_from("abcdef"), max_size=2)),
                 max_size=12)


@settings(max_examples=200, deadline=None)
@given(spec=links, data=st.data())
def test_any_arrival_order_with_duplicates_fires_the_same_alert_ids(spec, data) -> None:
    events = [seen(f"r{i}", day(0) + timedelta(hours=h), *sorted(kids)) for i, (h, kids) in enumerate(spec)]
    shuffled = data.draw(st.permutations(events + events[: data.draw(st.integers(0, 3))]))
    _, in_order = run(sorted(events, key=lambda e: e.occurred_at), SMALL)
    _, any_order = run(shuffled, SMALL)
    assert ids(any_order) == ids(in_order)
    assert len(any_order) == len(ids(any_order))


# --- re-issued reports: one report, however many issues -----------------------------------------


def test_a_report_re_issued_raises_one_alert() -> None:
    third = seen("r3", day(2), "c")
    _, alerts = run([seen("r1", day(0), "a"), seen("r2", day(1), "b"), third, reissue(third, "g3")])
    assert [a.alert_id for a in alerts] == [alert_id("association", CAR.ref, ["r3"], identity(DEFAULT))]


def test_a_grading_arriving_first_gives_its_conditions_and_the_first_issues_evidence() -> None:
    first = seen("r1", day(0), "a")
    graded = reissue(first, "g1", handling_code="C", handling_conditions="police only")
    _, [alert] = run([first, graded, seen("r2", day(1), "b"), seen("r3", day(2), "c")])
    assert alert.evidence == ("r1", "r2", "r3")
    assert alert.handling_conditions == ("police only",)


def test_the_latest_grading_of_a_report_is_the_one_that_travels() -> None:
    first = seen("r1", day(0), "a", handling_code="C", handling_conditions="old condition")
    regraded = reissue(first, "g1", handling_code="P")
    _, [alert] = run([regraded, seen("r2", day(1), "b"), first, seen("r3", day(2), "c")])
    assert alert.handling_conditions == ()


def test_re_issued_reports_about_the_same_children_fire_once_each() -> None:
    reports = [seen(f"r{i}", day(i), "a", "b", "c") for i in range(3)]
    _, alerts = run(reports + [reissue(r, f"g{i}") for i, r in enumerate(reports)] + reports)
    assert len(alerts) == 3


def _with_reissues(events: list, chosen: set[int]) -> list:
    return [reissue(events[i], f"g{i}", handling_code="C", handling_conditions=f"cond {i}")
            for i in sorted(chosen)]


@settings(max_examples=200, deadline=None)
@given(spec=links, data=st.data())
def test_re_issuing_any_subset_of_reports_changes_no_alert_id_nor_evidence(spec, data) -> None:
    # Any order in which a report's first issue arrives before its re-issues (as they are published).
    events = [seen(f"r{i}", day(0) + timedelta(hours=h), *sorted(kids)) for i, (h, kids) in enumerate(spec)]
    chosen = data.draw(st.sets(st.integers(0, len(events) - 1))) if events else set()
    order = list(data.draw(st.permutations(events + _with_reissues(events, chosen))))
    for i in chosen:  # put each original before its re-issue
        first, again = order.index(events[i]), next(n for n, e in enumerate(order) if e.event_id == f"g{i}")
        if again < first:
            order[first], order[again] = order[again], order[first]
    _, plain = run(sorted(events, key=lambda e: e.occurred_at), SMALL)
    _, same_order = run([e for e in order if not e.event_id.startswith("g")], SMALL)
    _, reissued = run(order, SMALL)
    assert ids(reissued) == ids(plain)
    assert len(reissued) == len(plain)
    # Evidence is that of the same arrival order without the re-issues (it can depend on order).
    assert {a.alert_id: a.evidence for a in reissued} == {a.alert_id: a.evidence for a in same_order}


@settings(max_examples=200, deadline=None)
@given(spec=links, data=st.data())
def test_re_issues_in_any_order_at_all_fire_once_per_qualifying_report(spec, data) -> None:
    events = [seen(f"r{i}", day(0) + timedelta(hours=h), *sorted(kids)) for i, (h, kids) in enumerate(spec)]
    chosen = data.draw(st.sets(st.integers(0, len(events) - 1))) if events else set()
    _, plain = run(events, SMALL)
    _, reissued = run(data.draw(st.permutations(events + _with_reissues(events, chosen))), SMALL)
    # An alert is anchored on the issue held when its report qualified: the original's, unless a
    # re-issue came first and completed the window alone.
    anchored = {a.alert_id for a in plain}
    assert len(reissued) == len(plain)
    for alert in reissued:
        if alert.alert_id not in anchored:
            assert any(alert.alert_id == alert_id("association", CAR.ref, [f"g{i}"], identity(SMALL))
                       for i in chosen)


def test_a_further_report_about_a_busy_entity_re_checks_only_the_reports_it_can_change(monkeypatch) -> None:
    # 300 reports an hour apart about two children: none qualifies, so every one stays unfired.
    state, alerts = run([seen(f"r{i:03d}", day(0) + timedelta(hours=i), f"c{i % 2}") for i in range(300)])
    assert alerts == []
    checked: list[str] = []

    def counting(rule_name, subject, anchor, pairs):
        checked.append(anchor)
        return alert_id(rule_name, subject, [anchor], pairs)

    monkeypatch.setattr(rule, "anchor_alert_id", counting)
    _, alerts = rule.apply(state, seen("r300", day(0) + timedelta(hours=300), "c0"), DEFAULT)
    assert alerts == []
    assert len(checked) <= 1  # the new report only: no earlier report's window holds it
