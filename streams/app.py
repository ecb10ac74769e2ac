"""The faust application: topics, tables and the shared output paths of every agent.

Agents live one folder per feature (``streams/<feature>/agents.py``) and are listed in
``streams.worker``. They are thin: decode, translate, call the pure rule, store, send.
State is kept in changelog-backed tables (memory store by default, RocksDB for production via
HUBSTREAM_WORKER_STORE=rocksdb://). Each table value is a rule state object, serialised with a
codec that stores its JSON form, so the store keeps the object and only the changelog sees JSON.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.serializers import codecs
from faust.types import EventT, TableT

import schemas
from hubstream import topics as catalogue
from hubstream.deadletter import encode_dead_letter
from hubstream.kafka import faust_broker
from hubstream.metrics import ALERTS_RAISED, DEAD_LETTERS, EVENT_TO_ALERT_SECONDS, EVENTS_IN, EVENTS_OUT
from hubstream.protect import pseudonym
from hubstream.serde import serde_for
from hubstream.settings import load
from streams import rules, translate
from streams.config import load_rule_config
from streams.rules import association, health_flag, hotspot, repeat_missing, return_interview

log = logging.getLogger(__name__)

settings = load()
rule_config = load_rule_config()
serde = serde_for(settings)
PARTITIONS = 6


class StateCodec(codecs.Codec):
    """Rule state <-> its JSON form; one codec per state class."""

    def __init__(self, state_class: Any = None, **kwargs: Any) -> None:
        super().__init__(state_class=state_class, **kwargs)
        self.state_class = state_class

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj.to_json(), separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return self.state_class.from_json(json.loads(s))


for _name, _cls in (
    ("repeat_missing_state", repeat_missing.RepeatMissingState),
    ("return_interview_state", return_interview.ReturnInterviewState),
    ("hotspot_state", hotspot.HotspotState),
    ("association_state", association.AssociationState),
    ("health_flag_state", health_flag.FlagState),
):
    codecs.register(_name, StateCodec(_cls))

APP_ID = (
    os.environ.get("HUBSTREAM_WORKER_ID") or os.environ.get("HUBSTREAM_TOPIC_PREFIX", "") + "hubstream-worker"
)

# faust makes only the last level of its data directory.
(settings.home / "worker").mkdir(parents=True, exist_ok=True)

app = faust.App(
    APP_ID,
    **faust_broker(settings, "worker"),
    store=os.environ.get("HUBSTREAM_WORKER_STORE", "memory://"),
    datadir=str(settings.home / "worker" / APP_ID),
    autodiscover=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    web_enabled=True,
    web_port=int(os.environ.get("HUBSTREAM_WORKER_WEB_PORT", "16066")),
    web_host="127.0.0.1",
    broker_commit_every=5000,
    broker_commit_interval=1.0,
    stream_buffer_maxsize=16384,
    producer_linger_ms=5,
    producer_max_batch_size=256 * 1024,
    producer_acks=-1,
)


def _raw_topic(name: str, *, internal: bool = False) -> faust.TopicT:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        internal=internal, partitions=PARTITIONS if internal else None,
    )


missing_topic = _raw_topic(catalogue.MISSING_EPISODES.name)
intelligence_topic = app.topic(
    catalogue.POLICE_INTELLIGENCE.name, catalogue.PARTNER_INTELLIGENCE.name,
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)
decisions_topic = _raw_topic(catalogue.HUB_DECISIONS.name)
alerts_topic = _raw_topic(catalogue.ALERTS.name)
police_alerts_topic = _raw_topic(catalogue.POLICE_ALERTS.name)
health_flags_topic = _raw_topic(catalogue.HEALTH_FLAGS.name)
dead_letters_topic = _raw_topic(catalogue.DEAD_LETTERS.name)
# Re-keyed internal topics: hotspot state is per coarse cell, association state per entity.
hotspot_topic = _raw_topic(f"{app.conf.id}-hotspot-observations", internal=True)
association_topic = _raw_topic(f"{app.conf.id}-association-links", internal=True)


def state_table(name: str, codec: str = "json") -> TableT[str, Any]:
    # app.Table is declared to return the abstract TableT; the serializer attributes set below
    # belong to the concrete faust.Table it builds.
    table = cast("faust.Table[str, Any]", app.Table(name, default=None, partitions=PARTITIONS, key_type=str))
    # faust picks serializers from model types only; a plain class needs them set here, before
    # the changelog topic is first made.
    table.key_serializer = "raw"
    table.value_serializer = codec
    # Recovery reads the changelog through the topic's own serializers: they must match.
    table.changelog_topic = table.changelog_topic.derive_topic(key_serializer="raw", value_serializer=codec)
    return table


# Event time per source partition: the watermark that drives time-based rules and pruning.
# Per partition (not per worker) so that one worker or several give the same alerts.
watermarks = state_table("watermarks")


_marks: dict[str, datetime] = {}
# The table (and its changelog) is written when the watermark has moved this far: writing it on
# every event cost a changelog message per event in a replay. A worker restarted from the table
# starts at most this far behind, which only delays pruning and overdue checks until the next
# events of the partition move it on again.
PERSIST_EVERY = timedelta(hours=1)


def observe(event: EventT[Any], occurred_at: datetime) -> datetime:
    """Advance the current partition's watermark to ``occurred_at`` if later; return it."""
    key = f"{event.message.topic}:{event.message.partition}"
    current = _marks.get(key)
    if current is None:
        stored = watermarks.get(key)
        current = datetime.fromisoformat(stored) if stored else None
    if current is not None and occurred_at <= current:
        _marks[key] = current
        return current
    persisted = watermarks.get(key)
    if persisted is None or occurred_at - datetime.fromisoformat(persisted) >= PERSIST_EVERY:
        watermarks[key] = occurred_at.isoformat()
    _marks[key] = occurred_at
    return occurred_at


