"""Concerns: one per subject and rule; closed ones re-open only on evidence dated after the closing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.concerns import (
    ACTIONS,
    SEVERITIES,
    AlertIn,
    Concern,
    TriageError,
    concern_id,
    fold,
    fold_all,
    triage,
)

T0 = datetime(2025, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)


def alert(
    n: int,
    *,
    subject: str = "child-a",
    rule: str = "repeat_missing",
    severity: str = "medium",
    raised_at: datetime | None = None,
    evidence: tuple[str, ...] | None = None,
) -> AlertIn:
    return AlertIn(
        alert_id=f"alert-{n}",
        rule=rule,
        subject_kind="child",
        subject=subject,
        area="E06000016",
        severity=severity,
        raised_at=raised_at or T0 + timedelta(days=n),
        evidence=evidence if evidence is not None else (f"ev-{n}", f"ev-{n + 1}"),
    )


def opened(*alerts: AlertIn) -> Concern:
    concerns, _ = fold_all({}, alerts, actor="hub-consumer", now=NOW)
    [concern] = concerns.values()
    return concern


def test_the_first_alert_opens_a_new_concern_for_its_rule_and_subject() -> None:
    concern, change = fold(None, alert(1), actor="hub-consumer", now=NOW)
    assert concern.concern_id == concern_id("repeat_missing", "child", "child-a")
    assert (concern.status, concern.alert_count, concern.evidence) == ("new", 1, ("ev-1", "ev-2"))
    assert (concern.authority, concern.owner, concern.closed_at) == ("E06000016", None, None)
    assert (change.action, change.from_status, change.to_status, change.alert_id) == (
        "raised",
        None,
        "new",
        "alert-1",
    )


def test_a_later_alert_updates_the_open_concern_keeping_its_status() -> None:
    concern = opened(alert(1, severity="low"))
    acknowledged, _ = triage(concern, "acknowledge", actor="sam", now=NOW)
    after, change = fold(acknowledged, alert(2, severity="high"), actor="hub-consumer", now=NOW)
    assert (after.status, after.severity, after.alert_count) == ("acknowledged", "high", 2)
    assert after.evidence == ("ev-1", "ev-2", "ev-3")  # ev-2 is in both alerts: counted once
    assert (change.action, change.to_status) == ("updated", "acknowledged")


def test_severity_never_goes_down() -> None:
    concern = opened(alert(1, severity="high"), alert(2, severity="low"))
    assert concern.severity == "high"


def test_a_closed_concern_reopens_on_evidence_dated_after_its_closing() -> None:
    closed, _ = triage(
        opened(alert(1)), "close", actor="sam", now=T0 + timedelta(days=10), reason="seen, safe"
    )
    after, change = fold(closed, alert(20), actor="hub-consumer", now=NOW)
    assert (after.status, after.closed_at, after.close_reason) == ("new", None, None)
    assert (change.action, change.from_status, change.to_status) == ("reopened", "closed", "new")


def test_a_closed_concern_stays_closed_on_evidence_dated_before_its_closing() -> None:
    closed, _ = triage(
        opened(alert(1)), "close", actor="sam", now=T0 + timedelta(days=10), reason="seen, safe"
    )
    after, change = fold(closed, alert(5), actor="hub-consumer", now=NOW)  # late, or a replay
    assert (after.status, after.close_reason, after.alert_count) == ("closed", "seen, safe", 2)
    assert "ev-6" in after.evidence  # kept on the concern, for the record
    assert (change.action, change.to_status) == ("kept-closed", "closed")


def test_an_alert_about_another_subject_is_refused() -> None:
    with pytest.raises(ValueError, match="another concern"):
        fold(opened(alert(1)), alert(2, subject="child-b"), actor="hub-consumer", now=NOW)


def test_alerts_of_several_concerns_fold_into_one_each() -> None:
    alerts = [alert(1), alert(2, subject="child-b"), alert(3), alert(4, rule="return_interview_overdue")]
    concerns, history = fold_all({}, alerts, actor="hub-consumer", now=NOW)
    assert sorted(c.alert_count for c in concerns.values()) == [1, 1, 2]
    assert [c.action for c in history] == ["raised", "raised", "updated", "raised"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(SEVERITIES), st.integers(0, 400)),
        min_size=1,
        max_size=40,
    )
)
def test_one_concern_per_subject_holding_every_alert_and_the_worst_severity(
    raw: list[tuple[str, str, int]],
) -> None:
    alerts = [
        alert(i, subject=s, severity=sev, raised_at=T0 + timedelta(hours=h), evidence=(f"e{h}",))
        for i, (s, sev, h) in enumerate(raw)
    ]
    concerns, history = fold_all({}, alerts, actor="hub-consumer", now=NOW)
    assert len(concerns) == len({s for s, _, _ in raw})
    assert len(history) == len(alerts)
    for c in concerns.values():
        mine = [a for a in alerts if a.subject == c.subject]
        assert c.alert_count == len(mine)
        assert set(c.evidence) == {e for a in mine for e in a.evidence}
        assert len(c.evidence) == len(set(c.evidence))
        assert c.severity == max((a.severity for a in mine), key=SEVERITIES.index)
        assert c.latest_evidence_at == max(a.raised_at for a in mine)


@given(st.integers(0, 60), st.integers(0, 60))
def test_reopening_depends_only_on_the_evidence_date_against_the_closing(
    closed_day: int, raised_day: int
) -> None:
    closing = T0 + timedelta(days=closed_day)
    closed, _ = triage(
        opened(alert(0, raised_at=T0)), "close", actor="sam", now=closing, reason="no risk found"
    )
    after, _ = fold(closed, alert(1, raised_at=T0 + timedelta(days=raised_day)), actor="w", now=NOW)
    assert (after.status == "new") == (T0 + timedelta(days=raised_day) > closing)


# -- triage -----------------------------------------------------------------------------------


def test_triage_moves_a_concern_from_new_to_closed_with_its_history() -> None:
    concern = opened(alert(1))
    concern, ack = triage(concern, "acknowledge", actor="sam", now=NOW)
    concern, assign = triage(concern, "assign", actor="sam", now=NOW, owner="Priya (city CSE team)")
    concern, act = triage(concern, "action", actor="priya", now=NOW, note="Strategy meeting booked")
    concern, close = triage(concern, "close", actor="priya", now=NOW, reason="Risk reduced; plan in place")
    assert [c.to_status for c in (ack, assign, act, close)] == [
        "acknowledged",
        "acknowledged",
        "actioned",
        "closed",
    ]
    assert concern.owner == "Priya (city CSE team)"
    assert (concern.closed_at, concern.close_reason) == (NOW, "Risk reduced; plan in place")
    assert act.note == "Strategy meeting booked"


def test_acknowledging_sets_the_owner_only_when_there_is_none() -> None:
    concern, _ = triage(opened(alert(1)), "assign", actor="sam", now=NOW, owner="Priya")
    concern, _ = triage(concern, "acknowledge", actor="sam", now=NOW)
    assert concern.owner == "Priya"


@pytest.mark.parametrize(
    ("action", "fields", "field", "message"),
    [
        ("close", {}, "reason", "Enter the reason for closing"),
        ("close", {"reason": "   "}, "reason", "Enter the reason for closing"),
        ("action", {}, "note", "Enter what was done"),
        ("assign", {"owner": ""}, "owner", "Enter who is to own this concern"),
        ("assign", {"owner": "x" * 201}, "owner", "200 characters or fewer"),
        ("action", {"note": "x" * 2001}, "note", "2000 characters or fewer (it is 2001)"),
        ("escalate", {}, "action", "Select what to do"),
    ],
)
def test_bad_triage_input_names_the_field(
    action: str, fields: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(TriageError, match=re.escape(message)) as caught:
        triage(opened(alert(1)), action, actor="sam", now=NOW, **fields)
    assert caught.value.field == field


def test_a_closed_concern_takes_no_triage_and_an_acknowledged_one_is_not_acknowledged_twice() -> None:
    closed, _ = triage(opened(alert(1)), "close", actor="sam", now=NOW, reason="not CSE")
    for action in ACTIONS:
        with pytest.raises(TriageError, match="closed"):
            triage(closed, action, actor="sam", now=NOW, note="n", owner="o", reason="r")
    acknowledged, _ = triage(opened(alert(1)), "acknowledge", actor="sam", now=NOW)
    with pytest.raises(TriageError, match="already acknowledged"):
        triage(acknowledged, "acknowledge", actor="sam", now=NOW)


def test_a_follow_up_that_resolves_an_alert_is_recorded_and_changes_neither_status_nor_severity() -> None:
    concern = opened(alert(1, rule="return_interview_overdue", severity="high"))
    closed, _ = triage(concern, "close", actor="sam", now=T0 + timedelta(days=2), reason="interview booked")
    follow_up = AlertIn(
        alert_id="alert-9",
        rule="return_interview_overdue",
        subject_kind="child",
        subject="child-a",
        area="E06000016",
        severity="low",
        raised_at=T0 + timedelta(days=9),
        evidence=("ev-9",),
        resolves="alert-1",
    )
    after, change = fold(closed, follow_up, actor="hub-consumer", now=NOW)
    assert (after.status, after.severity, after.alert_count) == ("closed", "high", 2)
    assert (change.action, change.note) == ("resolved", "follow-up: resolves alert alert-1")
