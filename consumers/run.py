"""Composition root for the case-store consumers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from consumers import db
from consumers.health import HealthHandler
from consumers.hub import HubHandler
from consumers.sink import Handler, SinkStats, TransactionalSink
from hubstream import kafka, topics
from hubstream.deadletter import DeadLetters
from hubstream.serde import serde_for
from hubstream.settings import Settings

STORES: dict[str, tuple[Callable[[], Handler], tuple[topics.Topic, ...]]] = {
    "hub": (
        HubHandler,
        (topics.ALERTS, topics.HUB_DECISIONS, topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE,
         topics.MISSING_EPISODES),
    ),
    "health": (HealthHandler, (topics.HEALTH_FLAGS,)),
}


def prepare_database(settings: Settings) -> list[str]:
    """Apply migrations as the owning role; consumers themselves run with least privilege."""
    conn = db.connect(settings.pg_dsn, attempts=30)
    try:
        return db.migrate(conn)
    finally:
        conn.close()


def build_sink(
    settings: Settings,
    store: str,
    *,
    group_id: str | None = None,
    batch_size: int = 5000,
    instance_id: str | None = None,
    consumer_config: dict[str, Any] | None = None,
    handler: Handler | None = None,
) -> TransactionalSink:
    if store not in STORES:
        raise ValueError(f"store must be one of {sorted(STORES)}, got {store!r}")
    make_handler, sources = STORES[store]
    serde = serde_for(settings)
    return TransactionalSink(
        handler=handler or make_handler(),
        dsn=settings.hub_store_dsn if store == "hub" else settings.health_store_dsn,
        kafka_config=kafka.librdkafka_config(settings, f"{store}-consumer"),
        group_id=group_id or f"{os.environ.get('HUBSTREAM_TOPIC_PREFIX', '')}hubstream-{store}-store",
        topics={t.name: (t.schema,) for t in sources},
        decode=serde.decode,
        dead_letters=DeadLetters(kafka.producer(settings, f"{store}-consumer"), serde),
        batch_size=batch_size,
        instance_id=instance_id,
        consumer_config=consumer_config,
    )


def run_sink(
    settings: Settings,
    store: str,
    *,
    idle_polls_before_stop: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    group_id: str | None = None,
) -> SinkStats:
    prepare_database(settings)
    sink = build_sink(settings, store, group_id=group_id)
    return sink.run(should_stop, idle_polls_before_stop)
