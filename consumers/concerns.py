"""Concerns: what the hub works, one per subject and rule, not one per alert.

An alert joins the concern of its rule and subject (``concern_id``): the first opens it, a later
one updates it (severity at its highest, evidence the union of all its alerts'); a follow-up that
resolves an earlier alert is recorded on that alert's concern and changes neither its status
nor its severity. A closed concern
re-opens only on evidence dated after it was closed: an alert raised (in event time) after the
closing; an older alert, arriving late or replayed, is kept on the concern and leaves it closed.

People move a concern through triage: acknowledge, assign, action (with a note) and close (with a
reason). Each change is a :class:`Change`, the concern's history.

Pure functions over values: the hub sink and the web application apply them in PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

STATUSES = ("new", "acknowledged", "actioned", "closed")
SEVERITIES = ("low", "medium", "high")
ACTIONS = ("acknowledge", "assign", "action", "close")
NOTE_MAX = 2000


class TriageError(ValueError):
    """A triage action that cannot be taken: ``field`` names the form field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def concern_id(rule: str, subject_kind: str, subject: str) -> str:
    """Stable across replays: the same rule and subject are always the same concern."""
    return hashlib.sha256(f"{rule}\x1f{subject_kind}\x1f{subject}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class AlertIn:
    """What a concern needs of an alert."""

    alert_id: str
    rule: str
    subject_kind: str
    subject: str
    area: str
    severity: str
    raised_at: datetime  # event time of the evidence that raised it
    evidence: tuple[str, ...]
    resolves: str | None = None


@dataclass(frozen=True, slots=True)
class Concern:
    concern_id: str
    rule: str
    subject_kind: str
    subject: str
    authority: str
    severity: str
    status: str
    owner: str | None
    opened_at: datetime
    last_change_at: datetime
    closed_at: datetime | None
    close_reason: str | None
    alert_count: int
    evidence: tuple[str, ...]
    latest_evidence_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Concern:
        """A concern as hub.concerns holds it (the columns are COLUMNS; evidence an array)."""
        return cls(**{**{name: row[name] for name in COLUMNS}, "evidence": tuple(row["evidence"])})

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS} | {"evidence": list(self.evidence)}


# hub.concerns' columns that a Concern is made of, in the order of its fields.
COLUMNS = tuple(f.name for f in fields(Concern))


@dataclass(frozen=True, slots=True)
class Change:
    """One line of a concern's history."""

    concern_id: str
    action: str  # raised, updated, reopened, kept-closed, acknowledge, assign, action, close
    actor: str
    at: datetime
    from_status: str | None
    to_status: str
    alert_id: str | None = None
    note: str | None = None


def _worse(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) >= SEVERITIES.index(b) else b


def _union(have: Sequence[str], more: Sequence[str]) -> tuple[str, ...]:
    seen = set(have)
    return (*have, *(e for e in dict.fromkeys(more) if e not in seen))


