"""Publishing events: validate every line against its schema, route it to its topic, key it.

Keys keep everything about one child in order: missing episodes and hub decisions are keyed by
the child's pseudonymous key, intelligence by the first child it names (else its own event id).
Bad lines never reach an event topic: they go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaProducer
from tqdm import tqdm  # tqdm ships no type information

import schemas
from hubstream import kafka, topics
from hubstream.deadletter import DeadLetters
from hubstream.protect import encrypt_narrative, pseudonym
from hubstream.serde import Serde, serde_for
from hubstream.settings import Settings
from schemas.jsonl import EVENT_KEY, SCHEMA_KEY

KINDS: dict[str, tuple[str, topics.Topic | None]] = {
    "police-intelligence": ("IntelligenceReport", topics.POLICE_INTELLIGENCE),
    "partner-intelligence": ("IntelligenceReport", topics.PARTNER_INTELLIGENCE),
    "missing-episode": ("MissingEpisodeEvent", topics.MISSING_EPISODES),
    "hub-decision": ("HubDecision", topics.HUB_DECISIONS),
    "mixed": ("", None),
}
# A tuple, not a set: a line's "schema" may be any JSON value, lists included.
AGENCY_SCHEMAS = tuple(dict.fromkeys(schema for schema, _ in KINDS.values() if schema))
MAX_PROBLEMS_SHOWN = 1000
_INTELLIGENCE_TOPICS = (topics.POLICE_INTELLIGENCE.name, topics.PARTNER_INTELLIGENCE.name)


def topic_for(schema: str, record: dict[str, Any]) -> topics.Topic:
    if schema == "IntelligenceReport":
        police = record["agency_type"] == "police"
        return topics.POLICE_INTELLIGENCE if police else topics.PARTNER_INTELLIGENCE
    if schema == "MissingEpisodeEvent":
        return topics.MISSING_EPISODES
    if schema == "HubDecision":
        return topics.HUB_DECISIONS
    raise schemas.SchemaViolation(SCHEMA_KEY, schema, "only agency events are published here")


def key_for(schema: str, record: dict[str, Any]) -> bytes:
    """The record key: a keyed hash of the child (so one child's events stay in order on one
    partition) that shows no identifier on the broker, in logs or to partition tooling."""
    if schema == "IntelligenceReport":
        children: list[str] = [p["person_key"] for p in record["persons"] if p["role"] == "child_at_risk"]
        key: str = children[0] if children else record["event_id"]
        return pseudonym(key).encode()
    return pseudonym(str(record["person_key"])).encode()


def protect_fields(schema: str, record: dict[str, Any]) -> dict[str, Any]:
    """Encrypt what must be unreadable on broker disks: the intelligence narrative."""
    if schema == "IntelligenceReport":
        return {**record, "narrative": encrypt_narrative(record["narrative"])}
    return record


def principal_for(schema: str, record: dict[str, Any]) -> str:
    """The Kafka principal an event is published as: its agency's own."""
    if schema == "IntelligenceReport":
        agency = str(record["agency_type"])
        return "police" if agency == "police" else "partner-" + agency.replace("_", "-")
    if schema == "HubDecision":
        return "hub"
    return "police"  # missing episodes: the police missing-person units