def source_of(event: EventT[Any]) -> str:
    return f"{event.message.topic}:{event.message.partition}"


def decode(event: EventT[Any], expected: str) -> dict[str, Any] | None:
    """The validated record of a message, or None after dead-lettering it with the reason."""
    message = event.message
    try:
        name, record = serde.decode(event.value)
        if name != expected:
            raise schemas.SchemaViolation("", name, f"topic {message.topic} carries {expected} only")
        record = schemas.validate(name, record)
    except (schemas.DecodeError, schemas.SchemaViolation) as exc:
        field = exc.field if isinstance(exc, schemas.SchemaViolation) else None
        dead_letter(event, str(exc), field, "decode")
        return None
    EVENTS_IN.labels(topic=message.topic, schema=expected).inc()
    return record


def dead_letter(event: EventT[Any], reason: str, field: str | None, stage: str) -> None:
    message = event.message
    data = encode_dead_letter(
        serde, topic=message.topic, partition=message.partition, offset=message.offset,
        key=event.key, value=event.value, reason=reason, field=field, stage=stage,
    )
    dead_letters_topic.send_soon(key=event.key, value=data)
    EVENTS_OUT.labels(topic=catalogue.DEAD_LETTERS.name).inc()
    DEAD_LETTERS.labels(topic=message.topic, stage=stage).inc()
    log.warning(
        "dead letter %s[%s]@%s (%s): %s", message.topic, message.partition, message.offset, stage, reason
    )


async def send_alerts(alerts: list[rules.Alert], trigger: EventT[Any] | None = None) -> None:
    if not alerts:
        return
    now = datetime.now(UTC)
    published_ms = trigger.message.timestamp * 1000 if trigger is not None else None
    for alert in alerts:
        data = serde.encode(catalogue.ALERTS.name, "Alert", translate.alert_record(alert, now))
        key = pseudonym(alert.subject).encode()  # the subject is in the value, for the hub
        await alerts_topic.send(key=key, value=data)
        await police_alerts_topic.send(key=key, value=data)
        ALERTS_RAISED.labels(rule=alert.rule, area=alert.area).inc()
        EVENTS_OUT.labels(topic=catalogue.ALERTS.name).inc()
        EVENTS_OUT.labels(topic=catalogue.POLICE_ALERTS.name).inc()
        if published_ms is not None:
            EVENT_TO_ALERT_SECONDS.labels(rule=alert.rule).observe(
                max(0.0, now.timestamp() - published_ms / 1000)
            )
        log.info(
            "alert %s %s subject=%s evidence=%d",
            alert.rule,
            alert.alert_id,
            alert.subject,
            len(alert.evidence),
        )


def prepare() -> None:
    """Register output schemas before agents start, so no agent blocks on the registry."""
    for topic, schema in (
        (catalogue.ALERTS.name, "Alert"),
        (catalogue.POLICE_ALERTS.name, "Alert"),
        (catalogue.HEALTH_FLAGS.name, "HealthCseFlag"),
        (catalogue.DEAD_LETTERS.name, "DeadLetter"),
    ):
        serde.schema_id(topic, schema)
    for source in (missing_topic, intelligence_topic, decisions_topic, hotspot_topic, association_topic):
        for name in source.topics:
            for stage in ("decode", "process"):
                DEAD_LETTERS.labels(topic=name, stage=stage)  # at 0 from the start, so a first one shows
    for topic, schema in (
        (catalogue.MISSING_EPISODES.name, "MissingEpisodeEvent"),
        (catalogue.POLICE_INTELLIGENCE.name, "IntelligenceReport"),
        (catalogue.PARTNER_INTELLIGENCE.name, "IntelligenceReport"),
        (catalogue.HUB_DECISIONS.name, "HubDecision"),
    ):
        serde.schema_id(topic, schema)
