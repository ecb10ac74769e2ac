"""Hotspots: located observations re-keyed by coarse H3 cell, scored over a sliding window."""

from __future__ import annotations

from datetime import datetime

from streams import rules, translate
from streams.app import (
    HOTSPOT_OBSERVATIONS,
    dead_letter,
    enabled,
    forgets_revoked,
    rule_config,
    send_alerts,
    state_table,
)
from streams.engine import Batch, Parts, Record
from streams.marks import HOTSPOT_SOURCES, take_mark
from streams.rules import hotspot
from streams.watermarks import MergedWatermark

states = state_table(
    "hotspot",
    HOTSPOT_OBSERVATIONS,
    hotspot.HotspotState,
    "hotspot",
    Parts(hotspot.parts, hotspot.from_parts),  # a busy cell changes a day at a time
)
# Fed by every partition of the missing-episode and both intelligence topics.
merged = MergedWatermark(HOTSPOT_SOURCES)


@forgets_revoked
def _forget_merged(gone: list[tuple[str, int]]) -> None:
    for topic, partition in gone:
        merged.forget(f"{topic}:{partition}")


def forward_to_hotspots(event: rules.RuleEvent, source: Record, watermark: datetime, batch: Batch) -> None:
    area = getattr(event, "area", None)
    if area is None or "hotspot" not in enabled:
        return
    observations = hotspot.observations_of(event)
    keys = hotspot.keys_for_observations(observations, rule_config.hotspot.for_area(area))
    if keys:
        data = translate.observations_to_bytes(observations, source.source, watermark)
        for key in keys:
            batch.send(HOTSPOT_OBSERVATIONS, key.encode(), data, source.timestamp_ms)


def hotspots(record: Record, batch: Batch) -> None:
    if take_mark(record, batch, merged):
        return
    try:
        observations, source, source_mark = translate.observations_from_bytes(record.value)
        cell = (record.key or b"").decode()
        settings = rule_config.hotspot.for_area(observations[0].area)
        state = states.get(record.partition, cell) or hotspot.initial(cell)
        state, alerts = hotspot.add(state, observations, settings)
        watermark = merged.observe(record.source, source, source_mark)
        if watermark is not None:
            state, _ = hotspot.advance(state, watermark, settings)
        states.set(record.partition, cell, state)
    except rules.RuleInputError as exc:
        dead_letter(record, batch, str(exc), None, "process")
        return
    send_alerts(alerts, batch, record)
