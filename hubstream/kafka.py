"""Kafka plumbing shared by producers, the stream worker and the consumers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, TransactionalIdNotFoundError

from hubstream import kafka_security, topics
from hubstream.retry import retrying
from hubstream.settings import Settings

log = logging.getLogger(__name__)


def connection(settings: Settings, principal: str) -> dict[str, Any]:
    """kafka-python connection settings for ``principal``: the SASL_SSL listener with its own
    credentials, or the plaintext development listener when HUBSTREAM_KAFKA_SECURITY=plaintext."""
    if settings.kafka_security == "plaintext":
        return {"bootstrap_servers": settings.bootstrap_servers}
    return kafka_security.client_config(principal, settings)


def librdkafka_config(settings: Settings, principal: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka (librdkafka) configuration for ``principal``: the same listener and
    credentials as :func:`connection`, in librdkafka's names."""
    config: dict[str, Any] = {"client.id": f"hubstream-{principal}"}
    if settings.kafka_security == "plaintext":
        config["bootstrap.servers"] = settings.bootstrap_servers
    else:
        secure = kafka_security.client_config(principal, settings)
        config |= {
            "bootstrap.servers": secure["bootstrap_servers"],
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": secure["sasl_mechanism"],
            "sasl.username": principal,
            "sasl.password": secure["sasl_plain_password"],
            "ssl.ca.location": secure["ssl_cafile"],
            "ssl.endpoint.identification.algorithm": "https",
        }
    return config | overrides


def admin(settings: Settings, principal: str = "admin") -> KafkaAdminClient:
    return KafkaAdminClient(client_id="hubstream-admin", **connection(settings, principal))


def consumer(settings: Settings, principal: str = "admin", **config: Any) -> KafkaConsumer:
    """A kafka-python consumer that reads committed messages only (kafka-python's default is to
    read uncommitted): the worker writes every output in transactions."""
    return KafkaConsumer(**connection(settings, principal), **{"isolation_level": "read_committed", **config})


def producer(settings: Settings, principal: str, **overrides: Any) -> KafkaProducer:
    """A producer with kafka-python 3 defaults kept: idempotence on, acks=all."""
    config: dict[str, Any] = {
        **connection(settings, principal),
        "client_id": f"hubstream-{principal}",
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


def ensure_topics(
    settings: Settings, specs: list[TopicSpec], *, wait_s: float = 30.0, principal: str = "admin"
) -> list[str]:
    """Create the (name, partitions, config) topics that do not exist yet, and wait until the
    broker's metadata lists every one with its partitions; return the names created."""
    client = admin(settings, principal)
    try:
        existing = set(retrying("list_topics", client.list_topics))
        missing = [spec for spec in specs if spec[0] not in existing]
        if missing:
            new = [NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=config)
                   for name, n, config in missing]
            try:
                what = f"create_topics {', '.join(n for n, _, _ in missing)}"
                retrying(what, lambda: client.create_topics(new))
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
    finally:
        client.close()
    metadata = consumer(settings, principal, client_id="hubstream-admin")
    try:
        deadline = time.monotonic() + wait_s
        for name, partitions, _ in specs:
            while len(_partitions_of(metadata, name)) < partitions:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name} did not show {partitions} partitions within {wait_s}s")
                time.sleep(0.2)
                retrying("topics (metadata refresh)", metadata.topics)
    finally:
        metadata.close()
    return [name for name, _, _ in missing]


def _partitions_of(metadata: KafkaConsumer, name: str) -> set[int]:
    return set(retrying(f"partitions_for_topic({name!r})", lambda: metadata.partitions_for_topic(name)) or ())


def delete_topics(client: KafkaAdminClient, names: Sequence[str]) -> None:
    """Delete these topics, retrying as :func:`hubstream.retry.retrying` does; each attempt
    deletes only those still listed, so a retry after a deletion that went through is done."""

    def attempt() -> None:
        still = set(client.list_topics()) & set(names)
        if still:
            client.delete_topics(sorted(still))

    retrying(f"delete_topics {', '.join(names)}", attempt)


# A group and a transactional id nobody uses: asking for their coordinators makes the broker
# create __consumer_offsets and __transaction_state, and leaves neither group nor transaction.
COORDINATOR_PROBE = "hubstream-coordinator-probe"


def warm_coordinators(settings: Settings, principal: str = "admin") -> None:
    """Wait until the broker's group and transaction coordinators answer.

    A broker creates both on first use, and until their partitions have leaders every group
    lookup answers COORDINATOR_NOT_AVAILABLE (or NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).
    Asking once for each, retrying, after the stack starts lets the first real group and the
    first transactional producer start at once. On a warm broker this is two round trips.
    """
    client = admin(settings, principal)
    try:
        retrying(
            f"find the group coordinator (offsets of group {COORDINATOR_PROBE})",
            lambda: client.list_group_offsets(COORDINATOR_PROBE),
        )
        retrying(
            f"find the transaction coordinator (transactional id {COORDINATOR_PROBE})",
            lambda: _describe_probe_transaction(client),
        )
    finally:
        client.close()


def _describe_probe_transaction(client: KafkaAdminClient) -> None:
    with contextlib.suppress(TransactionalIdNotFoundError):  # the coordinator answered: no such id
        client.describe_transactions([COORDINATOR_PROBE])
