"""Kafka plumbing shared by producers, the stream worker and the consumers."""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from hubstream import topics
from hubstream.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer with kafka-python 3 defaults kept: idempotence on, acks=all."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": "hubstream",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "compression_type": None,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def create_topics(settings: Settings) -> list[str]:
    """Create every catalogued topic that does not exist yet; return the names created."""
    return ensure_topics(settings, [(t.name, t.partitions, t.config) for t in topics.ALL])


TopicSpec = tuple[str, int, dict[str, str]]


def ensure_topics(settings: Settings, specs: list[TopicSpec], *, wait_s: float = 30.0) -> list[str]:
    """Create the (name, partitions, config) topics that do not exist yet, and wait until the
    broker's metadata lists every one with its partitions; return the names created."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="hubstream-admin")
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in specs if spec[0] not in existing]
        if missing:
            try:
                admin.create_topics(
                    [NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=config)
                     for name, n, config in missing]
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, client_id="hubstream-admin")
    try:
        deadline = time.monotonic() + wait_s
        for name, partitions, _ in specs:
            while len(consumer.partitions_for_topic(name) or ()) < partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} did not show {partitions} partitions within {wait_s}s")
                time.sleep(0.2)
                consumer.topics()  # refresh the metadata
    finally:
        consumer.close()
    return [name for name, _, _ in missing]
