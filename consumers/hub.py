"""The hub case store: alerts become flags on the CSE tracker; hub decisions update the tracker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg2.extras import execute_values

from consumers import concerns, db
from consumers.sink import Decoded

ACTOR = "hub-consumer"
TRIAGE_STATUSES = ("new", "acknowledged", "actioned", "closed")
ALERT_COLUMNS = (
    "alert_id, rule, subject_kind, subject, area, severity, window_start, window_end, evidence,"
    " raised_at, settings, handling_conditions, resolves"
)


class HubHandler:
    store = "hub"

    def write(self, cur: db.Cursor, batch: Sequence[Decoded]) -> None:
        alerts = [d.record for d in batch if d.schema == "Alert"]
        decisions = [d.record for d in batch if d.schema == "HubDecision"]
        events = [d for d in batch if d.schema in EVIDENCE_SCHEMAS]
        if events:
            write_evidence(cur, events)
        if alerts:
            raised = self._write_alerts(cur, alerts)
            write_concerns(cur, [a for a in alerts if a["alert_id"] in raised])
        for decision in decisions:
            self._write_decision(cur, decision)
        db.log_access(
            cur,
            actor=ACTOR,
            action="write",
            purpose="record alert, hub decision or agency evidence on the CSE tracker",
            store="hub",
            record_refs=[a["alert_id"] for a in alerts]
            + [d["event_id"] for d in decisions]
            + [d.record["event_id"] for d in events],
        )

    @staticmethod
    def _write_alerts(cur: db.Cursor, alerts: list[dict[str, Any]]) -> set[str]:
        """Insert the alerts not stored yet; returns their ids."""
        # The batch goes as one JSON document, which the server turns into rows itself: far less
        # work on both sides than a VALUES list of thousands of quoted tuples.
        rows = json.dumps(
            [
                {
                    "alert_id": a["alert_id"],
                    "rule": a["rule"],
                    "subject_kind": a["subject_kind"],
                    "subject": a["subject"],
                    "area": a["area"],
                    "severity": a["severity"],
                    "window_start": a["window_start"].isoformat(),
                    "window_end": a["window_end"].isoformat(),
                    "evidence": a["evidence"],
                    "raised_at": a["raised_at"].isoformat(),
                    "settings": a["settings"],
                    "handling_conditions": a["handling_conditions"],
                    "resolves": a["resolves"],
                }
                for a in alerts
            ]
        )
        # Alert ids are deterministic, so a replayed alert is the same row: keep the first. Each
        # alert inserted gets its history row in the same statement.
        cur.execute(
            "WITH inserted AS ("
            " INSERT INTO hub.alert_flags (" + ALERT_COLUMNS + ")"
            " SELECT " + ALERT_COLUMNS + " FROM json_populate_recordset(NULL::hub.alert_flags, %(rows)s)"
            " ON CONFLICT (alert_id) DO NOTHING RETURNING alert_id, resolves"
            "), raised AS ("
            " INSERT INTO hub.alert_flag_history (alert_id, from_status, to_status, actor, note)"
            " SELECT alert_id, NULL, 'new', %(actor)s, 'raised by the stream worker' FROM inserted"
            ")"
            " SELECT alert_id, resolves FROM inserted",
            {"rows": rows, "actor": ACTOR},
        )
        inserted = cur.fetchall()
        follow_ups = [(alert_id, resolves) for alert_id, resolves in inserted if resolves is not None]
        if follow_ups:
            execute_values(
                cur,
                "INSERT INTO hub.alert_flag_history (alert_id, from_status, to_status, actor, note)"
                " SELECT v.alert_id, v.from_status, v.to_status, v.actor, v.note FROM (VALUES %s)"
                " AS v(alert_id, from_status, to_status, actor, note)"
                " WHERE EXISTS (SELECT 1 FROM hub.alert_flags f WHERE f.alert_id = v.alert_id)",
                [
                    (resolves, None, "new", ACTOR, f"follow-up {alert_id} resolves this alert")
                    for alert_id, resolves in follow_ups
                ],
            )
        return {alert_id for alert_id, _ in inserted}

    @staticmethod
    def _write_decision(cur: db.Cursor, d: dict[str, Any]) -> None:
        cur.execute(
            "INSERT INTO hub.decisions"
            " (event_id, child_key, kind, risk_level, reason, decided_by, occurred_at, authority)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            (
                d["event_id"],
                d["person_key"],
                d["kind"],
                d.get("risk_level"),
                d.get("reason"),
                d["decided_by"],
                d["occurred_at"],
                d["area"],
            ),
        )
        if cur.rowcount == 0:
            return
        kind = d["kind"]
        if kind == "strategy_meeting_held":
            return
        status = "closed" if kind == "case_closed" else "open"
        cur.execute(
            "INSERT INTO hub.children AS c (child_key, nhs_number, case_status, risk_level, owning_authority,"
            " authority_phone, opened_at, closed_at, updated_at, authority)"
            " VALUES (%(key)s, %(nhs)s, %(status)s, %(risk)s, %(la)s, %(phone)s,"
            "  CASE WHEN %(status)s = 'open' THEN %(at)s END,"
            " CASE WHEN %(status)s = 'closed' THEN %(at)s END, %(at)s, %(area)s)"
            " ON CONFLICT (child_key) DO UPDATE SET"
            "  nhs_number = COALESCE(EXCLUDED.nhs_number, c.nhs_number),"
            "  case_status = EXCLUDED.case_status,"
            "  risk_level = COALESCE(EXCLUDED.risk_level, c.risk_level),"
            "  owning_authority = COALESCE(EXCLUDED.owning_authority, c.owning_authority),"
            "  authority_phone = COALESCE(EXCLUDED.authority_phone, c.authority_phone),"
            "  authority = EXCLUDED.authority,"
            "  opened_at = CASE WHEN EXCLUDED.case_status = 'open' AND c.case_status = 'closed'"
            "   THEN EXCLUDED.updated_at ELSE COALESCE(c.opened_at, EXCLUDED.opened_at) END,"
            "  closed_at = EXCLUDED.closed_at,"
            "  updated_at = EXCLUDED.updated_at"
            " WHERE c.updated_at <= EXCLUDED.updated_at",
            {
                "key": d["person_key"],
                "nhs": d.get("nhs_number"),
                "status": status,
                "risk": d.get("risk_level"),
                "la": d.get("owning_authority"),
                "phone": d.get("contact_phone"),
                "at": d["occurred_at"],
                "area": d["area"],
            },
        )


EVIDENCE_SCHEMAS = ("IntelligenceReport", "MissingEpisodeEvent")


def _evidence_row(d: Decoded) -> dict[str, Any]:
    """An agency event as the pages show it: the narrative still sealed, children by their keys."""
    r = d.record
    at = {k: r[k].isoformat() for k in ("occurred_at", "reported_at")}
    if d.schema == "IntelligenceReport":
        grading = r.get("grading")
        return {
            "event_id": r["event_id"],
            "source": "intelligence",
            "kind": "intelligence_report",
            "report_id": r["report_id"],
            "episode_id": None,
            **at,
            "authority": r["area"],
            "agency": r["reporting_agency"],
            "agency_type": r["agency_type"],
            "children": [p["person_key"] for p in r["persons"] if p["role"] == "child_at_risk"],
            "detail": {
                "persons": [
                    {"person_key": p["person_key"], "role": p["role"], "nhs_number": p.get("nhs_number")}
                    for p in r["persons"]
                ],
                "objects": r["objects"],
                "locations": r["locations"],
                "cse_indicators": r["cse_indicators"],
                "grading": None
                if grading is None
                else {
                    "source_evaluation": grading["source_evaluation"],
                    "intelligence_assessment": grading["intelligence_assessment"],
                },
            },
            "narrative": r["narrative"],
            "handling_code": None if grading is None else grading["handling_code"],
            "handling_conditions": None if grading is None else grading.get("handling_conditions"),
        }
    return {
        "event_id": r["event_id"],
        "source": "missing_episode",
        "kind": r["kind"],
        "report_id": None,
        "episode_id": r["episode_id"],
        **at,
        "authority": r["area"],
        "agency": r["agency"],
        "agency_type": r["agency_type"],
        "children": [r["person_key"]],
        "detail": {
            k: r.get(k)
            for k in (
                "nhs_number",
                "risk_level",
                "missing_from",
                "placing_authority",
                "host_authority",
                "last_seen",
                "found",
                "interview_outcome",
            )
        },
        "narrative": None,
        "handling_code": None,
        "handling_conditions": None,
    }


def write_evidence(cur: db.Cursor, events: Sequence[Decoded]) -> None:
    """Store agency events once each (by event id: a re-delivery is the same row)."""
    cur.execute(
        "WITH stored AS ("
        " INSERT INTO hub.evidence SELECT * FROM json_populate_recordset(NULL::hub.evidence, %s)"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, children, authority)"
        " INSERT INTO hub.evidence_children (child_key, event_id, authority)"
        " SELECT DISTINCT unnest(children), event_id, authority FROM stored",
        (json.dumps([_evidence_row(d) for d in events]),),
    )


def _concern_in(a: dict[str, Any], rule: str) -> concerns.AlertIn:
    return concerns.AlertIn(
        alert_id=a["alert_id"],
        rule=rule,
        subject_kind=a["subject_kind"],
        subject=a["subject"],
        area=a["area"],
        severity=a["severity"],
        raised_at=a["raised_at"],
        evidence=tuple(a["evidence"]),
        resolves=a["resolves"],
    )


def write_concerns(cur: db.Cursor, alerts: Sequence[dict[str, Any]]) -> None:
    """Fold newly stored alerts into their concerns (locked while folded), with history.

    A follow-up (``resolves``) joins the concern of the alert it resolves."""
    if not alerts:
        return
    resolved = [a["resolves"] for a in alerts if a["resolves"]]
    resolved_rule: dict[str, str] = {}
    if resolved:
        cur.execute("SELECT alert_id, rule FROM hub.alert_flags WHERE alert_id = ANY(%s)", (resolved,))
        resolved_rule = dict(cur.fetchall())
    incoming = [
        _concern_in(a, resolved_rule[a["resolves"]] if a["resolves"] else a["rule"])
        for a in alerts
        if not a["resolves"] or a["resolves"] in resolved_rule
    ]
    ids = sorted({concerns.concern_id(a.rule, a.subject_kind, a.subject) for a in incoming})
    cur.execute(
        f"SELECT {', '.join(concerns.COLUMNS)} FROM hub.concerns WHERE concern_id = ANY(%s)"
        " ORDER BY concern_id FOR UPDATE",
        (ids,),
    )
    held = {
        row[0]: concerns.Concern.from_row(dict(zip(concerns.COLUMNS, row, strict=True)))
        for row in cur.fetchall()
    }
    now = datetime.now(UTC)
    changed, history = concerns.fold_all(held, incoming, actor=ACTOR, now=now)
    rows = [c.to_row() for c in changed.values()]
    cur.execute(
        f"INSERT INTO hub.concerns ({', '.join(concerns.COLUMNS)})"
        f" SELECT {', '.join(concerns.COLUMNS)} FROM json_populate_recordset(NULL::hub.concerns, %s)"
        " ON CONFLICT (concern_id) DO UPDATE SET "
        + ", ".join(f"{c} = EXCLUDED.{c}" for c in concerns.COLUMNS[5:]),
        (json.dumps(rows, default=_iso),),
    )
    authority = {c.concern_id: c.authority for c in changed.values()}
    execute_values(
        cur,
        "INSERT INTO hub.concern_history (concern_id, authority, action, actor, at, from_status, to_status,"
        " alert_id, note) VALUES %s",
        [
            (
                h.concern_id,
                authority[h.concern_id],
                h.action,
                h.actor,
                h.at,
                h.from_status,
                h.to_status,
                h.alert_id,
                h.note,
            )
            for h in history
        ],
    )
    execute_values(
        cur,
        "UPDATE hub.alert_flags f SET concern_id = v.concern_id FROM (VALUES %s) AS v(alert_id, concern_id)"
        " WHERE f.alert_id = v.alert_id",
        [(h.alert_id, h.concern_id) for h in history],
    )


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


def set_triage_status(cur: db.Cursor, alert_id: str, status: str, actor: str, note: str | None) -> str:
    """Move an alert flag to a triage status, with history; returns the previous status."""
    if status not in TRIAGE_STATUSES:
        raise ValueError(f"triage status must be one of {TRIAGE_STATUSES}, got {status!r}")
    cur.execute("SELECT triage_status FROM hub.alert_flags WHERE alert_id = %s FOR UPDATE", (alert_id,))
    row = cur.fetchone()
    if row is None:
        raise LookupError(f"no alert with alert_id {alert_id!r}")
    previous: str = row[0]
    cur.execute(
        "UPDATE hub.alert_flags SET triage_status = %s, owner = COALESCE(owner, %s) WHERE alert_id = %s",
        (status, actor, alert_id),
    )
    cur.execute(
        "INSERT INTO hub.alert_flag_history (alert_id, from_status, to_status, actor, note)"
        " VALUES (%s, %s, %s, %s, %s)",
        (alert_id, previous, status, actor, note),
    )
    db.log_access(
        cur, actor=actor, action="write", purpose=f"triage: {status}", store="hub", record_refs=[alert_id]
    )
    return previous
