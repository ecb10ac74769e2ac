"""The stream worker: every feature's handlers, explicitly listed, run by the engine.

Run with ``hubstream worker``. Several workers share the work through Kafka partitions.
"""

from __future__ import annotations

import gc
import logging
import os

from hubstream.kafka import TopicSpec, ensure_topics, librdkafka_config
from hubstream.settings import DEFAULT_ASSIGNOR
from streams.app import (
    APP_ID,
    ASSOCIATION_LINKS,
    DECISIONS,
    HOTSPOT_OBSERVATIONS,
    INTELLIGENCE,
    MISSING,
    PARTITIONS,
    RULE_OF_TABLE,
    RULES,
    TABLES,
    enabled,
    forget_revoked,
    poisoned,
    prepare,
    select_rules,
    settings,
)
from streams.association.handlers import associations
from streams.engine import CHANGELOG_MAX_BYTES, COMMIT_EVERY_S, Engine, Handler, Table
from streams.health_flags.handlers import hub_decisions
from streams.hotspot.handlers import hotspots
from streams.intelligence.handlers import intelligence
from streams.marks import EVERY_S, report_waiting, send_marks
from streams.missing.handlers import missing_episodes

HANDLERS: dict[str, Handler] = {
    MISSING: missing_episodes,
    **dict.fromkeys(INTELLIGENCE, intelligence),
    DECISIONS: hub_decisions,
    HOTSPOT_OBSERVATIONS: hotspots,
    ASSOCIATION_LINKS: associations,
}
# The rules each input feeds: a worker reads an input only if it runs one of them.
FEEDS: dict[str, frozenset[str]] = {
    MISSING: frozenset({"repeat_missing", "return_interview", "hotspot"}),
    **dict.fromkeys(INTELLIGENCE, frozenset({"hotspot", "association"})),
    DECISIONS: frozenset({"health_flags"}),
    HOTSPOT_OBSERVATIONS: frozenset({"hotspot"}),
    ASSOCIATION_LINKS: frozenset({"association"}),
}


def running() -> tuple[dict[str, Handler], list[Table]]:
    """The handlers and tables of the enabled rules (the watermark tables of the inputs read)."""
    handlers = {topic: handler for topic, handler in HANDLERS.items() if FEEDS[topic] & enabled}
    tables = [t for t in TABLES if t.source in handlers and RULE_OF_TABLE.get(t.name) in (None, *enabled)]
    return handlers, tables

__all__ = ["HANDLERS", "build", "choose_rules", "run_worker", "running", "worker_topic_specs"]

log = logging.getLogger(__name__)


def worker_topic_specs() -> list[TopicSpec]:
    """The worker's own topics: re-keyed topics and one compacted changelog per table.

    A changelog has as many partitions as its table's source topic, partition for partition.
    """
    handlers, tables = running()
    partitions = {name: PARTITIONS for name in (HOTSPOT_OBSERVATIONS, ASSOCIATION_LINKS) if name in handlers}
    specs: list[TopicSpec] = [(name, n, {}) for name, n in partitions.items()]
    for table in tables:
        n = partitions.get(table.source) or _catalogued_partitions(table.source)
        config = {"cleanup.policy": "compact", "max.message.bytes": str(CHANGELOG_MAX_BYTES)}
        specs.append((f"{APP_ID}-{table.name}-changelog", n, config))
    return specs


def _catalogued_partitions(name: str) -> int:
    from hubstream import topics

    return next(t.partitions for t in topics.ALL if t.name == name)


def build(
    *, max_batch: int = 5000, commit_every_s: float = COMMIT_EVERY_S, assignor: str = DEFAULT_ASSIGNOR,
    session_timeout_s: float = 45.0,
) -> Engine:
    handlers, tables = running()
    consumer_config = {"fetch.min.bytes": 1, "session.timeout.ms": int(session_timeout_s * 1000)}
    return Engine(
        APP_ID, handlers, tables,
        consumer_config=librdkafka_config(settings, "worker", **consumer_config),
        producer_config=librdkafka_config(settings, "worker"),
        max_batch=max_batch,
        commit_every_s=commit_every_s,
        assignor=assignor,
        tick=send_marks,
        tick_every_s=EVERY_S,
        before_batch=report_waiting,
        on_poison=poisoned,
        on_revoke=forget_revoked,
    )


def choose_rules(names: list[str]) -> None:
    """Run only ``names``; refused (ValueError) in the full worker's group."""
    select_rules(names)
    if enabled != set(RULES) and not os.environ.get("HUBSTREAM_WORKER_ID"):
        # Its group would take events from the full worker's, which would never see them.
        raise ValueError(
            f"a worker running only {', '.join(sorted(enabled))} needs a group of its own: "
            "set HUBSTREAM_WORKER_ID, starting hubstream-worker (the prefix its ACLs grant), "
            "e.g. hubstream-worker-replay-2026-11"
        )


# The worker holds millions of long-lived state objects (tuples and frozen dataclasses, which
# form no cycles), and with the interpreter's default thresholds the cyclic collector walks all
# of them again and again: 4.0 to 4.5 s of a 200,000-event replay's 29 to 34 s of handler CPU
# (13 full passes, the longest 0.4 to 0.5 s). Young collections every 50,000 net allocations
# and full ones every 10 million (as often as the interpreter's heuristic then allows) still
# collect cycles, from exceptions say, and cost 1.1 s, the longest pass 0.28 s.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(
    *, max_batch: int = 5000, commit_every_s: float = COMMIT_EVERY_S, assignor: str = DEFAULT_ASSIGNOR,
    session_timeout_s: float = 45.0,
) -> int:
    """Run until stopped: 0 when stopped by a signal, 1 after a failure (the open transaction
    aborted, nothing of it kept), for the supervisor to restart the worker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_gc()
    log.info("rules: %s", ", ".join(r for r in RULES if r in enabled))
    prepare()
    # Made before the group starts, so that a first assignment finds every changelog; refused
    # (ReplicationError) when the cluster or a topic it uses has fewer replicas than configured.
    ensure_topics(settings, worker_topic_specs(), principal="worker", check_catalogue=True)
    engine = build(
        max_batch=max_batch, commit_every_s=commit_every_s, assignor=assignor,
        session_timeout_s=session_timeout_s,
    )
    try:
        engine.run()
    except Exception:
        log.exception("worker %s failed; its open transaction was aborted. Exiting with status 1 "
                      "for the supervisor to restart it", APP_ID)
        return 1
    return 0
