"""Health CSE flags from hub decisions: people at the hub decide, the flag follows.

A flag is raised (SNOMED CT 716565009, "At increased risk of child sexual exploitation") when the
hub opens a case or sets a risk level for a child whose NHS number it knows, and made inactive,
with the hub's stated reason, when the case closes. Algorithmic alerts never raise a flag.
The flag carries only what health may see: NHS number, code, dates, author and whom to call.

State is per child (the hub-decisions key). Pure: no I/O, time from the decision.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from typing import Any

AT_RISK_CODE = "716565009"
AT_RISK_DISPLAY = "At increased risk of child sexual exploitation"
AUTHOR = "Multi-agency CSE hub"
RAISING_DECISIONS = ("case_opened", "risk_level_set")


@dataclass(frozen=True, slots=True)
class FlagState:
    nhs_number: str | None = None
    active: bool = False
    period_start: str | None = None  # ISO date, so the state is plain JSON
    owning_authority: str | None = None
    contact_phone: str | None = None
    # Every decision folded in (event ids, sorted): a replay after a crash, or a decision
    # delivered twice, is recognised and publishes nothing. A child has a handful of decisions.
    applied: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FlagState:
        if not data:
            return cls()
        return cls(**{**data, "applied": tuple(data.get("applied", ()))})


def flag_id(person_key: str, code: str = AT_RISK_CODE) -> str:
    return hashlib.sha256(f"health_flag\0{person_key}\0{code}".encode()).hexdigest()[:32]


def _flag(decision: dict[str, Any], state: FlagState, status: str, period_end: date | None) -> dict[str, Any]:
    fid = flag_id(decision["person_key"])
    occurred: datetime = decision["occurred_at"]
    assert state.nhs_number and state.period_start and state.owning_authority and state.contact_phone
    return {
        "event_id": hashlib.sha256(f"{decision['event_id']}\0{fid}".encode()).hexdigest()[:32],
        "occurred_at": occurred,
        "reported_at": decision["reported_at"],
        "flag_id": fid,
        "nhs_number": state.nhs_number,
        "status": status,
        "code": AT_RISK_CODE,
        "display": AT_RISK_DISPLAY,
        "period_start": date.fromisoformat(state.period_start),
        "period_end": period_end,
        "author": AUTHOR,
        "owning_authority": state.owning_authority,
        "contact_phone": state.contact_phone,
        "status_reason": decision["reason"] if status != "active" else None,
    }


def apply(state: FlagState, decision: dict[str, Any]) -> tuple[FlagState, list[dict[str, Any]]]:
    """Fold one HubDecision record into the child's flag state; returns flag events to publish.
    A decision already applied (by event id) changes nothing and publishes nothing."""
    occurred: datetime = decision["occurred_at"]
    if occurred.tzinfo is None:
        raise ValueError(f"occurred_at must be timezone-aware UTC, got {occurred!r}")
    event_id: str = decision["event_id"]
    at = bisect.bisect_left(state.applied, event_id)
    if at < len(state.applied) and state.applied[at] == event_id:
        return state, []
    state, flags = _apply(state, decision, occurred)
    return replace(state, applied=(*state.applied[:at], event_id, *state.applied[at:])), flags


def _apply(
    state: FlagState, decision: dict[str, Any], occurred: datetime
) -> tuple[FlagState, list[dict[str, Any]]]:
    known = replace(
        state,
        nhs_number=decision.get("nhs_number") or state.nhs_number,
        owning_authority=decision["owning_authority"],
        contact_phone=decision["contact_phone"],
    )
    kind = decision["kind"]
    if kind in RAISING_DECISIONS and known.nhs_number:
        if state.active and _shown(known) == _shown(state):
            return known, []
        raised = replace(known, active=True, period_start=known.period_start or occurred.date().isoformat())
        return raised, [_flag(decision, raised, "active", None)]
    if kind == "case_closed" and state.active:
        closed = replace(known, active=False)
        flag = _flag(decision, closed, "inactive", occurred.date())
        return replace(closed, period_start=None), [flag]
    # While a flag is active the state holds what health was last sent: a decision that publishes
    # nothing (a strategy meeting) must not absorb a new contact, or the next risk level set with
    # that contact would compare equal and health would keep the old number.
    return (state if state.active else known), []


def _shown(state: FlagState) -> tuple[str | None, str | None, str | None]:
    """What an active flag shows health that a later decision can change."""
    return state.nhs_number, state.owning_authority, state.contact_phone
