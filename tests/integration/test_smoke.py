"""The real stack answers: an event goes through Kafka and back, a row through PostgreSQL and back."""

from __future__ import annotations

from datetime import UTC, datetime

from hubstream import topics
from hubstream.protect import pseudonym
from producers.decisions import publish_decision
from tests.support.stack import Namespace, decoded, read_topic


def test_published_event_is_read_back_by_a_consumer_and_decoded(ns: Namespace) -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    event_id = publish_decision(
        ns.settings,
        "case_opened",
        child_key="pk_smoke",
        decided_by="hub-sw-1",
        nhs_number="9434765919",
        at=at,
    )
    messages = read_topic(ns.settings, ns.topic(topics.HUB_DECISIONS))
    assert [m.key for m in messages] == [pseudonym("pk_smoke").encode()]
    [(schema, record)] = decoded(ns.settings, ns.topic(topics.HUB_DECISIONS))
    assert schema == "HubDecision"
    assert record["event_id"] == event_id
    assert record["occurred_at"] == at
    assert record["nhs_number"] == "9434765919"


def test_row_written_reaches_postgresql_and_reads_back(ns: Namespace) -> None:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO audit.access_log (actor, action, purpose, store, record_ref)"
            " VALUES (%s, %s, %s, %s, %s)",
            ("smoke", "write", "smoke test", "hub", "ref-1"),
        )
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT actor, record_ref FROM audit.access_log WHERE purpose = 'smoke test'")
        assert cur.fetchall() == [("smoke", "ref-1")]
