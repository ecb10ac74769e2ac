"""The dead-letter topic: every rejected message lands here with the reason, nothing is dropped."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from kafka import KafkaProducer

from hubstream import topics
from hubstream.serde import Serde

log = logging.getLogger(__name__)

STAGES = ("publish", "decode", "validate", "process", "sink", "other")


def dead_letter_id(topic: str, partition: int | None, offset: int | None, value: bytes) -> str:
    """Stable per message, so a message dead-lettered twice (after a crash) is recognisably one."""
    digest = hashlib.sha256(f"{topic}\0{partition}\0{offset}\0".encode() + value)
    return digest.hexdigest()[:32]


def encode_dead_letter(
    serde: Serde,
    *,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    field: str | None,
    stage: str,
) -> bytes:
    """The DeadLetter record for a rejected message, framed for the dead-letter topic."""
    if stage not in STAGES:
        raise ValueError(f"dead-letter stage must be one of {STAGES}, got {stage!r}")
    body = value or b""
    record = {
        "event_id": dead_letter_id(topic, partition, offset, body),
        "failed_at": datetime.now(UTC),
        "stage": stage,
        "original_topic": topic,
        "original_partition": partition,
        "original_offset": offset if partition is not None else None,
        "key": key,
        "value": body,
        "reason": reason,
        "field": field or None,
    }
    return serde.encode(topics.DEAD_LETTERS.name, "DeadLetter", record)


class DeadLetters:
    def __init__(self, producer: KafkaProducer, serde: Serde) -> None:
        self.producer = producer
        self.serde = serde
        self.sent = 0

    def send(
        self,
        *,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        field: str | None,
        stage: str,
    ) -> None:
        data = encode_dead_letter(
            self.serde, topic=topic, partition=partition, offset=offset, key=key, value=value,
            reason=reason, field=field, stage=stage,
        )
        self.producer.send(topics.DEAD_LETTERS.name, key=key, value=data)
        self.sent += 1
        log.info("dead letter from %s (%s): %s", topic, stage, reason)

    def flush(self) -> None:
        self.producer.flush()
