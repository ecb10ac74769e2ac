"""The stream worker: every feature's handlers, explicitly listed, run by the engine.

Run with ``hubstream worker``. Several workers share the work through Kafka partitions.
"""

from __future__ import annotations

import logging

from hubstream.kafka import TopicSpec, ensure_topics, librdkafka_config
from streams.app import (
    APP_ID,
    ASSOCIATION_LINKS,
    DECISIONS,
    HOTSPOT_OBSERVATIONS,
    INTELLIGENCE,
    MISSING,
    PARTITIONS,
    TABLES,
    prepare,
    settings,
)
from streams.association.handlers import associations
from streams.engine import Engine, Handler
from streams.health_flags.handlers import hub_decisions
from streams.hotspot.handlers import hotspots
from streams.intelligence.handlers import intelligence
from streams.marks import EVERY_S, send_marks
from streams.missing.handlers import missing_episodes

HANDLERS: dict[str, Handler] = {
    MISSING: missing_episodes,
    **dict.fromkeys(INTELLIGENCE, intelligence),
    DECISIONS: hub_decisions,
    HOTSPOT_OBSERVATIONS: hotspots,
    ASSOCIATION_LINKS: associations,
}

__all__ = ["HANDLERS", "build", "run_worker", "worker_topic_specs"]


def worker_topic_specs() -> list[TopicSpec]:
    """The worker's own topics: re-keyed topics and one compacted changelog per table.

    A changelog has as many partitions as its table's source topic, partition for partition.
    """
    partitions = {name: PARTITIONS for name in (HOTSPOT_OBSERVATIONS, ASSOCIATION_LINKS)}
    specs: list[TopicSpec] = [(name, n, {}) for name, n in partitions.items()]
    for table in TABLES:
        n = partitions.get(table.source) or _catalogued_partitions(table.source)
        specs.append((f"{APP_ID}-{table.name}-changelog", n, {"cleanup.policy": "compact"}))
    return specs


def _catalogued_partitions(name: str) -> int:
    from hubstream import topics

    return next(t.partitions for t in topics.ALL if t.name == name)


def build(*, max_batch: int = 5000, commit_every_s: float = 0.5) -> Engine:
    return Engine(
        APP_ID, HANDLERS, TABLES,
        consumer_config=librdkafka_config(settings, "worker", **{"fetch.min.bytes": 1}),
        producer_config=librdkafka_config(settings, "worker"),
        max_batch=max_batch,
        commit_every_s=commit_every_s,
        tick=send_marks,
        tick_every_s=EVERY_S,
    )


def run_worker(*, max_batch: int = 5000, commit_every_s: float = 0.5) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare()
    # Made before the group starts, so that a first assignment finds every changelog.
    ensure_topics(settings, worker_topic_specs(), principal="worker")
    build(max_batch=max_batch, commit_every_s=commit_every_s).run()
