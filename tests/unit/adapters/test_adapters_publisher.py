"""The Publisher over a fake librdkafka producer: keys, encryption, delivery reports, dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import schemas
from hubstream import topics
from hubstream.protect import ENCRYPTED_PREFIX, decrypt_narrative, pseudonym
from hubstream.serde import Serde
from hubstream.settings import Settings
from producers.publish import DeliveryError, Publisher, producer_config, publish_lines
from tests.support import events

T0 = datetime(2024, 3, 1, 21, 30, tzinfo=UTC)


@dataclass
class FakeError:
    text: str

    def str(self) -> str:
        return self.text


@dataclass
class FakeMessage:
    name: str

    def topic(self) -> str:
        return self.name


@dataclass
class FakeProducer:
    """Queues like librdkafka: reports come from flush(); ``fail`` picks the sends the broker refuses."""

    fail: Callable[[str, bytes], bool] = lambda topic, value: False
    full_times: int = 0  # the first produce calls find the local queue full this often
    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    pending: list[tuple[Callable[[Any, Any], None], str, bytes]] = field(default_factory=list)

    def produce(self, topic: str, value: bytes, key: bytes | None = None, *, on_delivery: Any = None) -> None:
        if self.full_times:
            self.full_times -= 1
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, value))
        self.pending.append((on_delivery, topic, value))

    def poll(self, timeout: float = 0) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float = -1) -> int:
        pending, self.pending = self.pending, []
        for report, topic, value in pending:
            report(FakeError("Broker: Not enough in-sync replicas") if self.fail(topic, value) else None,
                   FakeMessage(topic))
        return 0


def publisher(producer: FakeProducer) -> Publisher:
    return Publisher(Settings(), producer=producer, serde=Serde(schemas.InMemoryRegistry()))


def line(schema: str, event: dict[str, Any]) -> str:
    return json.dumps({"schema": schema, "event": event}) + "\n"


def decoded(pub: Publisher, value: bytes) -> dict[str, Any]:
    return pub.serde.decode(value)[1]


def test_events_are_keyed_by_child_and_narratives_leave_encrypted() -> None:
    fake = FakeProducer()
    pub = publisher(fake)
    report = events.intelligence("r1", T0, children=["pk_a", "pk_b"], agency_type="police")
    pub.publish_json("IntelligenceReport", report, ref="line 1")
    pub.publish_json("MissingEpisodeEvent", events.missing("pk_b", "ep1", "reported_missing", T0))
    pub.flush()
    [(topic, key, value), (topic2, key2, _)] = fake.sent
    assert (topic, key) == (topics.POLICE_INTELLIGENCE.name, pseudonym("pk_a").encode())
    assert (topic2, key2) == (topics.MISSING_EPISODES.name, pseudonym("pk_b").encode())
    narrative = decoded(pub, value)["narrative"]
    assert narrative.startswith(ENCRYPTED_PREFIX)
    assert decrypt_narrative(narrative) == report["narrative"]
    assert (pub.delivery_failures, pub.unconfirmed) == ([], 0)


def test_a_refused_delivery_is_reported_naming_the_line() -> None:
    lost = events.missing("pk_b", "ep2", "reported_missing", T0)
    fake = FakeProducer(fail=lambda topic, value: lost["event_id"].encode() in value)
    lines = [
        line("MissingEpisodeEvent", events.missing("pk_a", "ep1", "reported_missing", T0)),
        line("MissingEpisodeEvent", lost),
    ]
    result = publish_lines(Settings(), "mixed", lines, progress=False, publisher=publisher(fake))
    assert (result.published, result.rejected) == (1, 1)
    [problem] = result.problems
    assert problem.startswith("not delivered: line 2: Broker: Not enough in-sync replicas")


def test_a_bad_line_is_dead_lettered_through_the_producer_and_confirmed() -> None:
    fake = FakeProducer()
    pub = publisher(fake)
    result = publish_lines(Settings(), "mixed", ["{oops\n"], progress=False, publisher=pub)
    assert result.rejected == 1
    [(topic, key, value)] = fake.sent
    assert (topic, key) == (topics.DEAD_LETTERS.name, None)
    letter = decoded(pub, value)
    assert (letter["stage"], letter["value"]) == ("validate", b"{oops")
    assert letter["reason"].startswith("line 1: <record>: line is not valid JSON")
    assert pub.unconfirmed == 0


def test_a_dead_letter_that_is_not_delivered_fails_the_publish_loudly() -> None:
    fake = FakeProducer(fail=lambda topic, value: topic == topics.DEAD_LETTERS.name)
    with pytest.raises(DeliveryError, match="dead letter for line 2"):
        publish_lines(Settings(), "mixed", ["\n", "[]\n"], progress=False, publisher=publisher(fake))


def test_a_full_local_queue_waits_and_loses_nothing() -> None:
    fake = FakeProducer(full_times=3)
    pub = publisher(fake)
    pub.publish_json("MissingEpisodeEvent", events.missing("pk_a", "ep1", "reported_missing", T0))
    pub.flush()
    assert len(fake.sent) == 1 and pub.unconfirmed == 0


def test_producers_wait_for_every_replica_keep_order_and_partition_as_java_clients_do() -> None:
    config = producer_config(Settings(), "police")
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["partitioner"] == "murmur2_random"
    assert config["client.id"] == "hubstream-police"


@dataclass
class OneAtATimeProducer(FakeProducer):
    """Delivers one message per poll, as a busy broker might."""

    def poll(self, timeout: float = 0) -> int:
        if self.pending:
            report, topic, _ = self.pending.pop(0)
            report(None, FakeMessage(topic))
        return 0


@pytest.mark.parametrize("principal", [None, "police"])
def test_publishing_as_every_agency_keeps_producers_within_two_days_of_event_time(
    principal: str | None,
) -> None:
    fake = OneAtATimeProducer()
    pub = Publisher(Settings(), principal=principal, producer=fake, serde=Serde(schemas.InMemoryRegistry()))
    for number, hours in enumerate((0, 2, 25, 49), start=1):
        at = T0 + timedelta(hours=hours)
        pub.publish_json("MissingEpisodeEvent", events.missing("pk_a", f"ep{number}", "reported_missing", at))
    waiting = [decoded(pub, value)["episode_id"] for _, _, value in fake.pending]
    # As each agency (a replay), the first day's events were delivered before the third day's
    # were sent; as one agency there is one producer, which keeps order by itself.
    assert waiting == (["ep3", "ep4"] if principal is None else ["ep1", "ep2", "ep3", "ep4"])
    pub.flush()
    assert pub.unconfirmed == 0
