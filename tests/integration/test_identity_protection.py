"""No record key on any topic shows an identifier; narratives are unreadable on the broker."""

from __future__ import annotations

from datetime import date
from typing import Any

from hubstream import kafka, topics
from hubstream.protect import decrypt_narrative
from producers.simulate import simulate
from tests.integration.test_worker_end_to_end import publish
from tests.support.stack import Namespace, decoded, read_topic, wait_for_worker

COUNTY = list(simulate(3, date(2025, 1, 1), 90, children=120))


def identifiers(events: list[tuple[str, dict[str, Any]]]) -> set[str]:
    found: set[str] = set()
    for _, event in events:
        for holder in [event, *event.get("persons", [])]:
            found.update(str(holder[k]) for k in ("person_key", "nhs_number") if holder.get(k))
        for obj in event.get("objects", []):
            found.update({obj["value"], "".join(obj["value"].split()).upper()})
    return found


def test_no_message_key_on_any_topic_contains_an_identifier(ns: Namespace) -> None:
    publish(ns.settings, COUNTY)
    ns.start_worker()
    group = f"{ns.prefix}hubstream-worker"
    wait_for_worker(ns, group)
    admin = kafka.admin(ns.settings)
    try:
        mine = sorted(t for t in admin.list_topics() if t.startswith(ns.prefix))
    finally:
        admin.close()
    assert any("changelog" in t for t in mine) and any("association-links" in t for t in mine)

    secrets = identifiers(COUNTY)
    assert len(secrets) > 150
    keys = [(t, m.key.decode("latin-1")) for t in mine for m in read_topic(ns.settings, t) if m.key]
    assert len(keys) > len(COUNTY)
    leaks = [(t, k) for t, k in keys if any(s in k for s in secrets)]
    assert leaks == []


def test_narratives_are_encrypted_on_the_broker_and_readable_with_the_key(ns: Namespace) -> None:
    reports = [(s, e) for s, e in COUNTY if s == "IntelligenceReport"][:40]
    publish(ns.settings, reports)
    raw = b"".join(
        m.value
        for t in (topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE)
        for m in read_topic(ns.settings, ns.topic(t))
    )
    narratives = [e["narrative"] for _, e in reports]
    assert not [n for n in narratives if n.encode() in raw]
    stored = {
        r["event_id"]: r["narrative"]
        for t in (topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE)
        for _, r in decoded(ns.settings, ns.topic(t))
    }
    assert {e["event_id"]: e["narrative"] for _, e in reports} == {
        event_id: decrypt_narrative(text) for event_id, text in stored.items()
    }
