import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_factories import at, day, fold, ids, interview, missing, returned

from streams.config import load_rule_config
from streams.rules import (
    AreaSettings,
    LateEventError,
    MisroutedEventError,
    ReturnInterviewSettings,
    RuleInputError,
)
from streams.rules import return_interview as rule
from streams.rules.alerts import alert_id
from streams.rules.return_interview import OVERDUE

DEFAULT = ReturnInterviewSettings()
AT_DEADLINE = ReturnInterviewSettings(out_of_order_hours=0)  # the timer not held back
HELD_BACK = timedelta(hours=6)  # DEFAULT.out_of_order_hours
SECOND = timedelta(seconds=1)


def run(events: list[object], watermark=None, settings: ReturnInterviewSettings = DEFAULT):
    state, alerts = fold(rule.apply, rule.initial("child-1"), events, settings)
    if watermark is not None:
        state, raised = rule.advance(state, watermark, settings)
        alerts += raised
    return state, alerts


def test_no_interview_within_72_hours_raises_overdue_at_the_deadline() -> None:
    _, alerts = run([returned("e1", day(0))], watermark=day(3) + HELD_BACK)
    [alert] = alerts
    assert (alert.rule, alert.subject_kind, alert.subject, alert.area) == (
        "return_interview_overdue", "child", "child-1", "north")
    assert (alert.window_start, alert.window_end, alert.raised_at) == (day(0), day(3), day(3))
    assert alert.evidence == ("returned-e1",)
    assert (alert.severity, alert.resolves) == ("medium", None)


def test_watermark_one_second_before_the_deadline_does_not_raise() -> None:
    assert run([returned("e1", day(0))], watermark=day(3) - SECOND, settings=AT_DEADLINE)[1] == []


def test_default_holds_the_overdue_alert_back_until_six_hours_past_the_deadline() -> None:
    assert DEFAULT.out_of_order_hours == 6
    state, early = run([returned("e1", day(0))], watermark=day(3) + HELD_BACK - timedelta(minutes=1))
    assert early == []
    _, [alert] = rule.advance(state, day(3) + HELD_BACK, DEFAULT)
    assert alert.rule == "return_interview_overdue"
    assert (alert.raised_at, alert.window_end) == (day(3), day(3))


def test_on_time_interview_arriving_after_the_deadline_within_the_hold_back_raises_nothing() -> None:
    state, before = run([returned("e1", day(0))], watermark=day(3) + HELD_BACK - SECOND)
    state, on_arrival = rule.apply(state, interview("e1", day(2)), DEFAULT)
    _, after = rule.advance(state, day(10), DEFAULT)
    assert before + on_arrival + after == []


def test_out_of_order_hours_is_not_part_of_the_alert_id() -> None:
    [held_back] = run([returned("e1", day(0))], watermark=day(4))[1]
    [at_deadline] = run([returned("e1", day(0))], watermark=day(4), settings=AT_DEADLINE)[1]
    assert held_back.alert_id == at_deadline.alert_id
    assert held_back.settings == at_deadline.settings == (("hours", 72),)


def test_negative_out_of_order_hours_is_refused_naming_the_field_and_value() -> None:
    message = r"ReturnInterviewSettings\.out_of_order_hours must be at least 0, got -1"
    with pytest.raises(RuleInputError, match=message):
        ReturnInterviewSettings(out_of_order_hours=-1)


def test_out_of_order_hours_is_set_per_area_from_the_rules_file(tmp_path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"return_interview": {"south": {"out_of_order_hours": 12}}}))
    by_area = load_rule_config(str(path)).return_interview
    assert by_area.for_area("south").out_of_order_hours == 12
    assert by_area.for_area("north") == ReturnInterviewSettings()


def test_interview_exactly_at_the_deadline_is_on_time() -> None:
    assert run([returned("e1", day(0)), interview("e1", day(3))], watermark=day(10))[1] == []


def test_an_on_time_interview_counts_whatever_later_interviews_follow() -> None:
    late = interview("e1", day(5), event_id="second-interview", outcome="declined")
    events = [returned("e1", day(0)), interview("e1", day(2)), late]
    state, alerts = run(events, watermark=day(10))
    assert (alerts, rule.next_due(state, DEFAULT)) == ([], None)


def test_declined_interview_counts_as_an_interview() -> None:
    events = [returned("e1", day(0)), interview("e1", day(1), outcome="declined")]
    assert run(events, watermark=day(10))[1] == []


