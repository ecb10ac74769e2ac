"""The stream worker: the faust app with every feature's agents, explicitly listed.

Run with ``hubstream worker`` (or ``faust -A streams.worker worker``).
"""

from __future__ import annotations

import sys

from hubstream.kafka import TopicSpec, ensure_topics
from streams.app import PARTITIONS, app, association_topic, hotspot_topic, prepare, settings
from streams.association import agents as association_agents
from streams.health_flags import agents as health_flag_agents
from streams.hotspot import agents as hotspot_agents
from streams.intelligence import agents as intelligence_agents
from streams.missing import agents as missing_agents

FEATURES = (missing_agents, intelligence_agents, hotspot_agents, association_agents, health_flag_agents)

__all__ = ["FEATURES", "app", "run_worker"]


def worker_topic_specs() -> list[TopicSpec]:
    """The worker's own topics: re-keyed topics and one compacted changelog per table."""
    rekeyed = (hotspot_topic, association_topic)
    specs: list[TopicSpec] = [(t.get_topic_name(), PARTITIONS, {}) for t in rekeyed]
    specs += [
        (table.changelog_topic.get_topic_name(), PARTITIONS, {"cleanup.policy": "compact"})
        for table in app.tables.values()
    ]
    return specs


def run_worker(argv: list[str]) -> None:
    prepare()
    # Made before faust starts, so that its first metadata already lists them: a changelog
    # created during start-up can be missing from that metadata and crash the agent.
    ensure_topics(settings, worker_topic_specs(), principal="worker")
    sys.argv = ["hubstream-worker", "worker", "--loglevel", "info", *argv]
    app.main()
