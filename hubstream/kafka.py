"""Kafka plumbing shared by producers, the stream worker and the consumers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, TransactionalIdNotFoundError, for_code

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
    settings: Settings, specs: list[TopicSpec], *, wait_s: float = 30.0, principal: str = "admin",
    check_catalogue: bool = False,
) -> list[str]:
    """Create the (name, partitions, config) topics that do not exist yet, and wait until the
    broker's metadata lists every one with its partitions; return the names created.

    Topics are created with the deployment's replication factor and min.insync.replicas
    (:func:`topic_config`). First the cluster is checked against them (:func:`check_replication`):
    :class:`ReplicationError` when it has fewer brokers than a topic to create needs, or when a
    topic of ``specs`` that exists (with ``check_catalogue``, also any catalogued topic that
    exists: the worker reads and writes them) has fewer replicas than configured.
    """
    client = admin(settings, principal)
    try:
        existing = set(retrying("list_topics", client.list_topics))
        missing = [spec for spec in specs if spec[0] not in existing]
        names = [name for name, _, _ in specs] + ([t.name for t in topics.ALL] if check_catalogue else [])
        check_replication(
            client, settings, to_create=[name for name, _, _ in missing],
            existing=[name for name in dict.fromkeys(names) if name in existing],
        )
        if missing:
            factor = settings.replication_factor
            new = [NewTopic(name, num_partitions=n, replication_factor=factor,
                            topic_configs=topic_config(settings, config))
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


class ReplicationError(click.ClickException):
    """The cluster cannot hold the replicas the deployment's settings ask for, or a topic has
    fewer: `hubstream topics create` and the worker refuse to start (exit 1, the message alone)."""


def topic_config(settings: Settings, config: Mapping[str, str]) -> dict[str, str]:
    """A topic's configuration as created: its own, and the deployment's min.insync.replicas
    (every producer sends with acks=all, so a write is acknowledged once that many replicas hold it)."""
    return {**config, "min.insync.replicas": str(settings.min_insync_replicas)}


def replication_problems(
    factor: int, *, brokers: int, existing: Mapping[str, int], to_create: Sequence[str]
) -> list[str]:
    """What stops topics having ``factor`` replicas: an existing topic (name: its fewest replicas
    over its partitions) with fewer, or a topic to create on a cluster of fewer live brokers.

    Fewer live brokers with nothing to create is no problem: every replica stays assigned, and
    a broker down for a while must not stop a worker restarting (writes go on while
    min.insync.replicas of them are in sync)."""
    setting = f"HUBSTREAM_REPLICATION_FACTOR={factor}"
    problems = [
        f"topic {name} has {n} replica{'' if n == 1 else 's'} per partition, fewer than {setting}"
        for name, n in existing.items() if n < factor
    ]
    if brokers < factor:
        problems += [
            f"topic {name} cannot be created with {factor} replicas ({setting}): "
            f"the cluster has {brokers} broker{'' if brokers == 1 else 's'}"
            for name in to_create
        ]
    return problems


def check_replication(
    client: KafkaAdminClient, settings: Settings, *, to_create: Sequence[str], existing: Sequence[str]
) -> None:
    """Raise :class:`ReplicationError` naming each topic, its replication and the setting, when
    the cluster cannot create ``to_create`` with the configured replication factor or a topic of
    ``existing`` has fewer replicas than it (counted from each partition's assigned replicas,
    so a broker that is down does not count against a topic)."""
    factor, in_sync = settings.replication_factor, settings.min_insync_replicas
    cluster = retrying("describe_cluster", client.describe_cluster)
    brokers = [b for b in cluster["brokers"] if not b.get("is_fenced")]
    found: dict[str, int] = {}
    if existing:
        unreadable: list[str] = []
        for described in retrying("describe_topics", lambda: client.describe_topics(list(existing))):
            name, code = described["name"], described["error_code"]
            if code == 0 and described["partitions"]:
                found[name] = min(len(p["replica_nodes"]) for p in described["partitions"])
            elif code != 3:  # 3: UNKNOWN_TOPIC_OR_PARTITION, deleted since it was listed
                unreadable.append(f"topic {name}: its replication cannot be read ({for_code(code).__name__})")
        if unreadable:
            raise ReplicationError("\n".join(unreadable))
    replicas = {name: found[name] for name in existing if name in found}  # in the order asked
    problems = replication_problems(factor, brokers=len(brokers), existing=replicas, to_create=to_create)
    if problems:
        raise ReplicationError(
            f"refusing to start: this deployment asks for {factor} replicas of every topic and "
            f"{in_sync} in sync (HUBSTREAM_REPLICATION_FACTOR={factor}, HUBSTREAM_MIN_INSYNC_REPLICAS="
            f"{in_sync}, HUBSTREAM_DEPLOYMENT={settings.deployment}), and the cluster has "
            f"{len(brokers)} broker{'' if len(brokers) == 1 else 's'}:\n"
            + "".join(f"  {p}\n" for p in problems)
            + "Add brokers, reassign the topics' partitions to more replicas "
            "(kafka-reassign-partitions), or set HUBSTREAM_REPLICATION_FACTOR to what this cluster "
            "holds (HUBSTREAM_DEPLOYMENT=local on the local stack's single broker)."
        )
    if len(brokers) < factor:
        log.warning(
            "the cluster has %d live broker(s), fewer than HUBSTREAM_REPLICATION_FACTOR=%d: "
            "partitions stay under-replicated until the others return", len(brokers), factor,
        )


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