def test_interview_one_second_late_raises_overdue_and_its_resolution_together() -> None:
    _, alerts = run([returned("e1", day(0)), interview("e1", day(3) + SECOND)], watermark=day(10))
    overdue, resolved = alerts
    assert (overdue.rule, resolved.rule) == ("return_interview_overdue", "return_interview_resolved")
    assert resolved.resolves == overdue.alert_id
    assert resolved.raised_at == day(3) + SECOND


def test_interview_after_the_overdue_alert_raises_a_resolved_follow_up() -> None:
    state, [overdue] = run([returned("e1", day(0))], watermark=day(4))
    _, [resolved] = rule.apply(state, interview("e1", day(5)), DEFAULT)
    assert resolved.rule == "return_interview_resolved"
    assert resolved.resolves == overdue.alert_id
    assert resolved.evidence == ("interview-e1", "returned-e1")
    assert (resolved.severity, resolved.raised_at, resolved.window_end) == ("low", day(5), day(3))


def test_on_time_interview_reported_after_the_alert_still_raises_a_resolved_follow_up() -> None:
    state, [overdue] = run([returned("e1", day(0))], watermark=day(4))
    _, [resolved] = rule.apply(state, interview("e1", day(2)), DEFAULT)
    assert resolved.resolves == overdue.alert_id
    assert resolved.raised_at == day(2)  # before the deadline: the data was late, not the interview


def test_second_interview_does_not_raise_a_second_follow_up() -> None:
    state, _ = run([returned("e1", day(0))], watermark=day(4))
    state, [_] = rule.apply(state, interview("e1", day(5)), DEFAULT)
    assert rule.apply(state, interview("e1", day(6), event_id="again"), DEFAULT)[1] == []


def test_interview_arriving_before_its_return_prevents_the_alert() -> None:
    assert run([interview("e1", day(1)), returned("e1", day(0))], watermark=day(10))[1] == []


def test_return_arriving_after_its_deadline_has_passed_raises_at_once() -> None:
    state, _ = rule.advance(rule.initial("child-1"), day(10), DEFAULT)
    _, [alert] = rule.apply(state, returned("e1", day(0)), DEFAULT)
    assert alert.raised_at == day(3)


def test_overdue_alert_fires_once_across_repeated_advances() -> None:
    state, first = run([returned("e1", day(0))], watermark=day(4))
    state, second = rule.advance(state, day(5), DEFAULT)
    assert (len(first), second) == (1, [])


def test_deadline_across_the_uk_clock_change_is_72_real_hours() -> None:
    # Clocks go forward on 2026-03-29; the deadline is 72 elapsed hours, 13:00 local BST.
    back = returned("e1", at("2026-03-28T12:00:00+00:00"))
    state, _ = run([back], watermark=at("2026-03-31T11:59:59+00:00"), settings=AT_DEADLINE)
    assert state.episodes[0].overdue_alert_id is None
    _, [alert] = rule.advance(state, at("2026-03-31T12:00:00+00:00"), AT_DEADLINE)
    assert alert.window_end == at("2026-03-31T12:00:00+00:00")
    assert alert.window_end.astimezone(ZoneInfo("Europe/London")).hour == 13


def test_return_given_in_local_time_is_handled_in_utc() -> None:
    london = ZoneInfo("Europe/London")
    local_return = returned("e1", at("2026-03-28T12:00:00").replace(tzinfo=london))
    _, [alert] = run([local_return], watermark=at("2026-03-31T12:00:00+00:00"), settings=AT_DEADLINE)
    assert alert.window_end == at("2026-03-31T12:00:00+00:00")


def test_earliest_return_sets_the_deadline() -> None:
    events = [returned("e1", day(1), event_id="later"), returned("e1", day(0), event_id="earlier")]
    _, [alert] = run(events, watermark=day(3), settings=AT_DEADLINE)
    assert alert.window_start == day(0)
    assert alert.evidence == ("earlier", "later")


def test_same_return_event_twice_is_held_once() -> None:
    state, _ = run([returned("e1", day(0)), returned("e1", day(0))])
    assert len(state.episodes[0].returns) == 1


def test_shorter_deadline_setting_gives_a_different_alert() -> None:
    six = ReturnInterviewSettings(hours=6)
    [short] = run([returned("e1", day(0))], watermark=day(1), settings=six)[1]
    [default] = run([returned("e1", day(0))], watermark=day(3) + HELD_BACK)[1]
    assert short.alert_id != default.alert_id


