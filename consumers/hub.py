"""The hub case store: alerts become flags on the CSE tracker; hub decisions update the tracker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg2.extras import execute_values

from consumers import db
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
        if alerts:
            self._write_alerts(cur, alerts)
        for decision in decisions:
            self._write_decision(cur, decision)
        db.log_access(
            cur,
            actor=ACTOR,
            action="write",
            purpose="record alert or hub decision on the CSE tracker",
            store="hub",
            record_refs=[a["alert_id"] for a in alerts] + [d["event_id"] for d in decisions],
        )

    @staticmethod
    def _write_alerts(cur: db.Cursor, alerts: list[dict[str, Any]]) -> None:
        # The batch goes as one JSON document, which the server turns into rows itself: far less
        # work on both sides than a VALUES list of thousands of quoted tuples.
        rows = json.dumps([
            {
                "alert_id": a["alert_id"], "rule": a["rule"], "subject_kind": a["subject_kind"],
                "subject": a["subject"], "area": a["area"], "severity": a["severity"],
                "window_start": a["window_start"].isoformat(), "window_end": a["window_end"].isoformat(),
                "evidence": a["evidence"], "raised_at": a["raised_at"].isoformat(),
                "settings": a["settings"], "handling_conditions": a["handling_conditions"],
                "resolves": a["resolves"],
            }
            for a in alerts
        ])
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
            " SELECT alert_id, resolves FROM inserted WHERE resolves IS NOT NULL",
            {"rows": rows, "actor": ACTOR},
        )
        follow_ups = cur.fetchall()
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

    @staticmethod
    def _write_decision(cur: db.Cursor, d: dict[str, Any]) -> None:
        cur.execute(
            "INSERT INTO hub.decisions"
            " (event_id, child_key, kind, risk_level, reason, decided_by, occurred_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            (d["event_id"], d["person_key"], d["kind"], d.get("risk_level"), d.get("reason"),
             d["decided_by"], d["occurred_at"]),
        )
        if cur.rowcount == 0:
            return
        kind = d["kind"]
        if kind == "strategy_meeting_held":
            return
        status = "closed" if kind == "case_closed" else "open"
        cur.execute(
            "INSERT INTO hub.children AS c (child_key, nhs_number, case_status, risk_level, owning_authority,"
            " authority_phone, opened_at, closed_at, updated_at)"
            " VALUES (%(key)s, %(nhs)s, %(status)s, %(risk)s, %(la)s, %(phone)s,"
            "  CASE WHEN %(status)s = 'open' THEN %(at)s END,"
            " CASE WHEN %(status)s = 'closed' THEN %(at)s END, %(at)s)"
            " ON CONFLICT (child_key) DO UPDATE SET"
            "  nhs_number = COALESCE(EXCLUDED.nhs_number, c.nhs_number),"
            "  case_status = EXCLUDED.case_status,"
            "  risk_level = COALESCE(EXCLUDED.risk_level, c.risk_level),"
            "  owning_authority = COALESCE(EXCLUDED.owning_authority, c.owning_authority),"
            "  authority_phone = COALESCE(EXCLUDED.authority_phone, c.authority_phone),"
            "  opened_at = CASE WHEN EXCLUDED.case_status = 'open' AND c.case_status = 'closed'"
            "   THEN EXCLUDED.updated_at ELSE COALESCE(c.opened_at, EXCLUDED.opened_at) END,"
            "  closed_at = EXCLUDED.closed_at,"
            "  updated_at = EXCLUDED.updated_at"
            " WHERE c.updated_at <= EXCLUDED.updated_at",
            {
                "key": d["person_key"], "nhs": d.get("nhs_number"), "status": status,
                "risk": d.get("risk_level"), "la": d.get("owning_authority"), "phone": d.get("contact_phone"),
                "at": d["occurred_at"],
            },
        )


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
