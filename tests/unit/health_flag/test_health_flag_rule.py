"""The health flag rule: hub decisions in, FHIR-shaped CSE flags for health out."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from streams.rules import health_flag as rule
from tests.support import events

CHILD = "pk_child"
NHS = "9434765919"
CORRECTED_NHS = "4010232137"
OTHER_PHONE = "0116 496 0999"
T0 = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
FLAG_FIELDS = {f["name"] for f in json.loads(schemas.schema_text("HealthCseFlag"))["fields"]}
KINDS = ("case_opened", "case_closed", "risk_level_set", "strategy_meeting_held")


def decided(kind: str, days: float, **fields: Any) -> dict[str, Any]:
    """A validated HubDecision record, ``days`` after T0."""
    return schemas.from_json("HubDecision", events.decision(CHILD, kind, T0 + timedelta(days=days), **fields))


def run(decisions: Iterable[dict[str, Any]], state: rule.FlagState | None = None):
    """Fold decisions in order; the final state and every flag raised, in order."""
    state = state or rule.FlagState()
    flags: list[dict[str, Any]] = []
    for d in decisions:
        state, out = rule.apply(state, d)
        flags.extend(out)
    return state, flags


def test_case_opened_with_nhs_number_raises_an_active_at_risk_flag() -> None:
    state, [flag] = run([decided("case_opened", 0, nhs_number=NHS)])
    assert flag["status"] == "active"
    assert (flag["code"], flag["display"]) == ("716565009", "At increased risk of child sexual exploitation")
    assert (flag["nhs_number"], flag["period_start"], flag["period_end"]) == (NHS, T0.date(), None)
    assert flag["flag_id"] == rule.flag_id(CHILD)
    assert flag["owning_authority"] == "Leicestershire County Council"
    assert flag["contact_phone"] == "0116 496 0200"
    assert flag["author"] == rule.AUTHOR
    assert flag["status_reason"] is None
    assert state.active


def test_case_opened_without_nhs_number_raises_nothing() -> None:
    state, flags = run([decided("case_opened", 0)])
    assert flags == []
    assert not state.active


def test_a_later_decision_supplying_the_nhs_number_raises_the_flag_from_that_day() -> None:
    _, [flag] = run([decided("case_opened", 0), decided("risk_level_set", 3, nhs_number=NHS)])
    assert (flag["status"], flag["nhs_number"], flag["period_start"]) == ("active", NHS, date(2024, 3, 8))


def test_nhs_number_once_known_is_remembered_for_later_decisions() -> None:
    _, flags = run([
        decided("strategy_meeting_held", 0, nhs_number=NHS),
        decided("case_opened", 1),
    ])
    assert [f["nhs_number"] for f in flags] == [NHS]


def test_risk_level_set_while_active_with_the_same_contact_raises_nothing() -> None:
    state, flags = run([decided("case_opened", 0, nhs_number=NHS), decided("risk_level_set", 2)])
    assert len(flags) == 1
    assert state.active


def test_a_changed_contact_publishes_an_updated_flag_with_the_same_id_and_period() -> None:
    _, [first, updated] = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("risk_level_set", 2, phone=OTHER_PHONE),
    ])
    assert updated["contact_phone"] == OTHER_PHONE
    assert (updated["flag_id"], updated["period_start"], updated["status"]) == (
        first["flag_id"], first["period_start"], "active",
    )
    assert updated["event_id"] != first["event_id"]


def test_a_changed_authority_publishes_an_updated_flag() -> None:
    _, flags = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("risk_level_set", 2, authority="Leicester City Council"),
    ])
    assert [f["owning_authority"] for f in flags] == [
        "Leicestershire County Council", "Leicester City Council",
    ]


def test_a_contact_first_given_at_a_strategy_meeting_still_reaches_health_at_the_next_risk_level() -> None:
    # The strategy meeting publishes nothing, so it must not make the new number look already sent.
    _, flags = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("strategy_meeting_held", 1, phone=OTHER_PHONE),
        decided("risk_level_set", 2, phone=OTHER_PHONE),
    ])
    assert [f["contact_phone"] for f in flags] == ["0116 496 0200", OTHER_PHONE]


def test_case_closed_makes_the_flag_inactive_with_period_end_and_the_decisions_reason() -> None:
    state, [_, closed] = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("case_closed", 40, reason="Risk reduced; closed at review."),
    ])
    assert closed["status"] == "inactive"
    assert (closed["period_start"], closed["period_end"]) == (T0.date(), (T0 + timedelta(days=40)).date())
    assert closed["status_reason"] == "Risk reduced; closed at review."
    assert closed["flag_id"] == rule.flag_id(CHILD)
    assert not state.active


def test_case_closed_without_an_active_flag_raises_nothing() -> None:
    assert run([decided("case_closed", 0, nhs_number=NHS)])[1] == []


def test_closed_then_reopened_is_active_again_with_a_new_period_start_and_the_same_flag_id() -> None:
    _, [opened, closed, reopened] = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("case_closed", 10),
        decided("case_opened", 30),
    ])
    assert reopened["status"] == "active"
    assert reopened["period_start"] == (T0 + timedelta(days=30)).date()
    assert (reopened["period_end"], reopened["status_reason"]) == (None, None)
    assert opened["flag_id"] == closed["flag_id"] == reopened["flag_id"]
    assert len({opened["event_id"], closed["event_id"], reopened["event_id"]}) == 3


def test_strategy_meeting_held_raises_nothing() -> None:
    assert run([decided("strategy_meeting_held", 0, nhs_number=NHS)])[1] == []
    assert run([decided("case_opened", 0, nhs_number=NHS), decided("strategy_meeting_held", 1)])[1][1:] == []


def test_a_corrected_nhs_number_publishes_an_updated_flag() -> None:
    _, flags = run([
        decided("case_opened", 0, nhs_number=NHS),
        decided("risk_level_set", 2, nhs_number=CORRECTED_NHS),
    ])
    assert [f["nhs_number"] for f in flags] == [NHS, CORRECTED_NHS]


def test_a_redelivered_decision_raises_nothing_more() -> None:
    opened = decided("case_opened", 0, nhs_number=NHS)
    assert len(run([opened, opened])[1]) == 1


def test_state_round_trips_through_its_json_form() -> None:
    state, _ = run([decided("case_opened", 0, nhs_number=NHS)])
    assert rule.FlagState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert rule.FlagState.from_json(None) == rule.FlagState()


def test_naive_occurred_at_is_rejected_naming_the_field() -> None:
    naive = decided("case_opened", 0, nhs_number=NHS) | {"occurred_at": datetime(2024, 3, 5, 10, 0)}
    with pytest.raises(ValueError, match="occurred_at"):
        rule.apply(rule.FlagState(), naive)


_steps = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.sampled_from([None, NHS, CORRECTED_NHS]),
        st.sampled_from(["0116 496 0200", OTHER_PHONE]),
    ),
    max_size=12,
)


@given(_steps)
def test_every_flag_is_a_valid_health_cse_flag_with_only_the_schemas_fields(steps) -> None:
    decisions = [
        decided(kind, day, nhs_number=nhs, phone=phone) for day, (kind, nhs, phone) in enumerate(steps)
    ]
    _, flags = run(decisions)
    for flag in flags:
        assert set(flag) <= FLAG_FIELDS
        published = flag | {"reported_at": flag["occurred_at"] + timedelta(seconds=1)}
        assert schemas.validate("HealthCseFlag", published)["flag_id"] == rule.flag_id(CHILD)


@given(_steps)
def test_a_flag_is_made_inactive_only_once_after_being_active(steps) -> None:
    decisions = [
        decided(kind, day, nhs_number=nhs, phone=phone) for day, (kind, nhs, phone) in enumerate(steps)
    ]
    state, flags = run(decisions)
    statuses = [f["status"] for f in flags]
    # Never two inactive in a row, and never inactive first: only an active flag can be closed.
    assert all(not (a == b == "inactive") for a, b in itertools.pairwise(statuses))
    assert statuses[:1] != ["inactive"]
    assert state.active == (statuses[-1:] == ["active"])


def test_a_replayed_decision_publishes_nothing_again() -> None:
    """A replay from before a crash hands the rule decisions it has applied: a re-delivered case
    opening after the case closed must not make the closed flag active again."""
    opened = decided("case_opened", 0, nhs_number=NHS)
    closed = decided("case_closed", 10, reason="Risk reduced; agreed at the panel")
    state, flags = run([opened, closed])
    assert [f["status"] for f in flags] == ["active", "inactive"]
    replayed, again = run([opened, closed], state)
    assert again == []
    assert replayed == state


@given(st.permutations(range(4)), st.integers(min_value=1, max_value=3))
def test_decisions_applied_twice_in_any_prefix_publish_what_once_did(order: list[int], repeats: int) -> None:
    decisions = [
        decided("case_opened", 0, nhs_number=NHS),
        decided("risk_level_set", 1, risk_level="high"),
        decided("case_closed", 2, reason="Moved out of the area"),
        decided("case_opened", 3),
    ]
    once_state, _ = run(decisions)
    replays = [d for i in order[:repeats] for d in decisions[: i + 1]]
    twice_state, twice = run(replays, once_state)
    assert twice == []
    assert twice_state.active == once_state.active
