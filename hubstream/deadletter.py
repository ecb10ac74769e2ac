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
# An original that would not fit on the dead-letter topic is kept as its first this many bytes,
# with its full size and SHA-256: half the topic's limit, leaving the rest for the key (twice:
# in the record and as the message key), the reason, the field and the framing.
TRUNCATED_VALUE_BYTES = 512 * 1024
# The reason and the field path are cut to these many characters (4 bytes each at most in UTF-8).
REASON_MAX_CHARS = 4000
FIELD_MAX_CHARS = 500
# A longer original key (a foreign message's, say) is replaced by its SHA-256, in the record and
# as the dead letter's message key, so no key can make a dead letter too large to send.
KEY_MAX_BYTES = 1024


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key a dead letter carries for an original keyed ``key``: itself, or its SHA-256."""
    if key is None or len(key) <= KEY_MAX_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()


def dead_letter_id(topic: str, partition: int | None, offset: int | None, value: bytes) -> str:
    """Stable per message, so a message dead-lettered twice (after a crash) is recognisably one."""
    digest = hashlib.sha256(f"{topic}\0{partition}\0{offset}\0".encode() + value)
    return digest.hexdigest()[:32]


def bounded(text: str, limit: int) -> str:
    """``text``, or its start and how long it was when longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    tail = f" ... [cut: {len(text):,} characters]"
    return text[: limit - len(tail)] + tail


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
    """The DeadLetter record for a rejected message, framed for the dead-letter topic.

    It always fits on the topic: the reason and field are bounded, and an original that would
    not fit whole is kept as its first TRUNCATED_VALUE_BYTES, with its size and SHA-256.
    """
    if stage not in STAGES:
        raise ValueError(f"dead-letter stage must be one of {STAGES}, got {stage!r}")
    body = value or b""
    key = dead_letter_key(key)
    record = {
        "event_id": dead_letter_id(topic, partition, offset, body),
        "failed_at": datetime.now(UTC),
        "stage": stage,
        "original_topic": topic,
        "original_partition": partition,
        "original_offset": offset if partition is not None else None,
        "key": key,
        "value": body,
        "reason": bounded(reason, REASON_MAX_CHARS),
        "field": bounded(field, FIELD_MAX_CHARS) if field else None,
        "original_size": None,
        "original_sha256": None,
    }
    room = topics.MAX_KEY_AND_VALUE_BYTES - len(key or b"")  # the key goes as the message key too
    if len(body) <= room:
        data = serde.encode(topics.DEAD_LETTERS.name, "DeadLetter", record)
        if len(data) <= room:
            return data
    record.update(
        value=body[:TRUNCATED_VALUE_BYTES],
        original_size=len(body),
        original_sha256=hashlib.sha256(body).hexdigest(),
    )
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
        self.producer.send(topics.DEAD_LETTERS.name, key=dead_letter_key(key), value=data)
        self.sent += 1
        log.info("dead letter from %s (%s): %s", topic, stage, reason)

    def flush(self) -> None:
        self.producer.flush()
