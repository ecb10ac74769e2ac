"""A hub decision raises a health flag that reads back as FHIR R4 Flag; closing the case makes it inactive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from fhir.resources.R4B.flag import Flag

from consumers.fhir import to_fhir_flag
from consumers.queries import show_flags
from consumers.run import run_sink
from producers.decisions import publish_decision
from tests.support.stack import Namespace, wait_for_worker

NHS = "9434765919"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def flags_after_pipeline(ns: Namespace) -> list[dict[str, object]]:
    wait_for_worker(ns, f"{ns.prefix}hubstream-worker")
    run_sink(ns.settings, "health", idle_polls_before_stop=4)
    return show_flags(ns.settings, NHS, reader="gp-ooh-clinician-7", purpose="unscheduled care attendance")


def access_log(ns: Namespace, action: str) -> list[tuple[str, str, str]]:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT actor, purpose, record_ref FROM audit.access_log WHERE action = %s ORDER BY id", (action,)
        )
        return list(cur.fetchall())


def test_case_opened_raises_flag_and_case_closed_makes_it_inactive_with_reason(ns: Namespace) -> None:
    s = ns.settings
    ns.start_worker()
    publish_decision(
        s, "case_opened", child_key="pk_f", decided_by="hub-dsl-2", nhs_number=NHS, risk="medium", at=T0
    )
    [flag] = flags_after_pipeline(ns)
    assert (flag["status"], flag["code"], str(flag["period_start"])) == ("active", "716565009", "2026-05-04")
    fhir = Flag.model_validate(to_fhir_flag(flag))
    assert fhir.status == "active"
    assert fhir.subject.identifier.value == NHS

    publish_decision(
        s,
        "case_closed",
        child_key="pk_f",
        decided_by="hub-dsl-2",
        reason="Risk reduced; CSE plan completed at review",
        at=T0 + timedelta(days=40),
    )
    [flag] = flags_after_pipeline(ns)
    assert (flag["status"], str(flag["period_end"])) == ("inactive", "2026-06-13")
    assert flag["status_reason"] == "Risk reduced; CSE plan completed at review"
    fhir = Flag.model_validate(to_fhir_flag(flag))
    assert fhir.status == "inactive"
    assert "Risk reduced" in fhir.text.div

    reads = access_log(ns, "read")
    assert reads == [("gp-ooh-clinician-7", "unscheduled care attendance", flag["flag_id"])] * 2
    assert [ref for _, _, ref in access_log(ns, "write")] == [flag["flag_id"]] * 2


def test_health_role_cannot_read_hub_tables(ns: Namespace) -> None:
    conn = psycopg2.connect(ns.settings.health_store_dsn)
    try:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
            cur.execute("SELECT * FROM hub.alert_flags")
    finally:
        conn.close()


@pytest.mark.parametrize("dsn_name", ["pg_dsn", "hub_store_dsn", "health_store_dsn"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit.access_log SET purpose = 'x'",
        "DELETE FROM audit.access_log",
        "TRUNCATE audit.access_log",
    ],
)
def test_nobody_can_change_or_remove_access_log_rows(ns: Namespace, dsn_name: str, statement: str) -> None:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO audit.access_log (actor, action, purpose, store, record_ref)"
            " VALUES ('t', 'read', 'test', 'health', 'r1')"
        )
    conn = psycopg2.connect(getattr(ns.settings, dsn_name))
    try:
        with pytest.raises(psycopg2.Error), conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit.access_log")
        assert cur.fetchone()[0] == 1