class Publisher:
    """Validates and sends agency events. Use as a context manager, or call close().

    With ``principal`` every event goes as that one agency (a real agency's system). Without,
    each event goes as its own agency's principal: for simulations and replays run by a process
    that holds every agency's credentials.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        principal: str | None = None,
        producer: KafkaProducer | None = None,
        serde: Serde | None = None,
    ) -> None:
        self.settings = settings
        self.principal = principal
        self._producers: dict[str, KafkaProducer] = {}
        self._fixed = producer
        self.serde = serde or serde_for(settings)
        self.dead_letters = DeadLetters(self._producer_for(principal or "police"), self.serde)
        self.delivery_failures: list[str] = []

    def _producer_for(self, principal: str) -> KafkaProducer:
        if self._fixed is not None:
            return self._fixed
        if principal not in self._producers:
            self._producers[principal] = kafka.producer(self.settings, principal)
        return self._producers[principal]

    def publish(self, schema: str, record: dict[str, Any], *, topic: str | None = None, ref: str = "") -> str:
        """Validate and send one record-form event; returns the topic it went to."""
        record = schemas.validate(schema, record)
        routed = topic_for(schema, record).name
        if topic in _INTELLIGENCE_TOPICS and routed != topic:
            raise schemas.SchemaViolation(
                "agency_type",
                record["agency_type"],
                f"reports of this agency type go to {routed}, not {topic}",
            )
        target = topic or routed
        value = self.serde.encode(target, schema, protect_fields(schema, record))
        producer = self._producer_for(self.principal or principal_for(schema, record))
        future = producer.send(target, key=key_for(schema, record), value=value)
        future.add_errback(lambda exc: self.delivery_failures.append(f"{ref or record['event_id']}: {exc}"))
        return target

    def publish_json(self, schema: str, event: Any, *, topic: str | None = None, ref: str = "") -> str:
        return self.publish(schema, schemas.from_json(schema, event), topic=topic, ref=ref)

    def flush(self) -> None:
        for producer in self._all():
            producer.flush()

    def close(self) -> None:
        for producer in self._all():
            producer.flush()
            producer.close()

    def _all(self) -> list[KafkaProducer]:
        return [self._fixed] if self._fixed is not None else list(self._producers.values())

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeadLetterTarget(Protocol):
    def send(
        self, *, topic: str, partition: int | None, offset: int | None, key: bytes | None,
        value: bytes | None, reason: str, field: str | None, stage: str,
    ) -> None: ...


class LinePublisher(Protocol):
    """What publish_lines uses of a Publisher, so a test can hand it a fake that records."""

    delivery_failures: list[str]

    @property
    def dead_letters(self) -> DeadLetterTarget: ...

    def publish_json(self, schema: str, event: Any, *, topic: str | None = None, ref: str = "") -> str: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class PublishResult:
    published: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


def _unwrap(kind: str, obj: Any) -> tuple[str, Any]:
    """A line is the bare event, or the simulator's {"schema": ..., "event": ...} wrapper."""
    expected, _ = KINDS[kind]
    if isinstance(obj, dict) and set(obj) == {SCHEMA_KEY, EVENT_KEY}:
        schema = obj[SCHEMA_KEY]
        if schema not in AGENCY_SCHEMAS or (expected and schema != expected):
            wanted = expected or "an agency event schema"
            raise schemas.SchemaViolation(SCHEMA_KEY, schema, f"expected {wanted} for kind {kind!r}")
        return schema, obj[EVENT_KEY]
    if not expected:
        raise schemas.SchemaViolation(
            "", obj, 'kind "mixed" needs lines of the form {"schema": ..., "event": ...}'
        )
    return expected, obj


def publish_lines(
    settings: Settings,
    kind: str,
    lines: Iterable[str],
    *,
    topic: str | None = None,
    progress: bool | None = None,
    publisher: LinePublisher | None = None,
    principal: str | None = None,
) -> PublishResult:
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _, fixed_topic = KINDS[kind]
    target = topic or (fixed_topic.name if fixed_topic else None)
    result = PublishResult()
    show = sys.stderr.isatty() if progress is None else progress
    own = publisher is None
    pub: LinePublisher = publisher or Publisher(settings, principal=principal)
    try:
        for number, line in enumerate(
            tqdm(lines, unit=" events", disable=not show, file=sys.stderr), start=1
        ):
            if not line.strip():
                continue
            try:
                try:
                    parsed = json.loads(line)
                except ValueError as exc:
                    raise schemas.SchemaViolation(
                        "", line.strip()[:60], f"line is not valid JSON ({exc})"
                    ) from None
                schema, event = _unwrap(kind, parsed)
                pub.publish_json(schema, event, topic=target, ref=f"line {number}")
                result.published += 1
            except (ValueError, schemas.SchemaViolation) as exc:
                # json.JSONDecodeError and SchemaViolation are both ValueErrors.
                field_name = exc.field if isinstance(exc, schemas.SchemaViolation) else None
                reason = f"line {number}: {exc}"
                result.rejected += 1
                if len(result.problems) < MAX_PROBLEMS_SHOWN:
                    result.problems.append(reason)
                pub.dead_letters.send(
                    topic=target or kind, partition=None, offset=None, key=None,
                    value=line.rstrip("\n").encode(), reason=reason, field=field_name, stage="validate",
                )
        pub.flush()
    finally:
        if own:
            pub.close()
    if pub.delivery_failures:
        result.published -= len(pub.delivery_failures)
        result.rejected += len(pub.delivery_failures)
        result.problems.extend(f"not delivered: {f}" for f in pub.delivery_failures[:MAX_PROBLEMS_SHOWN])
    if result.rejected > len(result.problems):
        result.problems.append(
            f"... and {result.rejected - len(result.problems)} more (see the dead-letter topic)"
        )
    return result