def test_a_missing_report_raises_nothing_and_is_kept_for_its_area_only() -> None:
    state, alerts = rule.apply(rule.initial("child-1"), missing("e1", day(0), area="south"), DEFAULT)
    assert alerts == []
    [record] = state.episodes
    assert (record.area, record.returns, record.interviews) == ("south", (), ())
    assert rule.next_due(state, DEFAULT) is None


def test_event_for_another_child_is_misrouted() -> None:
    with pytest.raises(MisroutedEventError, match=r"ChildReturned\.child_id 'child-2'"):
        rule.apply(rule.initial("child-1"), returned("e1", day(0), child="child-2"), DEFAULT)


def test_unresolved_overdue_episode_is_kept_until_its_interview_arrives() -> None:
    state, _ = run([returned("e1", day(0))], watermark=day(400))
    assert [e.episode_id for e in state.episodes] == ["e1"]
    state, [resolved] = rule.apply(state, interview("e1", day(390)), DEFAULT)
    assert resolved.rule == "return_interview_resolved"
    state, _ = rule.advance(state, day(401), DEFAULT)
    assert state.episodes == ()


def test_closed_episode_is_pruned_once_its_deadline_is_older_than_the_lateness() -> None:
    state, _ = run([returned("e1", day(0)), interview("e1", day(1))], watermark=day(33))
    assert len(state.episodes) == 1  # deadline day 3 == horizon day 3: still held
    state, _ = rule.advance(state, day(33) + SECOND, DEFAULT)
    assert state.episodes == ()


def test_interview_without_a_return_is_pruned_after_the_lateness() -> None:
    state, _ = run([interview("e1", day(0))], watermark=day(30) + SECOND)
    assert state.episodes == ()


def test_late_return_is_refused() -> None:
    state, _ = rule.advance(rule.initial("child-1"), day(40), DEFAULT)
    with pytest.raises(LateEventError):
        rule.apply(state, returned("e1", day(10) - SECOND), DEFAULT)


def test_late_interview_for_an_episode_still_held_is_accepted() -> None:
    state, _ = run([returned("e1", day(0))], watermark=day(100))
    _, [resolved] = rule.apply(state, interview("e1", day(1)), DEFAULT)
    assert resolved.raised_at == day(1)


def test_late_interview_for_an_episode_not_held_is_refused() -> None:
    state, _ = rule.advance(rule.initial("child-1"), day(100), DEFAULT)
    with pytest.raises(LateEventError):
        rule.apply(state, interview("e1", day(1)), DEFAULT)


def test_state_round_trips_through_json() -> None:
    events = [returned("e1", day(0)), interview("e2", day(1)), returned("e3", day(2))]
    state, _ = run(events, watermark=day(4))
    assert rule.ReturnInterviewState.from_json(json.loads(json.dumps(state.to_json()))) == state


# --- properties -------------------------------------------------------------------------

lifecycle = st.lists(
    st.tuples(st.sampled_from(["return", "interview"]), st.integers(0, 4), st.integers(0, 10 * 24)),
    max_size=12,
)


def _events(spec: list[tuple[str, int, int]]) -> list[object]:
    build = {"return": returned, "interview": interview}
    return [build[kind](f"e{ep}", day(0) + timedelta(hours=h), event_id=f"{kind}-{i}")
            for i, (kind, ep, h) in enumerate(spec)]


def _unresolved(alerts: list) -> set[str]:
    resolved = {a.resolves for a in alerts}
    return {a.alert_id for a in alerts if a.rule == "return_interview_overdue" and a.alert_id not in resolved}


@settings(max_examples=200, deadline=None)
@given(spec=lifecycle, data=st.data())
def test_any_arrival_order_then_one_watermark_fires_the_same_alert_ids(spec, data) -> None:
    events = _events(spec)
    shuffled = data.draw(st.permutations(events + events[:3]))
    _, in_order = run(sorted(events, key=lambda e: e.occurred_at), watermark=day(20))
    _, any_order = run(shuffled, watermark=day(20))
    assert ids(any_order) == ids(in_order)
    assert len(any_order) == len(ids(any_order))


