"""Associations: the same adult, vehicle, phone or handle with several children, per entity."""

from __future__ import annotations

from datetime import datetime

from hubstream.protect import pseudonym
from streams import rules, translate
from streams.app import (
    ASSOCIATION_LINKS,
    dead_letter,
    enabled,
    forgets_revoked,
    rule_config,
    send_alerts,
    state_table,
)
from streams.engine import Batch, Record
from streams.marks import ASSOCIATION_SOURCES, take_mark
from streams.rules import association
from streams.watermarks import MergedWatermark

states = state_table("association", ASSOCIATION_LINKS, association.AssociationState, "association")
# Fed by every partition of both intelligence topics.
merged = MergedWatermark(ASSOCIATION_SOURCES)


@forgets_revoked
def _forget_merged(gone: list[tuple[str, int]]) -> None:
    for topic, partition in gone:
        merged.forget(f"{topic}:{partition}")


def forward_to_associations(
    report: rules.IntelligenceReport, source: Record, watermark: datetime, batch: Batch
) -> None:
    if not report.children or "association" not in enabled:
        return
    keys = association.keys_for(report)
    if keys:
        data = translate.event_to_bytes(report, source.source, watermark)
        for key in keys:
            # Keyed by a keyed hash of the entity: no VRM, phone or person key on the broker.
            batch.send(ASSOCIATION_LINKS, pseudonym(key).encode(), data, source.timestamp_ms)


def _entity_for(report: rules.IntelligenceReport, table_key: str) -> str:
    """The entity (``kind:key``) of the report whose keyed hash the message was keyed by."""
    for ref in association.keys_for(report):
        if pseudonym(ref) == table_key:
            return ref
    raise rules.MisroutedEventError(f"report {report.event_id!r} names no entity with key {table_key}")


def associations(record: Record, batch: Batch) -> None:
    if take_mark(record, batch, merged):
        return
    try:
        report, source, source_mark = translate.event_from_bytes(record.value)
        table_key = (record.key or b"").decode()
        if not isinstance(report, rules.IntelligenceReport):  # only reports are forwarded here
            raise rules.MisroutedEventError(
                f"{type(report).__name__} {report.event_id!r} on entity key {table_key}"
            )
        entity = _entity_for(report, table_key)
        settings = rule_config.association.for_area(report.area)
        state = states.get(record.partition, table_key) or association.initial(entity)
        state, alerts = association.apply(state, report, settings)
        watermark = merged.observe(record.source, source, source_mark)
        if watermark is not None:
            state, _ = association.advance(state, watermark, settings)
        states.set(record.partition, table_key, state)
    except rules.RuleInputError as exc:
        dead_letter(record, batch, str(exc), None, "process")
        return
    send_alerts(alerts, batch, record)
