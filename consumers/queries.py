"""What the people at the hub run against the stores: list and triage alerts, read flags."""

from __future__ import annotations

from typing import Any

from consumers import db
from consumers.health import read_flags
from consumers.hub import set_triage_status
from hubstream.settings import Settings


def list_alerts(
    settings: Settings, *, status: str | None, rule: str | None, area: str | None, limit: int
) -> list[dict[str, Any]]:
    clauses, params = [], []
    for column, value in (("triage_status", status), ("rule", rule), ("area", area)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    conn = db.connect(settings.hub_store_dsn)
    try:
        with conn, conn.cursor() as cur:
            return db.fetch_dicts(
                cur,
                "SELECT alert_id, rule, severity, subject_kind, subject, area, window_start, window_end,"
                " raised_at, triage_status, owner, evidence, handling_conditions"
                f" FROM hub.alert_flags {where}"
                " ORDER BY raised_at DESC, alert_id LIMIT %s",
                [*params, limit],
            )
    finally:
        conn.close()


def triage(settings: Settings, alert_id: str, status: str, actor: str, note: str | None) -> str:
    conn = db.connect(settings.hub_store_dsn)
    try:
        with conn, conn.cursor() as cur:
            return set_triage_status(cur, alert_id, status, actor, note)
    finally:
        conn.close()


def show_flags(settings: Settings, nhs_number: str, *, reader: str, purpose: str) -> list[dict[str, Any]]:
    conn = db.connect(settings.health_store_dsn)
    try:
        with conn, conn.cursor() as cur:
            return read_flags(cur, nhs_number, reader=reader, purpose=purpose)
    finally:
        conn.close()
