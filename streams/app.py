"""What every feature's handlers share: settings, tables, decoding, dead letters and alerts.

Handlers live one folder per feature (``streams/<feature>/handlers.py``) and are listed in
``streams.worker``. They are thin: decode, translate, call the pure rule, store, send. Each
table value is a rule state object; its changelog message is the state's JSON form.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any

import msgspec

import schemas
from hubstream import topics as catalogue
from hubstream.deadletter import dead_letter_key, encode_dead_letter
from hubstream.metrics import ALERTS_RAISED, DEAD_LETTERS, EVENT_TO_ALERT_SECONDS, POISONED
from hubstream.protect import pseudonym
from hubstream.serde import serde_for
from hubstream.settings import load
from schemas.domain import CHECKS, check_not_future
from streams import rules, translate
from streams.config import load_rule_config
from streams.engine import Batch, Parts, Record, Table
from streams.rules import _json

log = logging.getLogger(__name__)

settings = load()
rule_config = load_rule_config()
serde = serde_for(settings)
PARTITIONS = 6  # of the worker's own re-keyed topics and changelogs
APP_ID = (
    os.environ.get("HUBSTREAM_WORKER_ID") or os.environ.get("HUBSTREAM_TOPIC_PREFIX", "") + "hubstream-worker"
)

MISSING = catalogue.MISSING_EPISODES.name
INTELLIGENCE = (catalogue.POLICE_INTELLIGENCE.name, catalogue.PARTNER_INTELLIGENCE.name)
DECISIONS = catalogue.HUB_DECISIONS.name
# Outputs, named once: a topic's name reads the environment, and an alert goes to two of them.
ALERTS = catalogue.ALERTS.name
POLICE_ALERTS = catalogue.POLICE_ALERTS.name
HEALTH_FLAGS = catalogue.HEALTH_FLAGS.name
DEAD_LETTER_TOPIC = catalogue.DEAD_LETTERS.name
# Re-keyed internal topics: hotspot state is per coarse cell, association state per entity.
HOTSPOT_OBSERVATIONS = f"{APP_ID}-hotspot-observations"
ASSOCIATION_LINKS = f"{APP_ID}-association-links"

# The rules a worker can run. A worker runs them all unless told to run a few (``hubstream
# worker --rules``): a replay after one rule changed need not redo the others.
RULES = ("repeat_missing", "return_interview", "hotspot", "association", "health_flags")
enabled: set[str] = set(RULES)


def select_rules(names: list[str]) -> None:
    unknown = sorted(set(names) - set(RULES))
    if unknown or not names:
        raise ValueError(f"rules must be some of {', '.join(RULES)}, got {', '.join(names) or 'none'}")
    enabled.clear()
    enabled.update(names)


TABLES: list[Table] = []
RULE_OF_TABLE: dict[str, str] = {}  # rule state tables; the watermark tables serve every rule


def state_table(name: str, source: str, state_class: Any, rule: str, parts: Parts | None = None) -> Table:
    """A table of ``rule``'s states: ``state_class`` objects, their JSON form in the changelog
    (or their parts' JSON, with ``parts``)."""
    return _table(Table(name, source, _json.dumps, partial(_json.loads, state_class), parts), rule)


def json_table(name: str, source: str, rule: str) -> Table:
    """A table of plain JSON values that ``rule`` keeps."""
    return _table(Table(name, source, msgspec.json.encode, msgspec.json.decode), rule)


def _table(table: Table, rule: str) -> Table:
    TABLES.append(table)
    RULE_OF_TABLE[table.name] = rule
    return table


# Event time per source partition: the watermark that drives time-based rules and pruning.
# Per partition (not per worker) so that one worker or several give the same alerts.
watermarks = {
    topic.name: Table(
        f"watermarks-{topic.base_name}",
        topic.name,
        lambda mark: mark.isoformat().encode(),
        lambda data: datetime.fromisoformat(data.decode()),
    )
    for topic in (catalogue.MISSING_EPISODES, catalogue.POLICE_INTELLIGENCE, catalogue.PARTNER_INTELLIGENCE)
}
TABLES.extend(watermarks.values())
# A watermark's changelog is written when it has moved this far: a worker restarted from the
# changelog starts at most this far behind, which only delays pruning and overdue checks until
# the next events of the partition move it on again.
PERSIST_EVERY = timedelta(hours=1)
_persisted: dict[str, datetime] = {}


def observe(record: Record, occurred_at: datetime) -> datetime:
    """Advance the record's partition watermark to ``occurred_at`` if later; return it."""
    table = watermarks[record.topic]
    marks = table.partitions[record.partition]
    key = record.source
    current: datetime | None = marks.get(key)
    if current is not None and occurred_at <= current:
        return current
    last = _persisted.get(key) or current
    if last is None or occurred_at - last >= PERSIST_EVERY:
        table.set(record.partition, key, occurred_at)
        _persisted[key] = occurred_at
    else:
        table.hold(record.partition, key, occurred_at)  # written with the next hourly step
    return occurred_at


# What handlers keep per partition outside their tables (watermark caches, queues, marks sent):
# each function is told the (topic, partition) pairs taken away, and forgets them.
Forget = Callable[[list[tuple[str, int]]], None]
_forgetters: list[Forget] = []


def forgets_revoked(forget: Forget) -> Forget:
    """Register ``forget`` to be told of partitions taken away from this worker."""
    _forgetters.append(forget)
    return forget


def forget_revoked(gone: list[tuple[str, int]]) -> None:
    for forget in _forgetters:
        forget(gone)


@forgets_revoked
def _forget_persisted(gone: list[tuple[str, int]]) -> None:
    for topic, partition in gone:
        _persisted.pop(f"{topic}:{partition}", None)


def decode(record: Record, batch: Batch, expected: str) -> dict[str, Any] | None:
    """The validated record of a message, or None after dead-lettering it with the reason."""
    try:
        name, value = serde.decode(record.value)
        if name != expected:
            raise schemas.SchemaViolation("", name, f"topic {record.topic} carries {expected} only")
        # Decoding against our schema has already checked the structure (types, enums, required
        # fields, defaults, UTC timestamps): what is left are the domain rules, as the sinks do.
        CHECKS[name](value)
        if record.timestamp_ms >= 0:
            check_not_future(value, datetime.fromtimestamp(record.timestamp_ms / 1000, UTC))
    except (schemas.DecodeError, schemas.SchemaViolation) as exc:
        field = exc.field if isinstance(exc, schemas.SchemaViolation) else None
        dead_letter(record, batch, str(exc), field, "decode")
        return None
    batch.consumed(record.topic, expected)
    return value


def dead_letter(record: Record, batch: Batch, reason: str, field: str | None, stage: str) -> None:
    data = encode_dead_letter(
        serde,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        reason=reason,
        field=field,
        stage=stage,
    )
    batch.send(DEAD_LETTER_TOPIC, dead_letter_key(record.key), data)
    DEAD_LETTERS.labels(topic=record.topic, stage=stage).inc()
    log.warning(
        "dead letter %s[%s]@%s (%s): %s", record.topic, record.partition, record.offset, stage, reason
    )


def poisoned(record: Record, batch: Batch, exc: Exception) -> None:
    """A record whose handling raised: to the dead letters with the exception (the engine has
    left the rules' state as it was before the record)."""
    dead_letter(record, batch, f"handling failed: {type(exc).__name__}: {exc}", None, "process")


@cache
def _alert_metrics(rule: str, area: str) -> tuple[Any, Any]:
    # .labels() takes a lock and builds a key on every call; a few rules and areas, so keep them.
    return ALERTS_RAISED.labels(rule=rule, area=area), EVENT_TO_ALERT_SECONDS.labels(rule=rule)


def send_alerts(alerts: list[rules.Alert], batch: Batch, trigger: Record) -> None:
    """Each alert to the hub's alert topic and the police alert topic, keyed by a pseudonym."""
    if not alerts:
        return
    now = datetime.now(UTC)
    waited = max(0.0, now.timestamp() - trigger.timestamp_ms / 1000)
    for alert in alerts:
        data = serde.encode(ALERTS, "Alert", translate.alert_record(alert, now))
        key = pseudonym(alert.subject).encode()  # the subject is in the value, for the hub
        batch.send(ALERTS, key, data)
        batch.send(POLICE_ALERTS, key, data)
        raised, waiting = _alert_metrics(alert.rule, alert.area)
        raised.inc()
        waiting.observe(waited)
        log.debug("alert %s %s evidence=%d", alert.rule, alert.alert_id, len(alert.evidence))


def prepare() -> None:
    """Register every schema before handlers start, so that no handler waits on the registry."""
    for topic, schema in (
        (ALERTS, "Alert"),
        (POLICE_ALERTS, "Alert"),
        (HEALTH_FLAGS, "HealthCseFlag"),
        (DEAD_LETTER_TOPIC, "DeadLetter"),
        (MISSING, "MissingEpisodeEvent"),
        *((topic, "IntelligenceReport") for topic in INTELLIGENCE),
        (DECISIONS, "HubDecision"),
    ):
        serde.schema_id(topic, schema)
    for name in (MISSING, *INTELLIGENCE, DECISIONS, HOTSPOT_OBSERVATIONS, ASSOCIATION_LINKS):
        for stage in ("decode", "process"):
            DEAD_LETTERS.labels(topic=name, stage=stage)  # at 0 from the start, so a first one shows
        POISONED.labels(topic=name)
