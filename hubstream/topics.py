"""The topic catalogue: every topic hubstream uses, declared once.

`hubstream topics create` makes them from this list; the README table is written from it.
Retention is kept long (or forever) on the event topics because replaying history when a
rule changes is a core use; CSE records are retained, not deleted. Replication is not declared
here but per deployment (HUBSTREAM_REPLICATION_FACTOR, HUBSTREAM_MIN_INSYNC_REPLICAS in
hubstream/settings.py): hubstream.kafka.ensure_topics creates every topic, catalogued or the
worker's own, with them, after checking the cluster can hold them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FOREVER = -1
DAY_MS = 24 * 60 * 60 * 1000
# The largest record batch a topic takes: the broker's `message.max.bytes` default (1 MiB and
# 12 bytes), which a topic inherits as its `max.message.bytes`; no topic here sets its own.
MESSAGE_MAX_BYTES = 1_048_588
# The largest key and value one message may carry: the limit less a record batch's header
# (61 bytes) and the record's own framing (12 bytes for a message near the limit, measured
# against the broker), with room to spare.
MAX_KEY_AND_VALUE_BYTES = MESSAGE_MAX_BYTES - 512


@dataclass(frozen=True)
class Topic:
    base_name: str
    schema: str
    key: str
    writers: str
    readers: str
    partitions: int = 6
    retention_ms: int = FOREVER
    cleanup_policy: str = "delete"

    @property
    def name(self) -> str:
        """The topic's name, after HUBSTREAM_TOPIC_PREFIX (empty by default; tests use it to isolate runs)."""
        return os.environ.get("HUBSTREAM_TOPIC_PREFIX", "") + self.base_name

    @property
    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


POLICE_INTELLIGENCE = Topic(
    "hubstream.intelligence.police",
    "IntelligenceReport",
    "pseudonymous key of the first child named, else the event id",
    "police systems",
    "stream worker",
)
PARTNER_INTELLIGENCE = Topic(
    "hubstream.intelligence.partner",
    "IntelligenceReport",
    "pseudonymous key of the first child named, else the event id",
    "partner agencies",
    "stream worker",
)
MISSING_EPISODES = Topic(
    "hubstream.missing-episodes",
    "MissingEpisodeEvent",
    "pseudonymous child key (keeps one child's episodes in order)",
    "police missing-person systems, social care",
    "stream worker",
)
HUB_DECISIONS = Topic(
    "hubstream.hub-decisions",
    "HubDecision",
    "pseudonymous child key",
    "the hub (`hubstream cases`)",
    "hub consumer, health flag raiser",
)
ALERTS = Topic(
    "hubstream.alerts",
    "Alert",
    "alert subject (child key, coarse cell or entity key)",
    "stream worker",
    "hub consumer",
)
POLICE_ALERTS = Topic(
    "hubstream.alerts.police",
    "Alert",
    "alert subject",
    "stream worker",
    "police systems",
)
HEALTH_FLAGS = Topic(
    "hubstream.health-flags",
    "HealthCseFlag",
    "flag id (pseudonymous child key and SNOMED code)",
    "health flag raiser",
    "health consumer, NHS systems",
    cleanup_policy="compact",
)
DEAD_LETTERS = Topic(
    "hubstream.dead-letters",
    "DeadLetter",
    "original message key",
    "every producer, worker and consumer",
    "operators",
    partitions=1,
)

ALL: tuple[Topic, ...] = (
    POLICE_INTELLIGENCE,
    PARTNER_INTELLIGENCE,
    MISSING_EPISODES,
    HUB_DECISIONS,
    ALERTS,
    POLICE_ALERTS,
    HEALTH_FLAGS,
    DEAD_LETTERS,
)
