import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_factories import day, fold, ids, interview, missing, returned

from streams.rules import LateEventError, MisroutedEventError, RepeatMissingSettings, RuleInputError
from streams.rules import repeat_missing as rule
from streams.rules.alerts import alert_id

DEFAULT = RepeatMissingSettings()


def run(events: list, settings: RepeatMissingSettings = DEFAULT) -> tuple[rule.RepeatMissingState, list]:
    return fold(rule.apply, rule.initial("child-1"), events, settings)


def test_third_episode_inside_ninety_days_raises_alert() -> None:
    _, alerts = run([missing("e1", day(0)), missing("e2", day(30)), missing("e3", day(60))])
    [alert] = alerts
    assert alert.rule == "repeat_missing"
    assert (alert.subject_kind, alert.subject, alert.area) == ("child", "child-1", "north")
    assert alert.evidence == ("missing-e1", "missing-e2", "missing-e3")
    assert (alert.window_start, alert.window_end, alert.raised_at) == (day(-30), day(60), day(60))
    assert alert.alert_id == alert_id("repeat_missing", "child-1", ["e3"], (("count", 3), ("days", 90)))
    assert alert.severity == "medium"


def test_two_episodes_do_not_raise_alert() -> None:
    assert run([missing("e1", day(0)), missing("e2", day(1))])[1] == []


def test_three_episodes_spanning_exactly_ninety_days_raise_alert() -> None:
    _, alerts = run([missing("e1", day(0)), missing("e2", day(45)), missing("e3", day(90))])
    assert [a.evidence for a in alerts] == [("missing-e1", "missing-e2", "missing-e3")]


def test_three_episodes_spanning_ninety_days_and_one_second_do_not_raise_alert() -> None:
    late_third = day(90) + timedelta(seconds=1)
    assert run([missing("e1", day(0)), missing("e2", day(45)), missing("e3", late_third)])[1] == []


def test_same_event_arriving_twice_counts_once() -> None:
    first = missing("e1", day(0))
    state, alerts = run([first, first, missing("e2", day(1))])
    assert alerts == []
    assert len(state.reports) == 2


def test_same_episode_reported_by_two_agencies_counts_once() -> None:
    events = [
        missing("e1", day(0), event_id="police-e1"),
        missing("e1", day(0), event_id="care-home-e1", agency="social-care"),
        missing("e2", day(1)),
    ]
    assert run(events)[1] == []


def test_fourth_episode_inside_window_raises_its_own_alert() -> None:
    _, alerts = run([missing(f"e{i}", day(i)) for i in range(1, 5)])
    assert [a.window_end for a in alerts] == [day(3), day(4)]
    assert alerts[1].evidence == ("missing-e1", "missing-e2", "missing-e3", "missing-e4")


def test_late_episode_fires_for_every_episode_it_makes_qualify() -> None:
    _, before = run([missing("e0", day(0)), missing("e50", day(50)), missing("e100", day(100))])
    assert before == []
    _, alerts = run([missing("e0", day(0)), missing("e50", day(50)), missing("e100", day(100)),
                     missing("e40", day(40))])
    # e40's own window [-50, 40] holds two episodes; e50's and e100's now hold three.
    assert [a.window_end for a in alerts] == [day(50), day(100)]
    assert [a.raised_at for a in alerts] == [day(50), day(100)]
    assert alerts[1].evidence == ("missing-e100", "missing-e40", "missing-e50")


def test_each_qualifying_episode_fires_exactly_once() -> None:
    state, first = run([missing("e1", day(0)), missing("e2", day(1)), missing("e3", day(2))])
    state, again = rule.apply(state, missing("e4", day(200)), DEFAULT)
    assert len(first) == 1
    assert again == []


def test_high_risk_episode_in_window_makes_alert_high() -> None:
    _, alerts = run([missing("e1", day(0), risk="high"), missing("e2", day(1)), missing("e3", day(2))])
    assert alerts[0].severity == "high"


def test_high_risk_episode_outside_window_does_not_raise_severity() -> None:
    events = [missing("old", day(-100), risk="high"), missing("e1", day(0)), missing("e2", day(1)),
              missing("e3", day(2))]
    assert [a.severity for a in run(events)[1]] == ["medium"]


def test_three_in_thirty_area_settings_fire_only_inside_thirty_days() -> None:
    thirty = RepeatMissingSettings(days=30)
    events = [missing("e1", day(0)), missing("e2", day(20)), missing("e3", day(31))]
    assert run(events, thirty)[1] == []
    assert len(run(events, DEFAULT)[1]) == 1


def test_alerts_under_different_settings_have_different_ids() -> None:
    events = [missing("e1", day(0)), missing("e2", day(1)), missing("e3", day(2))]
    assert ids(run(events)[1]).isdisjoint(ids(run(events, RepeatMissingSettings(days=30))[1]))


def test_other_event_types_leave_state_unchanged() -> None:
    state = rule.initial("child-1")
    for event in (returned("e1", day(0)), interview("e1", day(1))):
        assert rule.apply(state, event, DEFAULT) == (state, [])