def test_next_due_is_the_earliest_uninterviewed_deadline_held_back() -> None:
    state, _ = run([returned("e1", day(2)), returned("e2", day(0)), returned("e3", day(1)),
                    interview("e3", day(4))])  # e3's interview is exactly at its deadline
    assert rule.next_due(state, DEFAULT) == day(3) + HELD_BACK  # e2's
    on_time, _ = run([returned("e1", day(0)), interview("e1", day(3))])
    assert rule.next_due(on_time, DEFAULT) is None
    raised, _ = rule.advance(state, day(3) + HELD_BACK, DEFAULT)
    assert rule.next_due(raised, DEFAULT) == day(5) + HELD_BACK  # e1's; e2 has been raised


@settings(max_examples=200, deadline=None)
@given(spec=lifecycle, hold_back=st.sampled_from([0, 6, 30]))
def test_next_due_is_exactly_when_advance_raises_the_next_overdue_alert(spec, hold_back) -> None:
    """The worker wakes a child only at next_due: a second earlier must raise nothing, at it an
    overdue alert, and with no next_due no watermark ever raises one."""
    held = ReturnInterviewSettings(out_of_order_hours=hold_back)
    state, _ = run(_events(spec), settings=held)
    due = rule.next_due(state, held)

    def overdue(watermark) -> list:
        return [a for a in rule.advance(state, watermark, held)[1] if a.rule == "return_interview_overdue"]

    if due is None:
        assert overdue(day(400)) == []
    else:
        assert overdue(due - SECOND) == []
        assert overdue(due) != []
        later, _ = rule.advance(state, due, held)
        assert rule.next_due(later, held) is None or rule.next_due(later, held) > due


@settings(max_examples=200, deadline=None)
@given(spec=lifecycle, data=st.data())
def test_interleaved_watermarks_only_add_overdue_alerts_that_are_resolved(spec, data) -> None:
    events = _events(spec)
    shuffled = data.draw(st.permutations(events))
    marks = sorted(data.draw(st.lists(st.integers(0, 20 * 24), min_size=len(events), max_size=len(events))))
    state, streamed = rule.initial("child-1"), []
    for event, hour in zip(shuffled, marks, strict=True):
        state, raised = rule.apply(state, event, DEFAULT)
        streamed += raised
        state, raised = rule.advance(state, day(0) + timedelta(hours=hour), DEFAULT)
        streamed += raised
    state, raised = rule.advance(state, day(20), DEFAULT)
    streamed += raised
    _, batch = run(events, watermark=day(20))
    assert ids(batch) <= ids(streamed)
    assert _unresolved(streamed) == _unresolved(batch)


# A partition shared by several children, as the worker runs it: the watermark is the latest
# event time seen, and every child's state is advanced to it after each event. One return and at
# most one interview per episode: with more, an alert's evidence is what had arrived when it fired
# (its id is the same either way).
MINUTE = timedelta(minutes=1)
HOUR = 60  # minutes
CHILDREN = ("child-1", "child-2", "child-3")

episode = st.tuples(
    st.sampled_from(CHILDREN),
    st.integers(0, 4 * 24 * HOUR),  # the return, minutes after day 0
    st.none() | st.integers(0, 90 * HOUR) | st.integers(66 * HOUR, 78 * HOUR),  # interview, after it
)
partition = st.tuples(
    st.lists(episode, min_size=1, max_size=6),
    # Reports about another child, which move the clock: (an episode, minutes from its deadline).
    st.lists(st.tuples(st.integers(0, 5), st.integers(-12 * HOUR, 12 * HOUR)), max_size=6),
)


def _partition_events(spec: tuple[list, list]) -> list:
    episodes, ticks = spec
    events = []
    for n, (child, back, after) in enumerate(episodes):
        events.append(returned(f"e{n}", day(0) + back * MINUTE, child=child))
        if after is not None:
            events.append(interview(f"e{n}", day(0) + (back + after) * MINUTE, child=child))
    for n, (near, offset) in enumerate(ticks):
        deadline = episodes[near % len(episodes)][1] + 72 * HOUR
        events.append(missing(f"t{n}", day(0) + (deadline + offset) * MINUTE, child="other"))
    return events


