"""Kafka plumbing shared by producers, the stream worker and the consumers."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
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
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="hubstream-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics.ALL if t.name not in existing]
        if missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            t.name, num_partitions=t.partitions, replication_factor=1, topic_configs=t.config
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
        return [t.name for t in missing]
    finally:
        admin.close()
