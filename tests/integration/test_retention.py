"""CSE records are kept: erasing one needs the eraser role and a reason, and is itself logged."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import psycopg2
import pytest

from consumers.hub import HubHandler
from consumers.sink import Decoded
from tests.support.events import alert
from tests.support.stack import Namespace

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def stored_alert(ns: Namespace) -> str:
    record = alert(7, T0)
    with psycopg2.connect(ns.settings.hub_store_dsn) as conn, conn.cursor() as cur:
        HubHandler().write(cur, [Decoded("hubstream.alerts", 0, 0, None, "Alert", record)])
    conn.close()
    return str(record["alert_id"])


def as_eraser(ns: Namespace) -> str:
    name, password = f"eraser_{uuid4().hex[:8]}", uuid4().hex
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s IN ROLE cse_eraser", (password,))
    conn.close()
    return f"host=127.0.0.1 port={ns.settings.pg_port} dbname={ns.database} user={name} password={password}"


def count(ns: Namespace, sql: str) -> int:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchone()[0])


def test_the_store_role_cannot_delete_or_erase_a_record(ns: Namespace) -> None:
    alert_id = stored_alert(ns)
    conn = psycopg2.connect(ns.settings.hub_store_dsn)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("DELETE FROM hub.alert_flags WHERE alert_id = %s", (alert_id,))
        conn.rollback()
        with (
            pytest.raises(psycopg2.errors.InsufficientPrivilege, match="needs the cse_eraser role"),
            conn.cursor() as cur,
        ):
            cur.execute("SELECT hub.erase_alert(%s, %s)", (alert_id, "duplicate record created in error"))
    finally:
        conn.close()
    assert count(ns, "SELECT count(*) FROM hub.alert_flags") == 1


def test_an_eraser_needs_a_reason(ns: Namespace) -> None:
    alert_id = stored_alert(ns)
    conn = psycopg2.connect(as_eraser(ns))
    try:
        with (
            pytest.raises(psycopg2.errors.InvalidParameterValue, match="needs a stated reason"),
            conn.cursor() as cur,
        ):
            cur.execute("SELECT hub.erase_alert(%s, %s)", (alert_id, ""))
    finally:
        conn.close()
    assert count(ns, "SELECT count(*) FROM hub.alert_flags") == 1


def test_an_eraser_with_a_reason_erases_and_the_erasure_is_logged(ns: Namespace) -> None:
    alert_id = stored_alert(ns)
    conn = psycopg2.connect(as_eraser(ns))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT hub.erase_alert(%s, %s)", (alert_id, "created from a test feed in error"))
    finally:
        conn.close()
    assert count(ns, "SELECT count(*) FROM hub.alert_flags") == 0
    assert (
        count(
            ns,
            "SELECT count(*) FROM audit.access_log WHERE action = 'erase'"
            f" AND record_ref = '{alert_id}' AND purpose = 'created from a test feed in error'",
        )
        == 1
    )
