"""Concerns and evidence in the real hub store, and access by owning authority enforced by
PostgreSQL itself: a practitioner's role sees its own authority's rows and no others, whatever
the query; the web application's login role sees nothing until it takes a user's role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from consumers import db
from consumers.concerns import concern_id
from consumers.hub import HubHandler
from consumers.sink import Decoded
from hubstream.protect import encrypt_narrative
from tests.support.stack import Namespace
from web import store
from web.people import NotAllowed, User

CITY, COUNTY = "E06000016", "E10000018"
T0 = datetime(2025, 5, 1, tzinfo=UTC)


def alert(
    n: int, child: str, area: str, *, severity: str = "medium", days: int = 0, evidence: tuple[str, ...] = ()
) -> Decoded:
    at = T0 + timedelta(days=days)
    record = {
        "event_id": f"alert-{n}",
        "occurred_at": at,
        "reported_at": at,
        "alert_id": f"alert-{n}",
        "rule": "repeat_missing",
        "subject_kind": "child",
        "subject": child,
        "area": area,
        "severity": severity,
        "window_start": at - timedelta(days=90),
        "window_end": at,
        "evidence": list(evidence or (f"ev-{n}",)),
        "raised_at": at,
        "settings": {"count": "3", "days": "90"},
        "handling_conditions": [],
        "resolves": None,
    }
    return Decoded("alerts", 0, n, None, "Alert", record)


def report(n: int, child: str, area: str) -> Decoded:
    record = {
        "event_id": f"ev-{n}",
        "report_id": f"report-{n}",
        "occurred_at": T0,
        "reported_at": T0,
        "area": area,
        "reporting_agency": "Premier Inn Leicester",
        "agency_type": "hotel",
        "persons": [
            {"person_key": child, "role": "child_at_risk", "nhs_number": None},
            {"person_key": "adult-1", "role": "adult_of_concern", "nhs_number": None},
        ],
        "objects": [{"kind": "vehicle", "value": "AB12 CDE"}],
        "locations": [
            {
                "lat": None,
                "lon": None,
                "postcode": "LE1 1AA",
                "uprn": None,
                "premises_name": "Hotel",
                "premises_type": "hotel",
            }
        ],
        "cse_indicators": ["hotels_taxis_fast_food"],
        "narrative": encrypt_narrative(f"Girl seen with older man ({n})"),
        "grading": {
            "source_evaluation": "B",
            "intelligence_assessment": 3,
            "handling_code": "C",
            "handling_conditions": "Not to be shared with the family",
        },
    }
    return Decoded("intelligence", 0, 100 + n, None, "IntelligenceReport", record)


@pytest.fixture
def hub(ns: Namespace) -> Iterator[psycopg2.extensions.connection]:
    conn = db.connect(ns.settings.hub_store_dsn)
    try:
        yield conn
    finally:
        conn.close()


def write(conn: Any, batch: list[Decoded]) -> None:
    with conn, conn.cursor() as cur:
        HubHandler().write(cur, batch)


def as_role(ns: Namespace, role: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """``query`` as ``role``, taken by the owner as the web application takes it (SET ROLE)."""
    conn = db.connect(ns.settings.pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"SET LOCAL ROLE {role}")
            cur.execute(query, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_alerts_about_one_child_and_rule_are_one_concern_once_each_on_replay(ns: Namespace, hub: Any) -> None:
    batch = [
        report(1, "child-a", CITY),
        alert(1, "child-a", CITY, evidence=("ev-1",)),
        alert(2, "child-a", CITY, severity="high", evidence=("ev-1", "ev-2")),
        alert(3, "child-b", COUNTY),
    ]
    write(hub, batch)
    write(hub, batch)  # redelivered: the same rows, no new history
    with hub, hub.cursor() as cur:
        rows = db.fetch_dicts(cur, "SELECT * FROM hub.concerns ORDER BY subject")
        history = db.fetch_dicts(cur, "SELECT concern_id, action FROM hub.concern_history ORDER BY id")
        linked = db.fetch_dicts(cur, "SELECT alert_id, concern_id FROM hub.alert_flags ORDER BY alert_id")
        evidence = db.fetch_dicts(cur, "SELECT * FROM hub.evidence")
    a, b = rows
    assert (a["subject"], a["alert_count"], a["severity"], a["evidence"], a["evidence_count"]) == (
        "child-a",
        2,
        "high",
        ["ev-1", "ev-2"],
        2,
    )
    assert a["concern_id"] == concern_id("repeat_missing", "child", "child-a")
    assert (b["subject"], b["authority"], b["status"]) == ("child-b", COUNTY, "new")
    assert [h["action"] for h in history] == ["raised", "updated", "raised"]
    assert {r["alert_id"]: r["concern_id"] for r in linked}["alert-2"] == a["concern_id"]
    [ev] = evidence
    assert ev["children"] == ["child-a"] and ev["narrative"].startswith("enc:v1:")  # still sealed at rest
    assert (ev["handling_code"], ev["handling_conditions"]) == ("C", "Not to be shared with the family")


def test_a_practitioner_sees_only_their_authority_s_rows(ns: Namespace, hub: Any) -> None:
    write(hub, [report(1, "child-a", CITY), alert(1, "child-a", CITY), alert(3, "child-b", COUNTY)])
    for table, column in (
        ("hub.concerns", "authority"),
        ("hub.alert_flags", "area"),
        ("hub.evidence", "authority"),
        ("hub.concern_history", "authority"),
    ):
        seen = {r[0] for r in as_role(ns, "hub_authority_e10000018", f"SELECT {column} FROM {table}")}
        assert seen <= {COUNTY}, table
        assert {r[0] for r in as_role(ns, "hub_authority_e06000016", f"SELECT {column} FROM {table}")} == {
            CITY
        }
    # Not even by asking for it by name.
    city = concern_id("repeat_missing", "child", "child-a")
    assert (
        as_role(ns, "hub_authority_e10000018", "SELECT * FROM hub.concerns WHERE concern_id = %s", (city,))
        == []
    )
    assert (
        as_role(
            ns,
            "hub_authority_e10000018",
            "UPDATE hub.concerns SET status = 'closed', closed_at = now(), close_reason = 'x'"
            " WHERE concern_id = %s RETURNING concern_id",
            (city,),
        )
        == []
    )
    assert {r[0] for r in as_role(ns, "hub_manager", "SELECT authority FROM hub.concerns")} == {CITY, COUNTY}
    assert {r[0] for r in as_role(ns, "hub_analyst", "SELECT authority FROM hub.concerns")} == {CITY, COUNTY}


@pytest.mark.parametrize(
    ("role", "query"),
    [
        ("hub_web", "SELECT * FROM hub.concerns"),  # the login role itself holds nothing
        ("hub_auditor", "SELECT * FROM hub.concerns"),
        ("hub_analyst", "UPDATE hub.concerns SET owner = 'x'"),
        ("hub_authority_e06000016", "UPDATE hub.concerns SET severity = 'low'"),  # only triage columns
        ("hub_authority_e06000016", "DELETE FROM hub.concerns"),
        ("hub_authority_e06000016", "SELECT * FROM audit.access_log"),
        ("hub_authority_e06000016", "SELECT * FROM health.cse_flags"),
    ],
)
def test_what_a_role_was_not_granted_is_refused(ns: Namespace, hub: Any, role: str, query: str) -> None:
    write(hub, [alert(1, "child-a", CITY)])
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(ns, role, query)


def test_triage_as_a_practitioner_then_new_evidence_after_the_closing_reopens(
    ns: Namespace, hub: Any
) -> None:
    write(hub, [alert(1, "child-a", CITY)])
    cid = concern_id("repeat_missing", "child", "child-a")
    practitioner = User("practitioner.city", "City Practitioner", "practitioner", CITY)
    conn = db.connect(ns.settings.pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL ROLE hub_authority_e06000016")
            store.triage(cur, practitioner, cid, "acknowledge")
            store.triage(cur, practitioner, cid, "close", reason="Seen with her social worker: no risk")
        outsider = User("practitioner.county", "County Practitioner", "practitioner", COUNTY)
        with pytest.raises(NotAllowed, match="belongs to E06000016"), conn, conn.cursor() as cur:
            cur.execute("SET LOCAL ROLE hub_authority_e10000018")
            store.triage(cur, outsider, cid, "acknowledge")
    finally:
        conn.close()
    write(hub, [alert(2, "child-a", CITY, days=-1)])  # dated before the closing: stays closed
    with hub, hub.cursor() as cur:
        cur.execute("SELECT status FROM hub.concerns WHERE concern_id = %s", (cid,))
        assert cur.fetchone() == ("closed",)
    write(hub, [alert(3, "child-a", CITY, days=800)])  # dated after it (event time): re-opens
    with hub, hub.cursor() as cur:
        cur.execute("SELECT status, alert_count FROM hub.concerns WHERE concern_id = %s", (cid,))
        assert cur.fetchone() == ("new", 3)
        cur.execute("SELECT action, actor FROM hub.concern_history WHERE concern_id = %s ORDER BY id", (cid,))
        assert cur.fetchall() == [
            ("raised", "hub-consumer"),
            ("acknowledge", "practitioner.city"),
            ("close", "practitioner.city"),
            ("kept-closed", "hub-consumer"),
            ("reopened", "hub-consumer"),
        ]
    assert as_role(
        ns,
        "hub_auditor",
        "SELECT actor, action, purpose FROM audit.access_log WHERE actor = 'practitioner.city' ORDER BY id",
    ) == [
        ("practitioner.city", "write", "triage: acknowledge"),
        ("practitioner.city", "write", "triage: close"),
    ]


def test_health_flags_and_their_reads_show_only_for_a_child_the_role_sees(ns: Namespace, hub: Any) -> None:
    conn = db.connect(ns.settings.pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO hub.children (child_key, nhs_number, case_status, updated_at, authority)"
                " VALUES ('child-a', '9434765919', 'open', now(), %s)",
                (CITY,),
            )
            cur.execute(
                "INSERT INTO health.cse_flags (flag_id, nhs_number, status, code, display, period_start,"
                " author, owning_authority, contact_phone) VALUES ('flag-1', '9434765919', 'active',"
                " '716565009', 'At increased risk of child sexual exploitation', '2026-03-01', 'hub',"
                " 'Leicester City Council', '0116 496 0100')"
            )
            cur.execute(
                "INSERT INTO audit.access_log (actor, action, purpose, store, record_ref)"
                " VALUES ('ED clinician', 'read', 'attendance', 'health', 'flag-1')"
            )
    finally:
        conn.close()
    flags = "SELECT flag_id, status FROM health.cse_flags"
    reads = "SELECT actor, purpose FROM hub.health_reads('9434765919')"
    assert as_role(ns, "hub_authority_e06000016", flags) == [("flag-1", "active")]
    assert as_role(ns, "hub_authority_e06000016", reads) == [("ED clinician", "attendance")]
    assert as_role(ns, "hub_manager", reads) == [("ED clinician", "attendance")]
    assert as_role(ns, "hub_authority_e10000018", flags) == []  # another authority's child
    assert as_role(ns, "hub_authority_e10000018", reads) == []
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(ns, "hub_analyst", reads)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        as_role(
            ns, "hub_authority_e06000016", "SELECT contact_phone FROM health.cse_flags"
        )  # not its columns