def test_event_for_another_child_is_misrouted() -> None:
    with pytest.raises(MisroutedEventError, match=r"child_id 'child-2' sent to state of 'child-1'"):
        rule.apply(rule.initial("child-1"), missing("e1", day(0), child="child-2"), DEFAULT)


def test_advance_prunes_episodes_older_than_days_plus_lateness() -> None:
    state, _ = run([missing("old", day(0)), missing("kept", day(1))])
    state, alerts = rule.advance(state, day(121), DEFAULT)  # horizon = day 1
    assert alerts == []
    assert [r.episode_id for r in state.reports] == ["kept"]
    assert state.watermark == day(121)


def test_event_older_than_watermark_minus_lateness_is_refused() -> None:
    state, _ = rule.advance(rule.initial("child-1"), day(100), DEFAULT)
    rule.apply(state, missing("on-horizon", day(70)), DEFAULT)
    with pytest.raises(LateEventError, match=r"'missing-late' occurred_at .* older than the lateness"):
        rule.apply(state, missing("late", day(70) - timedelta(seconds=1)), DEFAULT)


def test_fired_episode_kept_after_pruning_does_not_fire_again() -> None:
    events = [missing("old", day(-200)), missing("e1", day(0)), missing("e2", day(1)), missing("e3", day(2))]
    state, first = run(events)
    state, _ = rule.advance(state, day(2), DEFAULT)  # prunes only "old"
    state, again = rule.apply(state, missing("e4", day(3)), DEFAULT)
    assert [r.episode_id for r in state.reports] == ["e1", "e2", "e3", "e4"]
    assert [a.window_end for a in first + again] == [day(2), day(3)]


def test_resent_episode_beyond_the_lateness_horizon_is_refused_not_refired() -> None:
    state, first = run([missing("e1", day(0)), missing("e2", day(1)), missing("e3", day(2))])
    state, _ = rule.advance(state, day(125), DEFAULT)
    assert (len(first), state.reports, state.fired) == (1, (), ())
    with pytest.raises(LateEventError):
        rule.apply(state, missing("e3", day(2), event_id="resent-e3"), DEFAULT)


def test_watermark_never_moves_back() -> None:
    state, _ = rule.advance(rule.initial("child-1"), day(10), DEFAULT)
    state, _ = rule.advance(state, day(5), DEFAULT)
    assert state.watermark == day(10)


def test_naive_watermark_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"watermark must be timezone-aware"):
        rule.advance(rule.initial("child-1"), day(1).replace(tzinfo=None), DEFAULT)


def test_state_round_trips_through_json() -> None:
    state, _ = run([missing("e1", day(0), risk="high"), missing("e2", day(1)), missing("e3", day(2))])
    state, _ = rule.advance(state, day(3), DEFAULT)
    assert rule.RepeatMissingState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_state_from_json_names_the_bad_field() -> None:
    raw = run([missing("e1", day(0))])[0].to_json()
    raw["reports"][0]["occurred_at"] = "2026-01-01T00:00:00"
    bad_field = r"state\.reports\[0\]\.occurred_at: Expected `datetime` with a timezone"
    with pytest.raises(RuleInputError, match=bad_field):
        rule.RepeatMissingState.from_json(raw)


# --- properties -------------------------------------------------------------------------

SMALL = RepeatMissingSettings(count=3, days=10)

episodes = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 40 * 24), st.sampled_from(["low", "high"])),
    min_size=0, max_size=12,
)


def _events(spec: list[tuple[int, int, str]]) -> list[object]:
    # Same episode number => same episode (second report gets its own event id).
    return [missing(f"e{ep}", day(0) + timedelta(hours=h), event_id=f"m{i}", risk=risk)
            for i, (ep, h, risk) in enumerate(spec)]


@settings(max_examples=200, deadline=None)
@given(spec=episodes, data=st.data())
def test_any_arrival_order_with_duplicates_fires_the_same_alert_ids(spec, data) -> None:
    events = _events(spec)
    resent = data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    shuffled = data.draw(st.permutations(events + resent))
    in_time_order = sorted(events, key=lambda e: e.occurred_at)
    _, in_order = fold(rule.apply, rule.initial("child-1"), in_time_order, SMALL)
    _, any_order = fold(rule.apply, rule.initial("child-1"), shuffled, SMALL)
    assert ids(any_order) == ids(in_order)
    assert len(any_order) == len(ids(any_order))  # each alert id fires once


@settings(max_examples=200, deadline=None)
@given(spec=episodes)
def test_pruning_in_time_order_fires_the_same_alerts_as_never_pruning(spec) -> None:
    tight = RepeatMissingSettings(count=3, days=10, allowed_lateness_days=0)
    events = sorted(_events(spec), key=lambda e: (e.occurred_at, e.event_id))
    state, pruned = rule.initial("child-1"), []
    for event in events:
        state, raised = rule.apply(state, event, tight)
        pruned += raised
        state, _ = rule.advance(state, event.occurred_at, tight)
        state = rule.RepeatMissingState.from_json(json.loads(json.dumps(state.to_json())))
    assert ids(pruned) == ids(fold(rule.apply, rule.initial("child-1"), events, tight)[1])