def _worker_run(arrivals: list, settings: ReturnInterviewSettings) -> list:
    states = {child: rule.initial(child) for child in CHILDREN}
    watermark, alerts = None, []
    for event in arrivals:
        watermark = max(watermark or event.occurred_at, event.occurred_at)
        if event.child_id in states:
            states[event.child_id], raised = rule.apply(states[event.child_id], event, settings)
            alerts += raised
        for child, state in states.items():
            states[child], raised = rule.advance(state, watermark, settings)
            alerts += raised
    return sorted(alerts, key=lambda a: a.alert_id)


@st.composite
def arrival_within(draw, events: list, bound: timedelta) -> list:
    """``events`` as they might arrive each less than ``bound`` behind the latest before it: in
    order of event time plus a delay under ``bound``, ties in any order."""
    shuffled = draw(st.permutations(events))
    delays = draw(st.lists(st.integers(0, bound // MINUTE - 1), min_size=len(events), max_size=len(events)))
    timed = sorted(zip(shuffled, delays, strict=True), key=lambda ed: ed[0].occurred_at + ed[1] * MINUTE)
    return [event for event, _ in timed]


@settings(max_examples=200, deadline=None)
@given(spec=partition, data=st.data())
def test_arrival_out_of_order_by_less_than_the_hold_back_gives_the_event_time_alerts(spec, data) -> None:
    events = _partition_events(spec)
    arrivals = data.draw(arrival_within(events, HELD_BACK))
    in_event_time = _worker_run(sorted(events, key=lambda e: (e.occurred_at, e.event_id)), DEFAULT)
    assert _worker_run(arrivals, DEFAULT) == in_event_time


# --- each episode under its own area's settings --------------------------------------------------

# Placed out of area: the child goes missing from home once and from the placement once, and is
# found each time in the other area (the returns' areas must not decide).
_TWO_AREAS = [
    missing("e1", day(0), area="home"),
    missing("e2", day(0.25), area="placed"),
    returned("e1", day(0.5), area="placed"),
    returned("e2", day(0.75), area="home"),
]  # every deadline is after the last of them


@pytest.mark.parametrize(("home_hours", "placed_hours"), [(48, 96), (24, 12)])
@pytest.mark.parametrize("last", range(len(_TWO_AREAS)))
def test_each_episode_gets_its_own_areas_deadline_and_alert_id_whichever_event_comes_last(
    home_hours: int, placed_hours: int, last: int
) -> None:
    by_area = AreaSettings(DEFAULT, {"home": ReturnInterviewSettings(hours=home_hours),
                                     "placed": ReturnInterviewSettings(hours=placed_hours)})
    events = [e for i, e in enumerate(_TWO_AREAS) if i != last] + [_TWO_AREAS[last]]
    state = rule.initial("child-1")
    alerts = []
    for event in events:
        state, raised = rule.apply(state, event, by_area)
        alerts += raised
        state, raised = rule.advance(state, event.occurred_at, by_area)
        alerts += raised
    assert rule.next_due(state, by_area) == min(day(0.5) + timedelta(hours=home_hours),
                                                day(0.75) + timedelta(hours=placed_hours)) + HELD_BACK
    state, raised = rule.advance(state, day(30), by_area)
    alerts += raised
    assert {a.alert_id: (a.window_end, a.area, a.settings) for a in alerts} == {
        alert_id(OVERDUE, "child-1", ["e1"], (("hours", home_hours),)):
            (day(0.5) + timedelta(hours=home_hours), "home", (("hours", home_hours),)),
        alert_id(OVERDUE, "child-1", ["e2"], (("hours", placed_hours),)):
            (day(0.75) + timedelta(hours=placed_hours), "placed", (("hours", placed_hours),)),
    }


def test_an_episode_whose_missing_report_is_not_held_takes_its_returns_area() -> None:
    by_area = AreaSettings(DEFAULT, {"placed": ReturnInterviewSettings(hours=24)})
    state, _ = rule.apply(rule.initial("child-1"), returned("e1", day(0), area="placed"), by_area)
    _, [alert] = rule.advance(state, day(5), by_area)
    assert (alert.window_end, alert.area) == (day(1), "placed")


def test_a_missing_report_alone_is_pruned_after_the_lateness() -> None:
    state, _ = rule.apply(rule.initial("child-1"), missing("e1", day(0)), DEFAULT)
    assert [e.episode_id for e in state.episodes] == ["e1"]
    state, _ = rule.advance(state, day(30), DEFAULT)
    assert len(state.episodes) == 1
    state, _ = rule.advance(state, day(30) + SECOND, DEFAULT)
    assert state.episodes == ()
