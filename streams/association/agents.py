"""Associations: the same adult, vehicle, phone or handle with several children, per entity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from hubstream import topics as catalogue
from hubstream.metrics import EVENTS_OUT
from hubstream.protect import pseudonym
from streams import rules, translate
from streams.app import app, association_topic, dead_letter, rule_config, send_alerts, source_of, state_table
from streams.rules import association
from streams.watermarks import MergedWatermark

states = state_table("association", "association_state")
# Fed by every partition of both intelligence topics.
merged = MergedWatermark(
    sum(t.partitions for t in (catalogue.POLICE_INTELLIGENCE, catalogue.PARTNER_INTELLIGENCE))
)


async def forward_to_associations(
    report: rules.IntelligenceReport, source: str, watermark: datetime, published_s: float
) -> None:
    if not report.children:
        return
    keys = association.keys_for(report)
    if keys:
        data = translate.event_to_bytes(report, source, watermark)
        for key in keys:
            # Keyed by a keyed hash of the entity: no VRM, phone or person key on the broker.
            await association_topic.send(key=pseudonym(key).encode(), value=data, timestamp=published_s)
        EVENTS_OUT.labels(topic=association_topic.get_topic_name()).inc(len(keys))


def _entity_for(report: rules.IntelligenceReport, table_key: str) -> str:
    """The entity (``kind:key``) of the report whose keyed hash the message was keyed by."""
    for ref in association.keys_for(report):
        if pseudonym(ref) == table_key:
            return ref
    raise rules.MisroutedEventError(f"report {report.event_id!r} names no entity with key {table_key}")


@app.agent(association_topic)
async def associations(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        try:
            report, source, source_mark = translate.event_from_bytes(event.value)
            table_key = event.key.decode()
            if not isinstance(report, rules.IntelligenceReport):  # only reports are forwarded here
                raise rules.MisroutedEventError(
                    f"{type(report).__name__} {report.event_id!r} on entity key {table_key}"
                )
            entity = _entity_for(report, table_key)
            settings = rule_config.association.for_area(report.area)
            state = states.get(table_key) or association.initial(entity)
            state, alerts = association.apply(state, report, settings)
            watermark = merged.observe(source_of(event), source, source_mark)
            if watermark is not None:
                state, _ = association.advance(state, watermark, settings)
            states[table_key] = state
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        await send_alerts(alerts, event)
