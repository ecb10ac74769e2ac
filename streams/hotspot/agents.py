"""Hotspots: located observations re-keyed by coarse H3 cell, scored over a sliding window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from hubstream import topics as catalogue
from hubstream.metrics import EVENTS_OUT
from streams import rules, translate
from streams.app import app, dead_letter, hotspot_topic, rule_config, send_alerts, source_of, state_table
from streams.rules import hotspot
from streams.watermarks import MergedWatermark

states = state_table("hotspot", "hotspot_state")
# Fed by every partition of the missing-episode and both intelligence topics.
merged = MergedWatermark(
    sum(
        t.partitions
        for t in (catalogue.MISSING_EPISODES, catalogue.POLICE_INTELLIGENCE, catalogue.PARTNER_INTELLIGENCE)
    )
)


async def forward_to_hotspots(
    event: rules.RuleEvent, source: str, watermark: datetime, published_s: float
) -> None:
    area = getattr(event, "area", None)
    if area is None:
        return
    keys = hotspot.keys_for_event(event, rule_config.hotspot.for_area(area))
    if keys:
        data = translate.event_to_bytes(event, source, watermark)
        for key in keys:
            await hotspot_topic.send(key=key.encode(), value=data, timestamp=published_s)
        EVENTS_OUT.labels(topic=hotspot_topic.get_topic_name()).inc(len(keys))


@app.agent(hotspot_topic)
async def hotspots(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        try:
            rule_event, source, source_mark = translate.event_from_bytes(event.value)
            cell = event.key.decode()
            if isinstance(rule_event, rules.ReturnInterview):  # has no place, so is never forwarded here
                raise rules.MisroutedEventError(
                    f"return interview {rule_event.event_id!r} on hotspot cell {cell}"
                )
            settings = rule_config.hotspot.for_area(rule_event.area)
            state = states.get(cell) or hotspot.initial(cell)
            state, alerts = hotspot.apply(state, rule_event, settings)
            watermark = merged.observe(source_of(event), source, source_mark)
            if watermark is not None:
                state, _ = hotspot.advance(state, watermark, settings)
            states[cell] = state
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        await send_alerts(alerts, event)