def fold(concern: Concern | None, alert: AlertIn, *, actor: str, now: datetime) -> tuple[Concern, Change]:
    """The concern after ``alert`` joins it, and the history line that says so."""
    cid = concern_id(alert.rule, alert.subject_kind, alert.subject)
    if concern is None:
        opened = Concern(
            concern_id=cid,
            rule=alert.rule,
            subject_kind=alert.subject_kind,
            subject=alert.subject,
            authority=alert.area,
            severity=alert.severity,
            status="new",
            owner=None,
            opened_at=now,
            last_change_at=now,
            closed_at=None,
            close_reason=None,
            alert_count=1,
            evidence=tuple(dict.fromkeys(alert.evidence)),
            latest_evidence_at=alert.raised_at,
        )
        return opened, Change(cid, "raised", actor, now, None, "new", alert.alert_id)
    if concern.concern_id != cid:
        raise ValueError(f"alert {alert.alert_id} is about another concern ({cid}, not {concern.concern_id})")
    joined = replace(
        concern,
        severity=_worse(concern.severity, alert.severity),
        alert_count=concern.alert_count + 1,
        evidence=_union(concern.evidence, alert.evidence),
        latest_evidence_at=max(concern.latest_evidence_at, alert.raised_at),
    )
    if alert.resolves is not None:  # good news: recorded, never a re-opening or a higher severity
        return replace(joined, severity=concern.severity, last_change_at=now), Change(
            cid,
            "resolved",
            actor,
            now,
            concern.status,
            concern.status,
            alert.alert_id,
            f"follow-up: resolves alert {alert.resolves}",
        )
    if concern.status != "closed":
        updated = replace(joined, last_change_at=now)
        return updated, Change(cid, "updated", actor, now, concern.status, concern.status, alert.alert_id)
    assert concern.closed_at is not None
    if alert.raised_at > concern.closed_at:
        reopened = replace(joined, status="new", closed_at=None, close_reason=None, last_change_at=now)
        return reopened, Change(
            cid,
            "reopened",
            actor,
            now,
            "closed",
            "new",
            alert.alert_id,
            f"new evidence dated {alert.raised_at.isoformat()}, after the closing",
        )
    return joined, Change(
        cid,
        "kept-closed",
        actor,
        now,
        "closed",
        "closed",
        alert.alert_id,
        f"evidence dated {alert.raised_at.isoformat()}, before the closing",
    )


def fold_all(
    concerns: dict[str, Concern], alerts: Sequence[AlertIn], *, actor: str, now: datetime
) -> tuple[dict[str, Concern], list[Change]]:
    """Fold ``alerts`` in order into the ``concerns`` they join; returns the concerns changed."""
    changed: dict[str, Concern] = {}
    history: list[Change] = []
    for alert in alerts:
        cid = concern_id(alert.rule, alert.subject_kind, alert.subject)
        after, change = fold(changed.get(cid) or concerns.get(cid), alert, actor=actor, now=now)
        changed[cid] = after
        history.append(change)
    return changed, history


def _text(field: str, value: str | None, *, required: bool, what: str) -> str | None:
    text = (value or "").strip()
    if required and not text:
        raise TriageError(field, f"Enter {what}")
    if len(text) > NOTE_MAX:
        raise TriageError(
            field, f"{what.capitalize()} must be {NOTE_MAX} characters or fewer (it is {len(text)})"
        )
    return text or None


def triage(
    concern: Concern,
    action: str,
    *,
    actor: str,
    now: datetime,
    note: str | None = None,
    owner: str | None = None,
    reason: str | None = None,
) -> tuple[Concern, Change]:
    """The concern after a person's triage ``action``; a :class:`TriageError` names what is wrong."""
    if action not in ACTIONS:
        raise TriageError("action", f"Select what to do with this concern (one of {', '.join(ACTIONS)})")
    if concern.status == "closed":
        raise TriageError("action", "This concern is closed: it re-opens only on new evidence")
    cid, status = concern.concern_id, concern.status
    if action == "acknowledge":
        if status != "new":
            raise TriageError("action", f"This concern is already {status}")
        text = _text("note", note, required=False, what="a note")
        return (
            replace(concern, status="acknowledged", owner=concern.owner or actor, last_change_at=now),
            Change(cid, action, actor, now, status, "acknowledged", note=text),
        )
    if action == "assign":
        who = _text("owner", owner, required=True, what="who is to own this concern")
        assert who is not None
        if len(who) > 200:
            raise TriageError("owner", "The owner's name must be 200 characters or fewer")
        text = _text("note", note, required=False, what="a note")
        return (
            replace(concern, owner=who, last_change_at=now),
            Change(
                cid,
                action,
                actor,
                now,
                status,
                status,
                note=f"assigned to {who}" + (f": {text}" if text else ""),
            ),
        )
    if action == "action":
        text = _text("note", note, required=True, what="what was done")
        return (
            replace(concern, status="actioned", owner=concern.owner or actor, last_change_at=now),
            Change(cid, action, actor, now, status, "actioned", note=text),
        )
    why = _text("reason", reason, required=True, what="the reason for closing")
    return (
        replace(concern, status="closed", closed_at=now, close_reason=why, last_change_at=now),
        Change(cid, action, actor, now, status, "closed", note=why),
    )
